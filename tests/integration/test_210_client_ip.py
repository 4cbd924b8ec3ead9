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

from helpers import dump, one_chunk, server_span, unique_ua
from httpd import MODULES_DIR

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
"""
    return httpd_factory("client-ip-remoteip", config=config)


def test_remoteip_sets_http_client_ip(h_remoteip, agent):
    """Issue 16 item 3: with mod_remoteip trusting 127.0.0.1, http.client_ip is the address
    mod_remoteip found in X-Forwarded-For, not the proxy's."""
    s = get_span(h_remoteip, agent, headers={"X-Forwarded-For": "198.18.0.9, 10.1.2.3"})
    m = s["meta"]
    # mod_remoteip walks right to left: 10.1.2.3 is not a trusted proxy, so it is the client
    assert m.get("http.client_ip") == "10.1.2.3", dump(s)
    assert "network.client.ip" not in m, dump(s)


def test_remoteip_without_header_keeps_peer(h_remoteip, agent):
    s = get_span(h_remoteip, agent)
    assert s["meta"].get("http.client_ip") == "127.0.0.1", dump(s)
