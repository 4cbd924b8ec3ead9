# SPDX-License-Identifier: Apache-2.0
"""backend.py - the HTTP origin behind mod_proxy in the integration tests.

Threaded stdlib server on 127.0.0.1:<random>. It records every request (method, path, headers
exactly as received, body) and answers:
  /status/<n>[/...]   status n with body "status <n>\n" (no body for 1xx/204/304)
  /delay/<ms>[/...]   200 "backend ok\n" after ms milliseconds
  anything else       200 "backend ok\n"
Responses are deterministic (apart from Date/Server), so two httpds proxying to it can be
compared byte for byte.
"""

import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

_STATUS_RE = re.compile(r"^/+status/(\d{3})(?:/|$)")
_DELAY_RE = re.compile(r"^/+delay/(\d{1,5})(?:/|$)")


class BackendRequest:
    def __init__(self, method, path, headers, body):
        self.method = method
        self.path = path
        self.header_items = list(headers.items())  # as sent, in order, original case
        self.body = body

    def header(self, name):
        """First value of a header, case-insensitive (None when absent)."""
        name = name.lower()
        for k, v in self.header_items:
            if k.lower() == name:
                return v
        return None

    def headers_starting(self, prefix):
        """{lowercased name: value} of every header whose name starts with prefix (any case)."""
        prefix = prefix.lower()
        return {k.lower(): v for k, v in self.header_items if k.lower().startswith(prefix)}

    def __repr__(self):
        return f"<BackendRequest {self.method} {self.path}>"


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "test-backend/1"

    def log_message(self, fmt, *args):
        pass

    def _handle(self):
        backend = self.server.backend
        n = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(n) if n else b""
        backend._record(BackendRequest(self.command, self.path, self.headers, body))
        path = self.path.split("?", 1)[0]
        d = _DELAY_RE.match(path)
        if d:
            time.sleep(int(d.group(1)) / 1000.0)
        m = _STATUS_RE.match(path)
        status = int(m.group(1)) if m else 200
        payload = f"status {status}\n".encode() if m else b"backend ok\n"
        if status < 200 or status in (204, 304):
            payload = b""
        self.send_response(status)
        self.send_header("Content-Type", "text/plain")
        if status not in (204, 304) and status >= 200:
            self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(payload)

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = _handle


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True


class Backend:
    def __init__(self):
        self._lock = threading.Condition()
        self.requests = []
        self._server = None
        self.port = None

    def start(self):
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.backend = self
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        return self

    def stop(self):
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._thread.join(5)
            self._server = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    @property
    def url(self):
        return f"http://127.0.0.1:{self.port}"

    def _record(self, req):
        with self._lock:
            self.requests.append(req)
            self._lock.notify_all()

    def clear(self):
        with self._lock:
            self.requests = []

    def find(self, pred):
        with self._lock:
            return [r for r in self.requests if pred(r)]

    def wait_for(self, pred, n=1, timeout=5.0):
        """Waits until n recorded requests satisfy pred; returns them (maybe fewer)."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while True:
                found = [r for r in self.requests if pred(r)]
                left = deadline - time.monotonic()
                if len(found) >= n or left <= 0:
                    return found
                self._lock.wait(min(left, 0.05))

    def by_header(self, name, value, timeout=5.0):
        """The one request carrying header name=value (e.g. a unique User-Agent), or None."""
        found = self.wait_for(lambda r: r.header(name) == value, 1, timeout)
        return found[0] if found else None
