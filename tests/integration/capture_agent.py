# SPDX-License-Identifier: Apache-2.0
"""capture_agent.py - a fake Datadog agent for the integration tests.

It accepts PUT/POST /v0.4/traces over TCP (127.0.0.1, random port) or a unix socket, decodes the
msgpack body and applies the checks Datadog's own test agent (dd-apm-test-agent, see
shared/reference/peers.md section 6) applies, plus the span shape the contract (section 6)
promises. Every violated check is recorded in `failures`; tests assert it stays empty (conftest
does that for every test that uses an agent).

What it keeps: `payloads` (one record per trace request: method, path, headers, body size, the
decoded chunks), `traces` (every chunk received, in arrival order), `other_requests` (anything
that was not a v0.4 trace request, GET /info among them). `wait_for*` helpers poll those
with a timeout. `info` sets what GET /info answers (None: 404, as an agent older than /info).
`remote_config` answers POST /v0.7/config (issue 13.3): None answers 404, else a callable
given the request body (bytes) that returns (status, body bytes); the requests are recorded in
other_requests too.
Client-side stats (issue 13.2): with `stats_status` set (200, or an error status), POST
/v0.6/stats is answered with it and kept, decoded, in `stats_payloads` (headers, body); None
(the default) answers 404 as an agent without the endpoint.

Fault modes (set `agent.mode`, a plain attribute; `set_mode()` also sets the parameters):
  "ok"        answer 200 {"rate_by_service": ...}
  "stall"     sleep `stall_seconds`, then answer as "ok"
  "status"    answer `status_code` (500, 413, 429 ...) with a small JSON body
  "garbage"   answer 200 application/json with a body that is not JSON
  "close"     read the request, send the headers and part of the body, close the connection
  "refuse"    close the listening socket, so connections are refused (for TCP the port stays
              reserved by nobody; set another mode to listen again on the same address)
The request is decoded, checked and recorded in every mode except "refuse" (nothing arrives).

Load tests: with `agent.defer = True`, requests answered in mode "ok" are only stored (raw) and
answered at once, so a slow Python decoder cannot make the agent the bottleneck;
`process_deferred()` decodes, checks and records them afterwards (`deferred_count` tells how
many wait).
"""

import json
import os
import socket
import socketserver
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import msgpack

MAX_CONTENT_LENGTH = 50_000_000  # dd-apm-test-agent's trace_content_length check
U64_MAX = 2**64 - 1
I64_MIN, I64_MAX = -(2**63), 2**63 - 1
SPAN_FIELDS = ("trace_id", "span_id", "parent_id", "name", "service", "resource", "type",
               "start", "duration", "error", "meta", "metrics")
TRACE_PATHS = ("/v0.4/traces",)
MODES = ("ok", "stall", "status", "garbage", "close", "refuse")


def _is_int(v):
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v):
    return (isinstance(v, (int, float))) and not isinstance(v, bool)


def check_span(span, where):
    """Returns a list of problems with one span (empty when it is fine)."""
    errs = []
    if not isinstance(span, dict):
        return [f"{where}: span is {type(span).__name__}, not a map"]
    for k in span:
        if not isinstance(k, str):
            errs.append(f"{where}: span key {k!r} is not a string")
    missing = [f for f in SPAN_FIELDS if f not in span]
    if missing:
        errs.append(f"{where}: span lacks {missing}")
    for f in ("trace_id", "span_id"):
        if f in span:
            v = span[f]
            if not _is_int(v):
                errs.append(f"{where}: {f}={v!r} is not an int")
            elif not 1 <= v <= U64_MAX:
                errs.append(f"{where}: {f}={v} not a non-zero unsigned 64-bit value")
    if "parent_id" in span:
        v = span["parent_id"]
        if not _is_int(v):
            errs.append(f"{where}: parent_id={v!r} is not an int")
        elif not 0 <= v <= U64_MAX:
            errs.append(f"{where}: parent_id={v} outside unsigned 64-bit range")
    for f in ("name", "service", "resource", "type"):
        if f in span and not isinstance(span[f], str):
            errs.append(f"{where}: {f}={span[f]!r} is not a string")
    for f in ("start", "duration"):
        if f in span:
            v = span[f]
            if not _is_int(v):
                errs.append(f"{where}: {f}={v!r} is not an int")
            elif not I64_MIN <= v <= I64_MAX:
                errs.append(f"{where}: {f}={v} outside signed 64-bit range")
    if _is_int(span.get("duration")) and span["duration"] < 0:
        errs.append(f"{where}: negative duration {span['duration']}")
    if "error" in span:
        v = span["error"]
        if not _is_int(v):
            errs.append(f"{where}: error={v!r} is not an int")
        elif not -(2**31) <= v < 2**31:
            errs.append(f"{where}: error={v} outside int32")
    if "meta" in span:
        meta = span["meta"]
        if not isinstance(meta, dict):
            errs.append(f"{where}: meta is {type(meta).__name__}, not a map")
        else:
            for k, v in meta.items():
                if not isinstance(k, str) or not isinstance(v, str):
                    errs.append(f"{where}: meta {k!r}: {v!r} is not str -> str")
    if "metrics" in span:
        metrics = span["metrics"]
        if not isinstance(metrics, dict):
            errs.append(f"{where}: metrics is {type(metrics).__name__}, not a map")
        else:
            for k, v in metrics.items():
                if not isinstance(k, str) or not _is_num(v):
                    errs.append(f"{where}: metric {k!r}: {v!r} is not str -> int/float")
    return errs


def check_payload(headers, body, content_length):
    """Applies the test agent's request checks. Returns (chunks or None, list of problems)."""
    errs = []
    ctype = headers.get("Content-Type")
    if ctype != "application/msgpack":
        errs.append(f"Content-Type is {ctype!r}, not exactly 'application/msgpack'")
    if headers.get("Datadog-Meta-Tracer-Version") is None:
        errs.append("Datadog-Meta-Tracer-Version header missing")
    if content_length is None:
        errs.append("Content-Length header missing")
    elif content_length > MAX_CONTENT_LENGTH:
        errs.append(f"Content-Length {content_length} > {MAX_CONTENT_LENGTH}")
    try:
        chunks = msgpack.unpackb(body, raw=False, strict_map_key=False)
    except Exception as e:  # noqa: BLE001 - any decode problem is a finding
        errs.append(f"body is not msgpack: {e!r} (first bytes {body[:32]!r})")
        return None, errs
    count = headers.get("X-Datadog-Trace-Count")
    if count is None:
        errs.append("X-Datadog-Trace-Count header missing")
    else:
        try:
            n = int(count.strip())
        except ValueError:
            errs.append(f"X-Datadog-Trace-Count {count!r} is not an integer")
        else:
            if isinstance(chunks, list) and n != len(chunks):
                errs.append(f"X-Datadog-Trace-Count {n} != {len(chunks)} traces in the body")
    if not isinstance(chunks, list):
        errs.append(f"body is a {type(chunks).__name__}, not a list of traces")
        return None, errs
    good = []
    for i, chunk in enumerate(chunks):
        if not isinstance(chunk, list):
            errs.append(f"trace {i} is a {type(chunk).__name__}, not a list of spans")
            continue
        if not chunk:
            errs.append(f"trace {i} is empty")
        ids = set()
        span_ids = []
        for j, span in enumerate(chunk):
            errs.extend(check_span(span, f"trace {i} span {j}"))
            if isinstance(span, dict):
                ids.add(span.get("trace_id"))
                span_ids.append(span.get("span_id"))
        if len(ids) > 1:
            errs.append(f"trace {i} mixes trace ids {sorted(map(str, ids))}")
        if len(set(span_ids)) != len(span_ids):
            errs.append(f"trace {i} repeats a span id: {span_ids}")
        good.append(chunk)
    return good, errs


class Payload:
    """One trace request as the agent saw it."""

    def __init__(self, method, path, headers, body, chunks, problems, mode):
        self.method = method
        self.path = path
        self.headers = headers  # email.message.Message: case-insensitive get()
        self.body = body
        self.chunks = chunks or []
        self.problems = problems
        self.mode = mode
        self.time = time.time()

    def __repr__(self):
        return (f"<Payload {self.method} {self.path} {len(self.body)}B "
                f"{len(self.chunks)} traces mode={self.mode}>")


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "capture-agent/1"

    def log_message(self, fmt, *args):  # quiet
        pass

    def setup(self):
        super().setup()
        with self.server.agent._lock:
            self.server.agent._conns.add(self.connection)

    def finish(self):
        with self.server.agent._lock:
            self.server.agent._conns.discard(self.connection)
        try:
            super().finish()
        except OSError:
            pass

    def address_string(self):
        return "unix" if not isinstance(self.client_address, tuple) else self.client_address[0]

    def _read_body(self):
        """Returns (body, content_length or None). Handles chunked bodies too."""
        cl = self.headers.get("Content-Length")
        if cl is not None:
            try:
                n = int(cl)
            except ValueError:
                return b"", None
            return self.rfile.read(n), n
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            parts = []
            while True:
                line = self.rfile.readline(65537)
                size = int(line.split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline(65537) not in (b"\r\n", b"\n", b""):
                        pass
                    break
                parts.append(self.rfile.read(size))
                self.rfile.readline(65537)
            return b"".join(parts), None
        return b"", None

    def _send(self, status, body, ctype="application/json"):
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _handle(self):
        agent = self.server.agent
        path = self.path.split("?", 1)[0]
        body, clen = self._read_body()
        if path == "/info" and self.command == "GET" and agent.info is not None:
            agent._record_other(self.command, self.path, self.headers, body)
            if agent.info == "garbage":
                self._send(200, b"\x00\xff{{not json" + b"\xc1" * 32)
            else:
                self._send(200, json.dumps(agent.info).encode())
            return
        if path == "/v0.7/config" and self.command == "POST" and agent.remote_config is not None:
            agent._record_other(self.command, self.path, self.headers, body)
            status, answer = agent.remote_config(body)
            self._send(status, answer)
            return
        if path == "/v0.6/stats" and self.command == "POST" and agent.stats_status is not None:
            try:
                decoded = msgpack.unpackb(body, raw=False, strict_map_key=False)
            except Exception as e:  # noqa: BLE001 - a finding
                decoded = None
                with agent._lock:
                    agent.failures.append(f"POST /v0.6/stats: body is not msgpack: {e!r}")
            with agent._lock:
                agent.stats_payloads.append((self.headers, decoded))
                agent._lock.notify_all()
            self._send(agent.stats_status, b"OK", "text/plain")
            return
        if path not in TRACE_PATHS or self.command not in ("PUT", "POST"):
            agent._record_other(self.command, self.path, self.headers, body)
            self._send(404, b'{"error": "not found"}')
            return
        mode = agent.mode
        if mode == "refuse" or self.server is not agent._server:
            # the agent went away while this (kept-alive) connection was open: drop it
            self.close_connection = True
            return
        if mode == "ok" and agent.defer:
            agent._defer(self.command, self.path, self.headers, body, clen)
            self._send(200, json.dumps({"rate_by_service": agent.rate_by_service}).encode())
            return
        chunks, problems = check_payload(self.headers, body, clen)
        agent._record(Payload(self.command, self.path, self.headers, body, chunks, problems, mode))
        stall = self.headers.get("X-Datadog-Test-Stall-Seconds")
        if stall:
            time.sleep(float(stall))
        if mode == "stall":
            time.sleep(agent.stall_seconds)
        if mode == "status":
            self._send(agent.status_code, b'{"error": "test agent says no"}')
        elif mode == "garbage":
            self._send(200, b"\x00\xff{{not json at all" + b"\xc1" * 64)
        elif mode == "close":
            # headers promise 64 bytes of JSON; the connection ends after 10
            self.wfile.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                             b"Content-Length: 64\r\n\r\n{\"rate_by_")
            self.wfile.flush()
            self.close_connection = True
            try:
                self.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        else:
            resp = json.dumps({"rate_by_service": agent.rate_by_service}).encode()
            self._send(200, resp)

    do_PUT = _handle
    do_POST = _handle
    do_GET = _handle


def _quiet_handle_error(server, request, client_address):
    """The module gave up on a stalled answer (its timeout): not worth a traceback."""
    import sys
    if isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)):
        return
    socketserver.BaseServer.handle_error(server, request, client_address)


class _TCPServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    handle_error = _quiet_handle_error


class _UnixServer(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True
    handle_error = _quiet_handle_error

    def server_bind(self):
        if os.path.exists(self.server_address):
            os.unlink(self.server_address)
        socketserver.UnixStreamServer.server_bind(self)
        os.chmod(self.server_address, 0o777)  # apache children run as www-data
        self.server_name = "localhost"
        self.server_port = 0


class CaptureAgent:
    """A fake agent. `CaptureAgent()` listens on 127.0.0.1:<random>;
    `CaptureAgent(unix_path="/dir/agent.sock")` on a unix socket (the directory must be
    searchable by the apache children: 0755)."""

    def __init__(self, unix_path=None, port=0, rate_by_service=None):
        self.unix_path = unix_path
        self.port = port
        self.rate_by_service = {} if rate_by_service is None else rate_by_service
        self.stall_seconds = 5.0
        self.status_code = 500
        self._mode = "ok"
        # GET /info (issue 13.1): None answers 404 (an agent older than /info), a dict is the
        # JSON answer, "garbage" answers 200 with a body that is not JSON
        self.info = None
        self.remote_config = None  # POST /v0.7/config: None = 404, else body -> (status, bytes)
        self.stats_status = None  # POST /v0.6/stats: None answers 404
        self.defer = False
        self._deferred = []
        self._conns = set()  # open connections: stop() closes them too (kept-alive ones)
        self._lock = threading.Condition()
        self._server = None
        self._thread = None
        self.clear()

    # --- lifecycle -----------------------------------------------------------------------
    def start(self):
        if self.unix_path:
            self._server = _UnixServer(self.unix_path, _Handler)
        else:
            self._server = _TCPServer(("127.0.0.1", self.port), _Handler)
            self.port = self._server.server_address[1]
        self._server.agent = self
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        return self

    def stop(self):
        """Stops listening and closes every open connection (a client's kept-alive connection
        must not keep talking to an agent that is gone)."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._thread.join(5)
            self._server = None
        with self._lock:
            conns, self._conns = list(self._conns), set()
        for c in conns:
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        if self.unix_path and os.path.exists(self.unix_path):
            os.unlink(self.unix_path)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    @property
    def url(self):
        """What to give DDAgentURL."""
        if self.unix_path:
            return "unix://" + self.unix_path
        return f"http://127.0.0.1:{self.port}"

    # --- fault modes ---------------------------------------------------------------------
    @property
    def mode(self):
        return self._mode

    @mode.setter
    def mode(self, value):
        if value not in MODES:
            raise ValueError(f"unknown agent mode {value!r}")
        if value == "refuse" and self._server is not None:
            self.stop()
        elif value != "refuse" and self._server is None:
            self.start()
        self._mode = value

    def set_mode(self, mode, stall_seconds=None, status_code=None):
        if stall_seconds is not None:
            self.stall_seconds = stall_seconds
        if status_code is not None:
            self.status_code = status_code
        self.mode = mode

    # --- recording -----------------------------------------------------------------------
    def clear(self):
        with self._lock:
            self.payloads = []
            self._deferred = []
            self.traces = []
            self.failures = []
            self.other_requests = []
            self.stats_payloads = []

    def _record(self, payload):
        with self._lock:
            self.payloads.append(payload)
            self.traces.extend(payload.chunks)
            self.failures.extend(f"{payload.method} {payload.path}: {p}" for p in payload.problems)
            self._lock.notify_all()

    def _defer(self, method, path, headers, body, clen):
        with self._lock:
            self._deferred.append((method, path, headers, body, clen, time.time()))
            self._lock.notify_all()

    @property
    def deferred_count(self):
        """Trace requests stored raw (agent.defer) and not processed yet."""
        with self._lock:
            return len(self._deferred)

    def deferred_trace_count(self):
        """Sum of X-Datadog-Trace-Count over the deferred requests (no decoding)."""
        with self._lock:
            raw = list(self._deferred)
        n = 0
        for _, _, headers, _, _, _ in raw:
            try:
                n += int(headers.get("X-Datadog-Trace-Count", "0"))
            except ValueError:
                pass
        return n

    def process_deferred(self):
        """Decodes, checks and records the requests stored while agent.defer was set."""
        with self._lock:
            raw, self._deferred = self._deferred, []
        for method, path, headers, body, clen, when in raw:
            chunks, problems = check_payload(headers, body, clen)
            p = Payload(method, path, headers, body, chunks, problems, "ok")
            p.time = when
            self._record(p)
        return len(raw)

    def _record_other(self, method, path, headers, body):
        with self._lock:
            self.other_requests.append((method, path, headers, body))
            self._lock.notify_all()

    @property
    def counts(self):
        with self._lock:
            return {"payloads": len(self.payloads), "traces": len(self.traces),
                    "spans": sum(len(c) for c in self.traces), "failures": len(self.failures)}

    # --- queries -------------------------------------------------------------------------
    def wait_for(self, predicate, timeout=5.0):
        """Waits until predicate(agent) is truthy; returns its value (None on timeout)."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while True:
                v = predicate(self)
                if v:
                    return v
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self._lock.wait(min(left, 0.05))

    def wait_for_traces(self, n, timeout=5.0):
        """Waits until at least n chunks arrived; returns the list of chunks (may be short)."""
        self.wait_for(lambda a: len(a.traces) >= n, timeout)
        with self._lock:
            return list(self.traces)

    def spans(self):
        with self._lock:
            return [s for chunk in self.traces for s in chunk if isinstance(s, dict)]

    def find_spans(self, name=None, **meta):
        """Spans with that name (if given) whose meta has every key=value given
        (use keys with dots through a dict: find_spans(**{"http.useragent": ua}))."""
        out = []
        for s in self.spans():
            if name is not None and s.get("name") != name:
                continue
            m = s.get("meta") or {}
            if all(m.get(k) == v for k, v in meta.items()):
                out.append(s)
        return out

    def chunks_where(self, pred):
        """Chunks for which pred(span) holds for at least one span."""
        with self._lock:
            return [c for c in self.traces if any(isinstance(s, dict) and pred(s) for s in c)]

    def chunks_with_meta(self, key, value):
        return self.chunks_where(lambda s: (s.get("meta") or {}).get(key) == value)

    def wait_for_chunks_with_meta(self, key, value, n=1, timeout=5.0):
        """Waits until n chunks carry a span with meta key=value; returns them (maybe fewer)."""
        self.wait_for(lambda a: len(a.chunks_with_meta(key, value)) >= n, timeout)
        return self.chunks_with_meta(key, value)


def main():  # a tiny manual runner: python3 capture_agent.py [port]
    import sys
    agent = CaptureAgent(port=int(sys.argv[1]) if len(sys.argv) > 1 else 0).start()
    print("listening on", agent.url, flush=True)
    try:
        while True:
            time.sleep(1)
            print(agent.counts, agent.failures[-3:], flush=True)
    except KeyboardInterrupt:
        agent.stop()


if __name__ == "__main__":
    main()
