# SPDX-License-Identifier: Apache-2.0
"""test_230_early_errors.py - requests httpd rejects itself while reading them (issue 18 item 2).

A bad or missing Host, a malformed header line, an unknown Transfer-Encoding, a bad
Content-Length, an over-long request line (414) or a client too slow with its headers (408)
never reach post_read_request; httpd still answers and logs them, and log_transaction runs.
Each must make exactly one server span with httpd's status, counted once in requests_traced,
with the same ids in the access log; when an ErrorDocument serves the error through mod_proxy,
the backend gets this span as its parent, and there is still one span."""

import re
import socket
import time
import uuid

import pytest

from helpers import (SERVER_SPAN, counters, dump, one_chunk_where,
                     status_location)

ALLOW_LOG = [r"AH01095", r"AH00126", r"AH00569", r"AH00561", r"AH00567", r"AH02429", r"AH10242",
             r"AH02539", r"AH00566", r"AH00565", r"AH01382"]

ERRDOC = 1


@pytest.fixture(scope="module")
def h(httpd_factory, agent, backend):
    def config(h):
        return f"""
LoadModule reqtimeout_module /usr/lib/apache2/modules/mod_reqtimeout.so
RequestReadTimeout header=1 body=5
DDAgentURL {agent.url}
DDFlushInterval 100
LimitRequestLine 512
LimitRequestFieldSize 1024
{status_location()}
<VirtualHost 127.0.0.1:{h.ports[ERRDOC]}>
    ServerName 127.0.0.1
    ProxyPass /err/ {backend.url}/status/
    ErrorDocument 400 /err/400
</VirtualHost>
"""
    return httpd_factory("early-errors", config=config, ports=2)


def raw(h, text, port=None, wait=10):
    with socket.create_connection(("127.0.0.1", port or h.port), timeout=wait) as s:
        s.sendall(text.encode("latin-1"))
        data = b""
        try:
            while True:
                part = s.recv(65536)
                if not part:
                    break
                data += part
        except socket.timeout:
            pass
        return data.decode("latin-1")


def span_with_ua(agent, ua, timeout=5.0):
    chunk = one_chunk_where(agent, lambda s: ua in ((s.get("meta") or {}).get("http.useragent")
                                                    or ""), f"user agent {ua}", timeout)
    assert len(chunk) == 1 and chunk[0]["name"] == SERVER_SPAN, dump(chunk)
    return chunk[0]


CASES = [
    ("bad-host", "GET /x?q=1 HTTP/1.1\r\nHost: bad host!\r\nUser-Agent: {ua}\r\n\r\n",
     400, "GET", "/x"),
    ("no-host", "GET /nohost HTTP/1.1\r\nUser-Agent: {ua}\r\n\r\n", 400, "GET", "/nohost"),
    ("bad-header-line", "GET /hdr HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: {ua}\r\n"
     "no colon\r\n\r\n", 400, "GET", "/hdr"),
    ("bad-transfer-encoding", "POST /te HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: {ua}\r\n"
     "Transfer-Encoding: gzip\r\n\r\n", 400, "POST", "/te"),
    ("bad-content-length", "PUT /cl HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: {ua}\r\n"
     "Content-Length: 1x\r\n\r\n", 400, "PUT", "/cl"),
]


@pytest.mark.parametrize("name,text,status,method,path", CASES, ids=[c[0] for c in CASES])
def test_rejected_request_is_traced_once(h, agent, name, text, status, method, path):
    ua = f"ddtest-{name}-{uuid.uuid4().hex}"
    before = counters(h)["requests_traced"]
    resp = raw(h, text.format(ua=ua))
    assert resp.startswith(f"HTTP/1.1 {status}"), resp[:300]
    s = span_with_ua(agent, ua)
    assert s["meta"]["http.status_code"] == str(status), dump(s)
    assert s["meta"]["http.method"] == method, dump(s)
    assert s["resource"] == f"{method} {path}", dump(s)
    assert s["error"] == 0, dump(s)
    assert s["duration"] >= 0
    lines = h.access_log_line_for(ua)
    assert len(lines) == 1, lines
    assert lines[0].endswith(f" {s['span_id']}"), (lines, dump(s))
    assert counters(h)["requests_traced"] - before == 1


def test_uri_too_long(h, agent):
    """414: the request line is cut at LimitRequestLine; httpd knows neither method nor
    path for sure, only the status."""
    marker = uuid.uuid4().hex
    before = counters(h)["requests_traced"]
    resp = raw(h, f"GET /{marker}{'a' * 2000} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    assert resp.startswith("HTTP/1.1 414"), resp[:300]
    found = agent.wait_for(lambda a: [c for c in a.traces for s in c
                                      if s["meta"].get("http.status_code") == "414"], 5)
    assert found, f"no span for the 414; agent saw {agent.counts}"
    s = found[-1][0]
    assert s["name"] == SERVER_SPAN and len(s["resource"]) <= 4096, dump(s)
    time.sleep(0.3)
    assert counters(h)["requests_traced"] - before == 1


def test_header_timeout_408(h, agent):
    """mod_reqtimeout gives up on headers after 1 s: 408, traced with what was read (httpd
    drops the header lines of a timed-out request, so the access log's ids find the span)."""
    path = f"/slow-{uuid.uuid4().hex}"
    resp = raw(h, f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: x\r\n", wait=8)
    assert resp.startswith("HTTP/1.1 408"), resp[:300]
    lines = h.access_log_line_for(path)
    assert len(lines) == 1, lines
    span_id = int(lines[0].rsplit(" ", 1)[1])
    found = agent.wait_for(lambda a: [s for c in a.traces for s in c if s["span_id"] == span_id],
                           5)
    assert len(found) == 1, f"no single span {span_id}; agent saw {agent.counts}"
    s = found[0]
    assert s["meta"]["http.status_code"] == "408", dump(s)
    assert s["resource"] == f"GET {path}", dump(s)


def test_idle_connection_is_not_a_request(h, agent):
    """A connection that sends nothing is closed with a 408 log line but is no request: no
    span (the access log says "-" for it)."""
    before = counters(h)["requests_traced"]
    with socket.create_connection(("127.0.0.1", h.port), timeout=8) as s:
        try:
            s.recv(100)
        except socket.timeout:
            pass
    time.sleep(0.5)
    assert counters(h)["requests_traced"] == before


def test_error_document_through_proxy_makes_one_span_and_continues(h, agent, backend):
    ua = f"ddtest-errdoc-{uuid.uuid4().hex}"
    before = counters(h, port=h.ports[ERRDOC])["requests_traced"]
    resp = raw(h, f"GET /x HTTP/1.1\r\nHost: bad host!\r\nUser-Agent: {ua}\r\n\r\n",
               port=h.ports[ERRDOC])
    assert resp.startswith("HTTP/1.1 400") and "status 400" in resp, resp[:500]
    s = span_with_ua(agent, ua)
    assert s["meta"]["http.status_code"] == "400", dump(s)
    got = backend.by_header("User-Agent", ua)
    assert got is not None and got.path == "/status/400"
    assert got.header("x-datadog-parent-id") == str(s["span_id"]), got.header_items
    assert got.header("x-datadog-trace-id") == str(s["trace_id"]), got.header_items
    assert re.fullmatch(r"00-[0-9a-f]{32}-%016x-0[01]" % s["span_id"],
                        got.header("traceparent") or ""), got.header_items
    time.sleep(0.3)
    assert counters(h, port=h.ports[ERRDOC])["requests_traced"] - before == 1
