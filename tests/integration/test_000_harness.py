# SPDX-License-Identifier: Apache-2.0
"""test_000_harness.py - the test tools test themselves: the capture agent applies the test
agent's checks (and finds what it should), the backend answers as documented, and the harness
starts and stops a plain apache2 (without mod_dd_proxy) cleanly. Needs no module."""

import http.client
import os
import socket
import time

import msgpack
import pytest
import requests

import httpd as httpd_mod
from backend import Backend
from capture_agent import CaptureAgent

GOOD_SPAN = {"trace_id": 1234, "span_id": 5678, "parent_id": 0, "name": "httpd.request",
             "service": "httpd", "resource": "GET /", "type": "web", "start": 1_700_000_000_000_000_000,
             "duration": 1000, "error": 0, "meta": {"component": "httpd"},
             "metrics": {"_sampling_priority_v1": 1, "x": 0.5}}
GOOD_HEADERS = {"Content-Type": "application/msgpack", "Datadog-Meta-Tracer-Version": "0.1",
                "Datadog-Meta-Lang": "c", "X-Datadog-Trace-Count": "1"}


def post(agent, body, headers, method="PUT", path="/v0.4/traces"):
    if agent.unix_path:
        conn = _UnixHTTPConnection(agent.unix_path)
    else:
        conn = http.client.HTTPConnection("127.0.0.1", agent.port, timeout=5)
    conn.request(method, path, body=body, headers=headers)
    resp = conn.getresponse()
    data = resp.read()
    conn.close()
    return resp.status, resp.getheader("Content-Type"), data


class _UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path):
        super().__init__("localhost", timeout=5)
        self._path = path

    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(self._path)


@pytest.fixture
def lone_agent():
    a = CaptureAgent(rate_by_service={"service:,env:": 0.5}).start()
    yield a
    a.stop()


class TestCaptureAgent:
    def test_good_payload_is_stored_and_answered(self, lone_agent):
        body = msgpack.packb([[GOOD_SPAN, dict(GOOD_SPAN, span_id=9, parent_id=5678)]])
        status, ctype, data = post(lone_agent, body, GOOD_HEADERS)
        assert status == 200 and ctype == "application/json"
        assert data == b'{"rate_by_service": {"service:,env:": 0.5}}'
        assert lone_agent.failures == []
        assert lone_agent.wait_for_traces(1, 1)[0][1]["span_id"] == 9
        assert lone_agent.counts == {"payloads": 1, "traces": 1, "spans": 2, "failures": 0}
        assert [s["span_id"] for s in lone_agent.find_spans("httpd.request", component="httpd")] \
            == [5678, 9]
        assert len(lone_agent.chunks_with_meta("component", "httpd")) == 1
        lone_agent.clear()
        assert lone_agent.counts["traces"] == 0

    def test_unsigned_64_bit_ids_accepted(self, lone_agent):
        span = dict(GOOD_SPAN, trace_id=2**64 - 1, span_id=2**63 + 1, parent_id=2**64 - 2)
        post(lone_agent, msgpack.packb([[span]]), GOOD_HEADERS, method="POST")
        assert lone_agent.failures == []
        assert lone_agent.traces[0][0]["trace_id"] == 2**64 - 1

    @pytest.mark.parametrize("headers,body,expect", [
        (dict(GOOD_HEADERS, **{"Content-Type": "application/msgpack; charset=x"}), None,
         "Content-Type"),
        ({k: v for k, v in GOOD_HEADERS.items() if k != "X-Datadog-Trace-Count"}, None,
         "X-Datadog-Trace-Count header missing"),
        (dict(GOOD_HEADERS, **{"X-Datadog-Trace-Count": "one"}), None, "not an integer"),
        (dict(GOOD_HEADERS, **{"X-Datadog-Trace-Count": "2"}), None, "!= 1 traces"),
        ({k: v for k, v in GOOD_HEADERS.items() if k != "Datadog-Meta-Tracer-Version"}, None,
         "Datadog-Meta-Tracer-Version"),
        (GOOD_HEADERS, b"\xc1\xc1", "not msgpack"),
        (GOOD_HEADERS, msgpack.packb({"a": 1}), "not a list of traces"),
        (GOOD_HEADERS, msgpack.packb([GOOD_SPAN]), "not a list of spans"),
        (GOOD_HEADERS, msgpack.packb([[dict(GOOD_SPAN, trace_id=0)]]), "trace_id=0"),
        (GOOD_HEADERS, msgpack.packb([[dict(GOOD_SPAN, span_id="12")]]), "span_id='12'"),
        (GOOD_HEADERS, msgpack.packb([[dict(GOOD_SPAN, span_id=-3)]]), "span_id=-3"),
        (GOOD_HEADERS, msgpack.packb([[dict(GOOD_SPAN, parent_id=None)]]), "parent_id=None"),
        (GOOD_HEADERS, msgpack.packb([[dict(GOOD_SPAN, name=b"x")]]), "name="),
        (GOOD_HEADERS, msgpack.packb([[dict(GOOD_SPAN, duration=-1)]]), "negative duration"),
        (GOOD_HEADERS, msgpack.packb([[dict(GOOD_SPAN, start=1.5)]]), "start=1.5"),
        (GOOD_HEADERS, msgpack.packb([[dict(GOOD_SPAN, error=True)]]), "error=True"),
        (GOOD_HEADERS, msgpack.packb([[dict(GOOD_SPAN, meta={"http.status_code": 200})]]),
         "is not str -> str"),
        (GOOD_HEADERS, msgpack.packb([[dict(GOOD_SPAN, metrics={"m": "1"})]]),
         "is not str -> int/float"),
        (GOOD_HEADERS, msgpack.packb([[{k: v for k, v in GOOD_SPAN.items() if k != "type"}]]),
         "lacks ['type']"),
        (GOOD_HEADERS, msgpack.packb([[GOOD_SPAN, dict(GOOD_SPAN, trace_id=7, span_id=8)]]),
         "mixes trace ids"),
        (GOOD_HEADERS, msgpack.packb([[GOOD_SPAN, GOOD_SPAN]]), "repeats a span id"),
        (dict(GOOD_HEADERS, **{"X-Datadog-Trace-Count": "1"}), msgpack.packb([[]]),
         "is empty"),
    ])
    def test_check_finds(self, lone_agent, headers, body, expect):
        body = msgpack.packb([[GOOD_SPAN]]) if body is None else body
        post(lone_agent, body, headers)
        assert any(expect in f for f in lone_agent.failures), lone_agent.failures

    def test_missing_content_length_is_a_failure(self, lone_agent):
        body = msgpack.packb([[GOOD_SPAN]])
        conn = http.client.HTTPConnection("127.0.0.1", lone_agent.port, timeout=5)
        conn.putrequest("PUT", "/v0.4/traces")
        for k, v in GOOD_HEADERS.items():
            conn.putheader(k, v)
        conn.putheader("Transfer-Encoding", "chunked")
        conn.endheaders()
        conn.send(b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body))
        assert conn.getresponse().status == 200
        conn.close()
        assert any("Content-Length header missing" in f for f in lone_agent.failures)
        assert lone_agent.traces == [[GOOD_SPAN]]  # chunked body still decoded

    def test_other_paths_are_recorded_not_traces(self, lone_agent):
        status, _, _ = post(lone_agent, b"{}", {"Content-Type": "application/json"},
                            path="/v0.5/traces")
        assert status == 404
        assert lone_agent.traces == [] and len(lone_agent.other_requests) == 1

    def test_unix_socket(self):
        d = httpd_mod.make_shared_dir("ddtest-agentsock-")
        a = CaptureAgent(unix_path=os.path.join(d, "agent.sock")).start()
        try:
            assert a.url == "unix://" + os.path.join(d, "agent.sock")
            assert os.stat(a.unix_path).st_mode & 0o777 == 0o777
            status, _, _ = post(a, msgpack.packb([[GOOD_SPAN]]), GOOD_HEADERS)
            assert status == 200 and a.failures == [] and len(a.traces) == 1
        finally:
            a.stop()
            os.rmdir(d)

    @pytest.mark.parametrize("code", [500, 413, 429])
    def test_mode_status(self, lone_agent, code):
        lone_agent.set_mode("status", status_code=code)
        status, _, _ = post(lone_agent, msgpack.packb([[GOOD_SPAN]]), GOOD_HEADERS)
        assert status == code and len(lone_agent.payloads) == 1

    def test_mode_stall(self, lone_agent):
        lone_agent.set_mode("stall", stall_seconds=0.5)
        t0 = time.monotonic()
        post(lone_agent, msgpack.packb([[GOOD_SPAN]]), GOOD_HEADERS)
        assert time.monotonic() - t0 >= 0.5

    def test_mode_garbage(self, lone_agent):
        lone_agent.mode = "garbage"
        status, ctype, data = post(lone_agent, msgpack.packb([[GOOD_SPAN]]), GOOD_HEADERS)
        assert status == 200 and ctype == "application/json"
        with pytest.raises(ValueError):
            __import__("json").loads(data)

    def test_mode_close(self, lone_agent):
        lone_agent.mode = "close"
        with pytest.raises((http.client.HTTPException, ConnectionError)):
            post(lone_agent, msgpack.packb([[GOOD_SPAN]]), GOOD_HEADERS)
        assert len(lone_agent.payloads) == 1

    def test_mode_refuse_and_back(self, lone_agent):
        lone_agent.mode = "refuse"
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", lone_agent.port), timeout=2)
        lone_agent.mode = "ok"
        status, _, _ = post(lone_agent, msgpack.packb([[GOOD_SPAN]]), GOOD_HEADERS)
        assert status == 200


class TestBackend:
    def test_answers_and_records(self):
        with Backend() as b:
            r = requests.get(b.url + "/x/y?q=1", headers={"X-Dd-Proxy": "aws", "User-Agent": "u1"})
            assert (r.status_code, r.text) == (200, "backend ok\n")
            r = requests.post(b.url + "/status/503", data=b"abc", headers={"User-Agent": "u2"})
            assert (r.status_code, r.text) == (503, "status 503\n")
            assert requests.get(b.url + "/status/204").status_code == 204
            req = b.by_header("User-Agent", "u1")
            assert req.method == "GET" and req.path == "/x/y?q=1"
            assert req.header("x-dd-proxy") == "aws"
            assert req.headers_starting("x-dd-") == {"x-dd-proxy": "aws"}
            assert b.by_header("User-Agent", "u2").body == b"abc"


class TestPlainHttpd:
    """apache2 without mod_dd_proxy, through the same harness the real tests use."""

    def test_start_serve_stop(self, backend):
        h = httpd_mod.Httpd("selftest", ports=2, module=False)
        try:
            h.write_config(f"ProxyPass /api/ {backend.url}/\n" + httpd_mod.vhost(
                h.ports[1], f"    ProxyPass /api/ {backend.url}/"))
            assert h.config_test() == (0, "Syntax OK\n")
            h.start()
            mark = h.log_mark()
            r = h.get("/index.html", headers={"User-Agent": "selftest-ua"})
            assert r.status_code == 200 and "dd_proxy test" in r.text
            r = h.get("/api/status/500", port=h.ports[1], headers={"User-Agent": "selftest-b"})
            assert (r.status_code, r.text) == (500, "status 500\n")
            assert backend.by_header("User-Agent", "selftest-b").path == "/status/500"
            line = h.access_log_line_for("selftest-ua")
            assert line and line[0].endswith('"selftest-ua" - -'), line  # no notes without module
            assert h.bad_log_lines(mark) == []
            took = h.stop()
            assert took < 10
            assert not h._group_alive()
        finally:
            h.cleanup()
        assert not os.path.exists(h.dir)

    def test_config_test_reports_errors(self):
        h = httpd_mod.Httpd("selftest-t", module=False)
        try:
            rc, out = h.config_test("NoSuchDirective here\n")
            assert rc != 0 and "NoSuchDirective" in out
        finally:
            h.cleanup()

    def test_error_log_check_sees_warnings_and_crashes(self):
        h = httpd_mod.Httpd("selftest-log", module=False)
        try:
            with open(h.error_log, "a") as f:
                f.write("[Sun Nov 22 04:25:07.354410 2026] [proxy:warn] [pid 1] AH01144: x\n")
                f.write("[Sun Nov 22 04:25:07.354410 2026] [core:notice] [pid 1] AH00052: "
                        "child pid 7 exit signal Segmentation fault (11)\n")
                f.write("[Sun Nov 22 04:25:07.354410 2026] [core:info] [pid 1] fine\n")
            assert len(h.bad_log_lines()) == 2
            assert len(h.bad_log_lines(allow=[r"AH01144", r"AH00052"])) == 0
        finally:
            h.cleanup()

    def test_module_if_built_selftest(self):
        """With the module built, the harness loads it and apache2 -t accepts it."""
        if not httpd_mod.module_built():
            pytest.skip(f"{httpd_mod.module_path()} not built yet")
        h = httpd_mod.Httpd("selftest-mod", module="if-built")
        try:
            rc, out = h.config_test()
            assert rc == 0, out
        finally:
            h.cleanup()
