# SPDX-License-Identifier: Apache-2.0
"""test_200_server_span.py - CONTRACT section 3.1: the span every traced request makes."""

import re
import socket
import time

import pytest

from helpers import SERVER_SPAN, dump, one_chunk, unique_ua
from httpd import vhost


@pytest.fixture(scope="module")
def h(httpd_factory, agent, backend):
    def config(h):
        return f"""
DDAgentURL {agent.url}
DDFlushInterval 100
ProxyPass /api/ {backend.url}/
ErrorDocument 404 /errors/404.html
<Location /untraced>
    DDTrace Off
</Location>
<Location /untraced/on>
    DDTrace On
</Location>
<Location /tagged>
    DDTag area tagged
</Location>
""" + vhost(h.ports[1], """
    DDService my-svc
    DDEnv test-env
    DDVersion 1.2.3
    DDTag team core
    DDTag owner qa""")
    return httpd_factory("server-span", config=config, ports=2,
                         files={"errors/404.html": "not here\n",
                                "untraced/index.html": "untraced\n",
                                "untraced/on/index.html": "traced again\n",
                                "tagged/index.html": "tagged\n"})


def request_chunk(h, agent, path, port=None, method="GET", headers=None, expect_status=200,
                  **kw):
    ua = unique_ua()
    hdrs = {"User-Agent": ua}
    hdrs.update(headers or {})
    t0 = time.time_ns()
    r = h.request(method, path, port=port, headers=hdrs, **kw)
    t1 = time.time_ns()
    assert r.status_code == expect_status, r.text
    return one_chunk(agent, ua), ua, t0, t1


def test_static_request(h, agent):
    chunk, ua, t0, t1 = request_chunk(h, agent, "/index.html?q=1&secret=2")
    assert len(chunk) == 1, dump(chunk)
    s = chunk[0]
    assert s["name"] == SERVER_SPAN
    assert s["type"] == "web"
    assert s["service"] == "httpd"
    assert s["resource"] == "GET /index.html"
    assert s["parent_id"] == 0
    assert s["error"] == 0
    m = s["meta"]
    expected = {
        "component": "httpd",
        "span.kind": "server",
        "http.method": "GET",
        "http.url": f"http://127.0.0.1:{h.port}/index.html",
        "http.status_code": "200",
        "http.useragent": ua,
        "http.client_ip": "127.0.0.1",
    }
    assert {k: m.get(k) for k in expected} == expected, dump(s)
    for absent in ("env", "version", "http.route", "team", "error.message"):
        assert absent not in m, dump(s)
    # times: start = r->request_time, end in log_transaction (a little after the response)
    assert t0 - 1_000_000_000 <= s["start"] <= t1, (t0, s["start"], t1)
    assert 0 <= s["duration"] <= t1 - t0 + 2_000_000_000, dump(s)


def test_chunk_root_carries_tid_and_priority(h, agent):
    chunk, _, t0, t1 = request_chunk(h, agent, "/index.html")
    root = chunk[0]
    tid = root["meta"].get("_dd.p.tid")
    assert tid is not None and re.fullmatch(r"[0-9a-f]{16}", tid), dump(root)
    # high half of a 128-bit id = Unix seconds << 32
    assert tid[8:] == "00000000", tid
    assert t0 // 10**9 - 5 <= int(tid[:8], 16) <= t1 // 10**9 + 5, tid
    assert "_sampling_priority_v1" in root["metrics"], dump(root)


def test_vhost_service_env_version_tags(h, agent):
    chunk, _, _, _ = request_chunk(h, agent, "/index.html", port=h.ports[1])
    s = chunk[0]
    assert s["service"] == "my-svc", dump(s)
    m = s["meta"]
    assert (m.get("env"), m.get("version"), m.get("team"), m.get("owner")) == \
        ("test-env", "1.2.3", "core", "qa"), dump(s)
    assert m["http.url"] == f"http://127.0.0.1:{h.ports[1]}/index.html"


def test_not_found(h, agent):
    chunk, _, _, _ = request_chunk(h, agent, "/missing-page.html", expect_status=404)
    assert len(chunk) == 1, dump(chunk)  # the ErrorDocument redirect makes no extra span
    s = chunk[0]
    assert s["meta"]["http.status_code"] == "404", dump(s)
    assert s["error"] == 0
    assert "error.message" not in s["meta"]
    assert s["resource"] == "GET /missing-page.html", dump(s)


def test_directory_index_subrequests_make_one_span(h, agent):
    chunk, _, _, _ = request_chunk(h, agent, "/")
    assert [s["name"] for s in chunk] == [SERVER_SPAN], dump(chunk)
    assert chunk[0]["meta"]["http.status_code"] == "200"


def test_proxied_server_error(h, agent, backend):
    chunk, ua, _, _ = request_chunk(h, agent, "/api/status/503", expect_status=503)
    assert backend.by_header("User-Agent", ua).path == "/status/503"
    assert len(chunk) == 1, dump(chunk)
    s = chunk[0]
    assert s["error"] == 1, dump(s)
    assert s["meta"]["http.status_code"] == "503"
    assert s["meta"].get("error.message"), dump(s)
    assert s["meta"].get("error.type"), dump(s)
    assert s["resource"] == "GET /api/status/503"


def test_proxied_post(h, agent, backend):
    chunk, ua, _, _ = request_chunk(h, agent, "/api/things", method="POST", data=b"x=1")
    assert backend.by_header("User-Agent", ua).body == b"x=1"
    s = chunk[0]
    assert s["resource"] == "POST /api/things"
    assert s["meta"]["http.method"] == "POST"
    assert s["meta"]["http.url"] == f"http://127.0.0.1:{h.port}/api/things"


@pytest.mark.parametrize("host,url", [("example.test", "http://example.test/index.html"),
                                      ("example.test:8080", "http://example.test:8080/index.html")])
def test_host_header_makes_url(h, agent, host, url):
    chunk, _, _, _ = request_chunk(h, agent, "/index.html", headers={"Host": host})
    assert chunk[0]["meta"]["http.url"] == url, dump(chunk)


def test_each_request_its_own_trace(h, agent):
    ids = set()
    for _ in range(3):
        chunk, _, _, _ = request_chunk(h, agent, "/index.html")
        ids.add((chunk[0]["trace_id"], chunk[0]["span_id"]))
    assert len({t for t, _ in ids}) == 3 and len({s for _, s in ids}) == 3, ids


def test_trace_off_in_location_and_on_again_deeper(h, agent):
    ua_off, ua_on = unique_ua("off"), unique_ua("on")
    assert h.get("/untraced/index.html", headers={"User-Agent": ua_off}).text == "untraced\n"
    assert h.get("/untraced/on/index.html", headers={"User-Agent": ua_on}).status_code == 200
    one_chunk(agent, ua_on)  # the traced one arrived (flushes run in order) ...
    time.sleep(0.5)  # ... and a little more time for the one that must not come
    assert agent.chunks_with_meta("http.useragent", ua_off) == []


def test_ddtag_in_location(h, agent):
    chunk, _, _, _ = request_chunk(h, agent, "/tagged/index.html")
    assert chunk[0]["meta"].get("area") == "tagged", dump(chunk)
    chunk, _, _, _ = request_chunk(h, agent, "/index.html")
    assert "area" not in chunk[0]["meta"], dump(chunk)


def raw_request(h, text):
    with socket.create_connection(("127.0.0.1", h.port), timeout=5) as s:
        s.sendall(text.encode())
        data = b""
        while True:
            part = s.recv(65536)
            if not part:
                return data.decode("latin-1")
            data += part


def test_internal_dummy_connection_not_traced(h, agent):
    """httpd's own "OPTIONS * HTTP/1.0" (User-Agent "... (internal dummy connection)"), which
    wakes a listener when a child stops or at a restart, is not traced; a client's OPTIONS *
    is, as any request."""
    ua_dummy = unique_ua("dummy") + " (internal dummy connection)"
    ua_client = unique_ua("client")
    for ua in (ua_dummy, ua_client):
        resp = raw_request(h, f"OPTIONS * HTTP/1.0\r\nUser-Agent: {ua}\r\n\r\n")
        assert resp.startswith("HTTP/1.1 200"), resp[:300]
    chunk = one_chunk(agent, ua_client)
    assert chunk[0]["meta"]["http.method"] == "OPTIONS", dump(chunk)
    time.sleep(0.5)  # flushes run in order: the one that must not come had its chance
    assert agent.chunks_with_meta("http.useragent", ua_dummy) == []


# --- environment fallbacks (CONTRACT 2: directive, then environment, then default) ---------

@pytest.fixture(scope="module")
def h_env(httpd_factory, agent):
    def config(h):
        return f"""
DDAgentURL {agent.url}
DDFlushInterval 100
""" + vhost(h.ports[1], """
    DDService dir-svc
    DDEnv dir-env
    DDVersion dir-ver""")
    return httpd_factory("server-span-env", config=config, ports=2,
                         env={"DD_SERVICE": "env-svc", "DD_ENV": "env-env",
                              "DD_VERSION": "env-ver", "DD_TAGS": "team:env-team,tier:web"})


def test_environment_fallback(h_env, agent):
    chunk, _, _, _ = request_chunk(h_env, agent, "/index.html")
    s = chunk[0]
    assert s["service"] == "env-svc", dump(s)
    m = s["meta"]
    assert (m.get("env"), m.get("version"), m.get("team"), m.get("tier")) == \
        ("env-env", "env-ver", "env-team", "web"), dump(s)


def test_directive_beats_environment(h_env, agent):
    chunk, _, _, _ = request_chunk(h_env, agent, "/index.html", port=h_env.ports[1])
    s = chunk[0]
    assert (s["service"], s["meta"].get("env"), s["meta"].get("version")) == \
        ("dir-svc", "dir-env", "dir-ver"), dump(s)
