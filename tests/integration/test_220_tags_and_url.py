# SPDX-License-Identifier: Apache-2.0
"""test_220_tags_and_url.py - configured tags and http.url (issue 16 item 6, issue 18 items 4
and 5).

- DDEnv / DD_ENV win over a DDTag (or DD_TAGS) env, and the env the spans show is the env of
  the agent's rate the trace was sampled with; with no DDEnv, the tag is the env for both;
- 3,000 DDTags (with duplicates, and a <Location> overriding some) are all on both spans, each
  key once, the later / deeper one winning, DDTag over DD_TAGS, the module's own tags over both
  (that their cost is linear is test_trace.c's test_many_tags_linear: a timing here would be
  too close to call on a loaded machine);
- an IPv6 Host keeps its brackets in http.url (so does a gateway domain that is an IPv6
  address)."""

import socket

import pytest

from conftest import running_agent
from helpers import (NOT_MPM, by_name, collect, dump, gateway_headers,
                     one_chunk, server_span, unique_ua)
from httpd import vhost

pytestmark = NOT_MPM  # runs on the event and sanitized passes: it does not depend on the MPM

TAGS = 3000
TAGGED, NOENV = 1, 2


@pytest.fixture(scope="module")
def own_agent():
    with running_agent(rate_by_service={"service:tagsvc,env:from-ddenv": 0.3,
                                        "service:tagsvc,env:from-tag": 0.7}) as a:
        yield a


@pytest.fixture(scope="module")
def h(httpd_factory, own_agent):
    tags = "\n".join(f"DDTag t{i} v{i}" for i in range(TAGS))
    config = lambda h: f"""
DDAgentURL {own_agent.url}
DDFlushInterval 100
DDService tagsvc
DDInferredProxy On
{tags}
DDTag t0 last
DDTag http.url spoofed
DDTag from.env.var overridden
<Location /deep>
    DDTag t1 deep
</Location>
""" + vhost(h.ports[TAGGED], "    DDEnv from-ddenv\n    DDTag env from-tag\n"
            "    DDTag version tag-version\n    DDVersion 9.9") \
        + vhost(h.ports[NOENV], "    DDTag env from-tag")
    h = httpd_factory("tags-url", config=config, ports=3,
                      env={"DD_TAGS": "from.env.var:env-value,only.env:yes"},
                      files={"deep/index.html": "deep\n"})
    yield h
    httpd_factory.finish(h)


def sync_rates(h, agent, port):
    """Each child has its own rates: these go through the connection the test then uses."""
    for _ in range(2):  # an answer read before the next send: the child now has the rates
        ua = unique_ua("sync")
        assert h.get("/index.html", port=port, headers={"User-Agent": ua}).status_code == 200
        collect(agent, [ua], settle=0)


def meta_of(h, agent, path, port=None, headers=None):
    ua = unique_ua("tags")
    r = h.get(path, port=port, headers=dict(headers or {}, **{"User-Agent": ua}))
    assert r.status_code == 200, r.text
    return one_chunk(agent, ua, settle=0.1)


def test_ddenv_beats_ddtag_env_and_is_the_sampling_env(h, own_agent):
    sync_rates(h, own_agent, h.ports[TAGGED])
    chunk = meta_of(h, own_agent, "/index.html", port=h.ports[TAGGED],
                    headers=gateway_headers(domain="tagsvc"))
    for s in chunk:
        assert s["meta"]["env"] == "from-ddenv", dump(s)
        assert s["meta"]["version"] == "9.9", dump(s)
    root = by_name(chunk, "aws.apigateway")
    assert root["metrics"]["_dd.agent_psr"] == 0.3, dump(root)


def test_ddtag_env_is_the_env_without_ddenv(h, own_agent):
    sync_rates(h, own_agent, h.ports[NOENV])
    s = server_span(meta_of(h, own_agent, "/index.html", port=h.ports[NOENV]))
    assert s["meta"]["env"] == "from-tag", dump(s)  # no DDEnv, DD_ENV or DD_TAGS env:
    assert s["metrics"]["_dd.agent_psr"] == 0.7, dump(s)


def test_three_thousand_tags_once_each(h, own_agent):
    chunk = meta_of(h, own_agent, "/deep/index.html", headers=gateway_headers(domain="d.example"))
    assert len(chunk) == 2, dump(chunk)
    for s in chunk:
        m = s["meta"]
        missing = [i for i in range(2, TAGS) if m.get(f"t{i}") != f"v{i}"]
        assert not missing, f"{len(missing)} tags missing or wrong, e.g. t{missing[0]}"
        assert m["t0"] == "last" and m["t1"] == "deep", {k: m[k] for k in ("t0", "t1")}
        assert m["from.env.var"] == "overridden" and m["only.env"] == "yes"
        assert "env" not in m  # no DDEnv, DD_ENV, DD_TAGS env: or DDTag env here
        assert m["http.url"] != "spoofed"
    assert server_span(chunk)["meta"]["http.url"].endswith("/deep/index.html")
    # msgpack maps cannot say a key twice, but a payload with duplicates decodes to the last:
    # count what the encoder wrote instead
    assert len(chunk[1]["meta"]) < TAGS + 40


def raw_get(h, host, port=None):
    ua = unique_ua("ipv6")
    with socket.create_connection(("127.0.0.1", port or h.port), timeout=10) as s:
        s.sendall(f"GET /index.html?x=1 HTTP/1.1\r\nHost: {host}\r\nUser-Agent: {ua}\r\n"
                  "Connection: close\r\n\r\n".encode())
        data = b""
        while True:
            part = s.recv(65536)
            if not part:
                break
            data += part
    assert data.startswith(b"HTTP/1.1 200"), data[:200]
    return ua


@pytest.mark.parametrize("host,url", [
    ("[::1]:8080", "http://[::1]:8080/index.html"),
    ("[2001:db8::7]", "http://[2001:db8::7]"),
    ("example.com:8080", "http://example.com:8080/index.html"),
])
def test_ipv6_host_keeps_its_brackets(h, own_agent, host, url):
    ua = raw_get(h, host)
    s = server_span(one_chunk(own_agent, ua, settle=0))
    assert s["meta"]["http.url"].startswith(url), dump(s)


@pytest.mark.parametrize("domain,url", [
    ("2001:db8::1", "https://[2001:db8::1]/p"),
    ("[2001:db8::1]:8443", "https://[2001:db8::1]:8443/p"),
    ("api.example.com", "https://api.example.com/p"),
])
def test_ipv6_gateway_domain(h, own_agent, domain, url):
    chunk = meta_of(h, own_agent, "/index.html", headers=gateway_headers(domain=domain, path="/p"))
    inf = by_name(chunk, "aws.apigateway")
    assert inf["meta"]["http.url"] == url, dump(inf)
