# SPDX-License-Identifier: Apache-2.0
"""test_210_client_ip.py - http.client_ip and network.client.ip (README "Client IP").

- Default (DDTraceClientIP unset, DD_TRACE_CLIENT_IP_ENABLED unset): http.client_ip is httpd's
  own idea of the client (r->useragent_ip), which mod_remoteip rewrites when the operator set
  it up; so the module's hook must run after mod_remoteip's (issue 16 item 3).
- DDTraceClientIP On: the tracers' resolution over their header list (first public address,
  else the first private one, else the TCP peer), network.client.ip = the TCP peer; mod_remoteip,
  where it rewrote the address, wins.
- DDTraceClientIP Off: neither tag.
"""

import pytest

from helpers import NOT_MPM, dump, one_chunk, server_span, unique_ua
from httpd import MODULES_DIR, vhost

pytestmark = NOT_MPM  # runs on the event and sanitized passes: it does not depend on the MPM

PUBLIC = "43.43.43.43"
PUBLIC6 = "2001:4860:4860::8888"


def get_span(h, agent, port=None, headers=None):
    ua = unique_ua("ip")
    hdrs = {"User-Agent": ua}
    hdrs.update(headers or {})
    r = h.get("/index.html", port=port, headers=hdrs)
    assert r.status_code == 200, r.text
    return server_span(one_chunk(agent, ua))


@pytest.fixture(scope="module")
def h_remoteip(httpd_factory, agent):
    # mod_remoteip is loaded after mod_dd_proxy on purpose: both post_read_request hooks are
    # APR_HOOK_FIRST, so without an explicit order ours would run first and see the proxy.
    def config(h):
        return f"""
LoadModule remoteip_module {MODULES_DIR}/mod_remoteip.so
DDAgentURL {agent.url}
DDFlushInterval 100
RemoteIPHeader X-Forwarded-For
RemoteIPInternalProxy 127.0.0.1
""" + vhost(h.ports[1], "    DDTraceClientIP On")
    return httpd_factory("client-ip-remoteip", config=config, ports=2)


def test_remoteip_sets_http_client_ip(h_remoteip, agent):
    """Issue 16 item 3: with mod_remoteip trusting 127.0.0.1, http.client_ip is the address
    mod_remoteip found in X-Forwarded-For, not the proxy's."""
    s = get_span(h_remoteip, agent, headers={"X-Forwarded-For": "198.18.0.9, 10.1.2.3"})
    m = s["meta"]
    # mod_remoteip walks right to left: 10.1.2.3 is not a trusted proxy, so it is the client
    assert m.get("http.client_ip") == "10.1.2.3", dump(s)
    assert "network.client.ip" not in m, dump(s)


def test_remoteip_wins_over_header_resolution(h_remoteip, agent):
    """With DDTraceClientIP On, an address mod_remoteip established is kept (the operator told
    httpd which proxies to trust); network.client.ip is still the TCP peer."""
    s = get_span(h_remoteip, agent, port=h_remoteip.ports[1],
                 headers={"X-Forwarded-For": f"{PUBLIC}, 10.1.2.3"})
    m = s["meta"]
    assert m.get("http.client_ip") == "10.1.2.3", dump(s)
    assert m.get("network.client.ip") == "127.0.0.1", dump(s)


def test_remoteip_without_header_keeps_peer(h_remoteip, agent):
    s = get_span(h_remoteip, agent)
    assert s["meta"].get("http.client_ip") == "127.0.0.1", dump(s)


@pytest.fixture(scope="module")
def h_ip(httpd_factory, agent):
    def config(h):
        return f"""
DDAgentURL {agent.url}
DDFlushInterval 100
""" + vhost(h.ports[1], "    DDTraceClientIP On") + vhost(h.ports[2], "    DDTraceClientIP Off") \
            + vhost(h.ports[3], "    DDTraceClientIP On\n    DDTraceClientIPHeader X-My-IP")
    return httpd_factory("client-ip", config=config, ports=4)


def test_default_is_httpds_client_address(h_ip, agent):
    m = get_span(h_ip, agent, headers={"X-Forwarded-For": PUBLIC})["meta"]
    assert m.get("http.client_ip") == "127.0.0.1", m
    assert "network.client.ip" not in m, m


@pytest.mark.parametrize("headers,want", [
    ({"X-Forwarded-For": PUBLIC}, PUBLIC),
    ({"x-real-ip": PUBLIC}, PUBLIC),
    ({"true-client-ip": PUBLIC}, PUBLIC),
    ({"x-client-ip": PUBLIC}, PUBLIC),
    ({"forwarded-for": PUBLIC}, PUBLIC),
    ({"x-cluster-client-ip": f"10.42.42.42, {PUBLIC}, fe80::1"}, PUBLIC),
    ({"fastly-client-ip": PUBLIC}, PUBLIC),
    ({"cf-connecting-ip": PUBLIC}, PUBLIC),
    ({"cf-connecting-ipv6": PUBLIC6}, PUBLIC6),
    ({"Forwarded": f'for=10.0.0.1;proto=https, for="[{PUBLIC6}]:4711"'}, PUBLIC6),
    # API Gateway / ALB: the client first, then the gateway's own hops (private)
    ({"X-Forwarded-For": f"{PUBLIC}:5555, 10.0.1.17"}, PUBLIC),
    # private addresses only: the first one beats the (private) TCP peer
    ({"X-Forwarded-For": "10.9.9.9, 10.8.8.8"}, "10.9.9.9"),
    # a private one in an earlier header loses to a public one in a later header
    ({"X-Forwarded-For": "192.168.1.1", "x-real-ip": PUBLIC}, PUBLIC),
    ({"X-Forwarded-For": "garbage, unknown"}, "127.0.0.1"),
    ({}, "127.0.0.1"),
], ids=lambda v: str(v)[:40])
def test_on_resolves_like_the_tracers(h_ip, agent, headers, want):
    m = get_span(h_ip, agent, port=h_ip.ports[1], headers=headers)["meta"]
    assert m.get("http.client_ip") == want, m
    assert m.get("network.client.ip") == "127.0.0.1", m


def test_off_sends_no_address(h_ip, agent):
    m = get_span(h_ip, agent, port=h_ip.ports[2], headers={"X-Forwarded-For": PUBLIC})["meta"]
    assert "http.client_ip" not in m and "network.client.ip" not in m, m


def test_configured_header_only(h_ip, agent):
    m = get_span(h_ip, agent, port=h_ip.ports[3],
                 headers={"X-Forwarded-For": PUBLIC, "x-my-ip": "10.1.1.1, 8.8.4.4"})["meta"]
    assert m.get("http.client_ip") == "8.8.4.4", m
    m = get_span(h_ip, agent, port=h_ip.ports[3], headers={"X-Forwarded-For": PUBLIC})["meta"]
    assert m.get("http.client_ip") == "127.0.0.1", m  # header absent: the peer


def test_hostile_values_change_nothing_served(h_ip, agent):
    for v in ["x" * 6000, ",,,;;; \t\xe9", "[" * 100, "for=" * 500, "1.2.3.4" + ":" * 50]:
        m = get_span(h_ip, agent, port=h_ip.ports[1],
                     headers={"X-Forwarded-For": v, "Forwarded": v})["meta"]
        assert m.get("http.client_ip") == "127.0.0.1", (v[:20], m)


@pytest.fixture(scope="module")
def h_ip_env(httpd_factory, agent):
    def config(h):
        return f"DDAgentURL {agent.url}\nDDFlushInterval 100\n" + \
            vhost(h.ports[1], "    DDTraceClientIP Off")
    return httpd_factory("client-ip-env", config=config, ports=2,
                         env={"DD_TRACE_CLIENT_IP_ENABLED": "true",
                              "DD_TRACE_CLIENT_IP_HEADER": "x-my-ip"})


def test_environment_and_directive_beats_it(h_ip_env, agent):
    m = get_span(h_ip_env, agent, headers={"x-my-ip": PUBLIC, "x-real-ip": "8.8.8.8"})["meta"]
    assert (m.get("http.client_ip"), m.get("network.client.ip")) == (PUBLIC, "127.0.0.1"), m
    m = get_span(h_ip_env, agent, port=h_ip_env.ports[1], headers={"x-my-ip": PUBLIC})["meta"]
    assert "http.client_ip" not in m, m
