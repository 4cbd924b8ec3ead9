# SPDX-License-Identifier: Apache-2.0
"""test_335_inject_where_used.py - issue 12 (c): the trace context is written into the request
headers only where a handler passes them on, and then never missed.

A static file gets no injected headers (mod_headers shows what the request's headers were
after the handler: `Header always set X-Saw-Traceparent "expr=%{req:traceparent}"`). Every way a
request reaches something that reads them gets httpd's context, with httpd's server span as
the parent:
- mod_proxy (ProxyPass), mod_proxy_fcgi (a FastCGI responder written here, which records the
  CGI parameters it gets), mod_rewrite [P] in the server and per directory (decided in
  fixups, after ours), a CGI (mod_cgi / mod_cgid), mod_dir's DirectoryIndex index.cgi (a
  subrequest whose result replaces the directory request), and a server-side include's
  `#include virtual` of a proxied URL (a subrequest of a static .shtml page).
"""

import socket
import struct
import threading

import pytest

from helpers import dump, one_chunk, unique_ua
from httpd import default_mpm

CGI = """#!/usr/bin/python3
import os
print("Content-Type: text/plain")
print()
for k in ("HTTP_X_DATADOG_TRACE_ID", "HTTP_X_DATADOG_PARENT_ID", "HTTP_TRACEPARENT"):
    print(k, os.environ.get(k, "-"))
"""


class FastCgi:
    """A FastCGI responder on 127.0.0.1 (the protocol's records, enough for mod_proxy_fcgi):
    records each request's parameters and answers 200."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.requests = []
        self.lock = threading.Condition()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    @staticmethod
    def _read(conn, n):
        b = b""
        while len(b) < n:
            part = conn.recv(n - len(b))
            if not part:
                raise EOFError
            b += part
        return b

    @staticmethod
    def _pairs(data):
        out, i = {}, 0
        while i < len(data):
            lens = []
            for _ in range(2):
                if data[i] >> 7:
                    lens.append(struct.unpack(">I", data[i:i + 4])[0] & 0x7FFFFFFF)
                    i += 4
                else:
                    lens.append(data[i])
                    i += 1
            k = data[i:i + lens[0]].decode("latin-1")
            i += lens[0]
            out[k] = data[i:i + lens[1]].decode("latin-1")
            i += lens[1]
        return out

    def _serve(self, conn):
        params, rid = b"", 1
        try:
            with conn:
                while True:
                    ver, typ, rid, clen, plen, _ = struct.unpack(">BBHHBB", self._read(conn, 8))
                    body = self._read(conn, clen)
                    self._read(conn, plen)
                    if typ == 4:  # FCGI_PARAMS
                        params += body
                    elif typ == 5 and clen == 0:  # the end of FCGI_STDIN
                        break
                with self.lock:
                    self.requests.append(self._pairs(params))
                    self.lock.notify_all()
                out = b"Status: 200 OK\r\nContent-Type: text/plain\r\n\r\nfcgi ok\n"
                rec = lambda t, b: struct.pack(">BBHHBB", 1, t, rid, len(b), 0, 0) + b  # noqa
                conn.sendall(rec(6, out) + rec(6, b"") + rec(3, b"\0" * 8))
        except (EOFError, OSError):
            pass

    def by_ua(self, ua, timeout=5.0):
        with self.lock:
            self.lock.wait_for(lambda: any(r.get("HTTP_USER_AGENT") == ua
                                           for r in self.requests), timeout)
            return next((r for r in self.requests if r.get("HTTP_USER_AGENT") == ua), None)

    def stop(self):
        self.sock.close()


@pytest.fixture(scope="module")
def fcgi():
    f = FastCgi()
    yield f
    f.stop()


@pytest.fixture(scope="module")
def h(httpd_factory, agent, backend, fcgi):
    cgi = "cgid" if default_mpm() == "event" else "cgi"

    def config(h):
        sock = f"ScriptSock {h.run_dir}/cgid.sock\n" if cgi == "cgid" else ""
        mods = "".join(f"LoadModule {m}_module /usr/lib/apache2/modules/mod_{m}.so\n"
                       for m in ("rewrite", "include", "headers", "proxy_fcgi", cgi))
        return f"""{mods}{sock}
DDAgentURL {agent.url}
DDFlushInterval 100
DDService inject-svc
Header always set X-Saw-Traceparent "expr=%{{req:traceparent}}"
ProxyPass /api/ {backend.url}/
ProxyPass /fcgi/ fcgi://127.0.0.1:{fcgi.port}/
RewriteEngine On
RewriteRule ^/rw/(.*)$ {backend.url}/rw/$1 [P]
<Directory "{h.docroot}/perdir">
    RewriteEngine On
    RewriteRule ^(.*)$ {backend.url}/perdir/$1 [P]
</Directory>
<Directory "{h.docroot}/ssi">
    Options +Includes
    AddOutputFilter INCLUDES .shtml
</Directory>
<Directory "{h.docroot}/cgi">
    Options +ExecCGI
    SetHandler cgi-script
</Directory>
<Directory "{h.docroot}/idx">
    Options +ExecCGI
    AddHandler cgi-script .cgi
    DirectoryIndex index.cgi
</Directory>
"""
    files = {"perdir/x": "not served: proxied\n", "cgi/env.py": CGI, "idx/index.cgi": CGI,
             "ssi/page.shtml": 'before <!--#include virtual="/api/ssi-sub" --> after\n'}
    made = httpd_factory("inject-where", config=config, files=files)
    import os
    for f in ("cgi/env.py", "idx/index.cgi"):
        os.chmod(os.path.join(made.docroot, f), 0o755)
    return made


def server_span(agent, ua):
    chunk = one_chunk(agent, ua, timeout=10)
    return [s for s in chunk if s["name"] == "httpd.request"][0], chunk


def assert_context(agent, ua, trace_id, parent_id, what):
    span, chunk = server_span(agent, ua)
    assert trace_id is not None and parent_id is not None, \
        f"{what}: no x-datadog headers reached it"
    assert (int(trace_id), int(parent_id)) == (span["trace_id"], span["span_id"]), \
        (what, dump(chunk))


def get(h, path, ua):
    r = h.get(path, headers={"User-Agent": ua})
    assert r.status_code == 200, (path, r.status_code, r.text[:300])
    return r


def test_static_file_gets_no_injected_headers(h, agent):
    ua = unique_ua("static")
    r = get(h, "/index.html", ua)
    assert r.headers["X-Saw-Traceparent"] == "", r.headers  # no traceparent in the request
    server_span(agent, ua)  # still traced


def test_proxied_request_gets_them(h, agent, backend):
    ua = unique_ua("proxy")
    r = get(h, "/api/x", ua)
    assert r.headers["X-Saw-Traceparent"].startswith("00-"), r.headers
    req = backend.by_header("User-Agent", ua)
    assert_context(agent, ua, req.header("x-datadog-trace-id"),
                   req.header("x-datadog-parent-id"), "ProxyPass")


@pytest.mark.parametrize("path", ["/rw/x", "/perdir/x"], ids=["server", "per-directory"])
def test_rewrite_proxy_flag(h, agent, backend, path):
    ua = unique_ua("rewrite")
    get(h, path, ua)
    req = backend.by_header("User-Agent", ua)
    assert req is not None and req.path.startswith(path), req
    assert_context(agent, ua, req.header("x-datadog-trace-id"),
                   req.header("x-datadog-parent-id"), f"RewriteRule [P] {path}")


def test_proxy_fcgi(h, agent, fcgi):
    ua = unique_ua("fcgi")
    r = get(h, "/fcgi/app.php", ua)
    assert r.text == "fcgi ok\n"
    params = fcgi.by_ua(ua)
    assert params is not None, "the FastCGI responder got nothing"
    assert params.get("HTTP_TRACEPARENT", "").startswith("00-"), params
    assert_context(agent, ua, params.get("HTTP_X_DATADOG_TRACE_ID"),
                   params.get("HTTP_X_DATADOG_PARENT_ID"), "mod_proxy_fcgi")


@pytest.mark.parametrize("path", ["/cgi/env.py", "/idx/"], ids=["cgi", "directory-index"])
def test_cgi(h, agent, path):
    ua = unique_ua("cgi")
    r = get(h, path, ua)
    env = dict(line.split(" ", 1) for line in r.text.splitlines())
    assert_context(agent, ua, env.get("HTTP_X_DATADOG_TRACE_ID", "-").replace("-", "") or None,
                   env.get("HTTP_X_DATADOG_PARENT_ID", "-").replace("-", "") or None, path)


def test_ssi_include_virtual_subrequest(h, agent, backend):
    ua = unique_ua("ssi")
    r = get(h, "/ssi/page.shtml", ua)
    assert "backend ok" in r.text, r.text
    req = backend.by_header("User-Agent", ua)
    assert req is not None and req.path == "/ssi-sub", req
    assert_context(agent, ua, req.header("x-datadog-trace-id"),
                   req.header("x-datadog-parent-id"), "SSI include virtual")
