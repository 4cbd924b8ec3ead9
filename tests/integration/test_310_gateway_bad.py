# SPDX-License-Identifier: Apache-2.0
"""test_310_gateway_bad.py - CONTRACT sections 3.2 and 8: invalid gateway headers make no
inferred span; the request is still served and traced (server span, parent 0), and the response
is what the same httpd without the module would send (status, body, headers but Date/Server).
Oversized and non-UTF-8 values are capped and cleaned (the capture agent decodes with
raw=False, so a non-UTF-8 string in the payload is a recorded failure)."""

import pytest

import uuid

from helpers import (SERVER_SPAN, by_name, dump, gateway_headers, now_ms, one_chunk,
                     one_chunk_where, unique_ua)
from httpd import if_module

HOUR_MS = 3600 * 1000
IGNORED_HEADERS = {"date", "server", "keep-alive", "connection"}
MTIME = 1_700_000_000


def config_for(agent, backend):
    def config(h):
        return f"ProxyPass /api/ {backend.url}/\n" + if_module(f"""
    DDAgentURL {agent.url}
    DDFlushInterval 100
    DDInferredProxy On""")
    return config


@pytest.fixture(scope="module")
def servers(httpd_factory, agent, backend):
    files = {"index.html": "<html><body>dd_proxy test</body></html>\n"}
    with_mod = httpd_factory("gw-bad", config=config_for(agent, backend))
    without = httpd_factory("gw-bad-nomod", config=config_for(agent, backend), module=False)
    for h in (with_mod, without):
        for rel, text in files.items():
            h.write_file(rel, text, mtime=MTIME)  # same ETag / Last-Modified on both
    return with_mod, without


def comparable(r):
    def norm(k, v):
        # httpd builds Allow from a hash whose order differs per process
        return ",".join(sorted(x.strip() for x in v.split(","))) if k == "allow" else v
    headers = sorted((k.lower(), norm(k.lower(), v)) for k, v in r.headers.items()
                     if k.lower() not in IGNORED_HEADERS)
    return r.status_code, r.content, headers


def without(key):
    def f(h):
        del h[key]
    return f


def setv(key, value):
    def f(h):
        h[key] = value() if callable(value) else value
    return f


P, T = "x-dd-proxy", "x-dd-proxy-request-time-ms"
BAD = [
    ("proxy-missing", without(P)),
    ("proxy-empty", setv(P, "")),
    ("proxy-unknown", setv(P, "dummy-proxy")),
    ("proxy-quoted-unknown", setv(P, "'dummy-proxy'")),
    ("proxy-quoted-empty", setv(P, "''")),
    ("proxy-unbalanced-quote", setv(P, "'aws-apigateway")),
    ("proxy-two-quote-pairs", setv(P, "''aws-apigateway''")),
    ("proxy-with-suffix", setv(P, "aws-apigateway-v3")),
    ("time-missing", without(T)),
    ("time-empty", setv(T, "")),
    ("time-quoted-empty", setv(T, "''")),
    ("time-abc", setv(T, "abc")),
    ("time-quoted-abc", setv(T, "'abc'")),
    ("time-float-exp", setv(T, "1.5e12")),
    ("time-fraction", setv(T, lambda: f"{now_ms()}.5")),
    ("time-trailing-garbage", setv(T, lambda: f"{now_ms()}abc")),
    ("time-hex", setv(T, lambda: hex(now_ms()))),
    ("time-negative", setv(T, lambda: f"-{now_ms()}")),
    ("time-zero", setv(T, "0")),
    ("time-overflow", setv(T, "99999999999999999999999")),
    ("time-2h-old", setv(T, lambda: str(now_ms() - 2 * HOUR_MS))),
    ("time-10min-ahead", setv(T, lambda: str(now_ms() + 10 * 60 * 1000))),
]


def gw():
    return gateway_headers("aws-apigateway", method="GET", path="/api/bad",
                           domain="bad.example", stage="prod", region="us-east-1", api_id="x1")


def exchange(servers, agent, path, headers, method="GET"):
    """Same request to both; returns (chunk of the traced one, response with module)."""
    with_mod, no_mod = servers
    ua = unique_ua("bad")
    hdrs = dict(headers, **{"User-Agent": ua})
    r1 = with_mod.request(method, path, headers=hdrs)
    r0 = no_mod.request(method, path, headers=hdrs)
    assert comparable(r1) == comparable(r0), "the module changed the response"
    return one_chunk(agent, ua, settle=0.25), r1


@pytest.mark.parametrize("name,mutate", BAD, ids=[b[0] for b in BAD])
def test_bad_headers_no_inferred_span(servers, agent, name, mutate):
    headers = gw()
    mutate(headers)
    chunk, r = exchange(servers, agent, "/api/bad", headers)
    assert r.status_code == 200 and r.text == "backend ok\n"
    assert [s["name"] for s in chunk] == [SERVER_SPAN], f"{name}: {dump(chunk)}"
    s = chunk[0]
    assert s["parent_id"] == 0, dump(s)
    assert "_dd.inferred_span" not in s["metrics"]
    assert s["meta"]["http.status_code"] == "200"
    assert "http.route" not in s["meta"], dump(s)  # the gateway's data is not used at all


SOME_BAD = [b for b in BAD if b[0] in ("proxy-unknown", "time-abc", "time-2h-old", "proxy-empty")]


@pytest.mark.parametrize("name,mutate", SOME_BAD, ids=[b[0] for b in SOME_BAD])
def test_bad_headers_static_and_error_responses_unchanged(servers, agent, name, mutate):
    headers = gw()
    mutate(headers)
    for path, status in (("/index.html", 200), ("/nothing.html", 404), ("/api/status/502", 502)):
        chunk, r = exchange(servers, agent, path, headers)
        assert r.status_code == status
        assert [s["name"] for s in chunk] == [SERVER_SPAN], dump(chunk)


def test_valid_gateway_does_not_change_response(servers, agent):
    """The control case: valid headers make the inferred span, the response stays the same."""
    for path, status in (("/api/ok", 200), ("/index.html", 200), ("/api/status/500", 500)):
        chunk, r = exchange(servers, agent, path, gw())
        assert r.status_code == status
        assert sorted(s["name"] for s in chunk) == ["aws.apigateway", SERVER_SPAN], dump(chunk)


def test_head_and_options_unchanged(servers, agent):
    for method in ("HEAD", "OPTIONS"):
        headers = gw()
        headers[T] = "abc"
        exchange(servers, agent, "/index.html", headers, method=method)


# --- caps and UTF-8 (CONTRACT 8) ----------------------------------------------------------

def by_service(agent, service):
    return one_chunk_where(agent, lambda s: s.get("service") == service, f"service={service}",
                           settle=0.1)


def test_long_values_are_capped(servers, agent):
    with_mod, _ = servers
    domain = f"{uuid.uuid4().hex}.example"
    long_path = "/api/" + "p" * 6000
    gw = gateway_headers("aws-apigateway", method="GET", path=long_path, domain=domain,
                         resource_path=long_path, stage="s" * 5000, region="r" * 3000,
                         api_id="i" * 3000, account_id="a" * 3000)
    r = with_mod.get("/api/long", headers=dict(gw, **{"User-Agent": "u" * 3000}))
    assert r.status_code == 200
    chunk = by_service(agent, domain)
    inf, srv = by_name(chunk, "aws.apigateway"), by_name(chunk, SERVER_SPAN)
    for key in ("stage", "region", "apiid", "account_id", "http.useragent"):
        v = inf["meta"].get(key, "")
        assert 0 < len(v.encode()) <= 1024, f"{key}: {len(v.encode())} bytes"
    assert 0 < len(srv["meta"]["http.useragent"].encode()) <= 1024
    assert inf["meta"]["stage"].startswith("s" * 512)
    for key in ("http.url", "http.route"):
        v = inf["meta"][key]
        assert 0 < len(v.encode()) <= 4096, f"{key}: {len(v.encode())} bytes"
    assert len(inf["resource"].encode()) <= 4096
    assert inf["resource"].startswith("GET /api/ppp")
    assert inf["meta"]["http.url"].startswith(f"https://{domain}/api/ppp")
    assert len(srv["meta"]["http.route"].encode()) <= 4096


def test_long_request_path_capped_in_server_span(servers, agent):
    with_mod, _ = servers
    ua = unique_ua("longpath")
    path = "/api/" + "q" * 6000
    r = with_mod.get(path, headers={"User-Agent": ua})
    assert r.status_code == 200
    srv = one_chunk(agent, ua, settle=0.1)[0]
    assert len(srv["resource"].encode()) <= 4096 and srv["resource"].startswith("GET /api/qqq")
    assert len(srv["meta"]["http.url"].encode()) <= 4096


def test_non_utf8_values_are_cleaned(servers, agent):
    with_mod, _ = servers
    domain = f"{uuid.uuid4().hex}.example"
    gw = gateway_headers("aws-apigateway", method="GET", path="/api/utf", domain=domain)
    gw = {k: v.encode() for k, v in gw.items()}
    gw["x-dd-proxy-stage"] = b"caf\xe9-\xff\xfe-\xc3"  # latin-1 and broken sequences
    gw["x-dd-proxy-region"] = "\u00fcber-1".encode()  # valid UTF-8 stays as is
    gw["User-Agent"] = b"agent-\xff\xfe"
    r = with_mod.get("/api/utf", headers=gw)
    assert r.status_code == 200
    chunk = by_service(agent, domain)  # decoding it at all means the strings were UTF-8
    inf = by_name(chunk, "aws.apigateway")
    assert inf["meta"]["stage"].startswith("caf"), dump(inf)
    assert inf["meta"]["region"] == "\u00fcber-1", dump(inf)
    assert by_name(chunk, SERVER_SPAN)["meta"]["http.useragent"].startswith("agent-")
