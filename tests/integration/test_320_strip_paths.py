# SPDX-License-Identifier: Apache-2.0
"""test_320_strip_paths.py - CONTRACT section 3.2: with DDInferredProxy On the x-dd-proxy*
headers never reach a handler, whatever path the request takes to it (issue 18 item 1).

httpd rejects some requests while reading them, before post_read_request runs (a bad or missing
Host, a malformed or over-long header line, an unknown Transfer-Encoding, a bad
Content-Length); its ErrorDocument then redirects internally to a location that may be proxied,
and the redirected request shares the rejected one's headers. Every other way to a handler
(errors produced by later hooks, mod_rewrite [P], SSI subrequests, CGI) is checked too.
The backend records what reaches it; no x-dd-proxy* header may be among it.

Also DDInferredProxyTrustedNetworks any in a <VirtualHost> (issue 16 item 5)."""

import socket
import time
import uuid

import pytest

from helpers import dump, gateway_headers, one_chunk, server_span, unique_ua
from httpd import vhost

ANY_VHOST, SSI_VHOST = 1, 2

ALLOW_LOG = [r"AH01095", r"AH01093", r"AH01630", r"AH00126", r"AH00569", r"AH00561", r"AH00567", r"AH02429", r"AH10242",
             r"AH02539", r"AH00566", r"AH00565"]


@pytest.fixture(scope="module")
def h(httpd_factory, agent, backend):
    def config(h):
        return f"""
LoadModule rewrite_module /usr/lib/apache2/modules/mod_rewrite.so
LoadModule include_module /usr/lib/apache2/modules/mod_include.so
DDAgentURL {agent.url}
DDFlushInterval 100
DDInferredProxy On
DDInferredProxyTrustedNetworks 10.0.0.0/8
LimitRequestFieldSize 1024
ProxyPass /api/ {backend.url}/
ProxyPass /err/ {backend.url}/status/
ErrorDocument 400 /err/400
ErrorDocument 403 /err/403
ErrorDocument 404 /err/404
RewriteEngine On
RewriteRule ^/rw/(.*)$ {backend.url}/rw/$1 [P]
<Location /denied>
    Require all denied
</Location>
<Directory "{h.docroot}/ssi">
    Options +Includes
    AddOutputFilter INCLUDES .shtml
</Directory>
""" + vhost(h.ports[ANY_VHOST], "    DDInferredProxyTrustedNetworks any") \
           + vhost(h.ports[SSI_VHOST], "    ErrorDocument 400 /ssi/env.shtml")
    return httpd_factory("strip-paths", config=config, ports=3,
                         files={"ssi/page.shtml": '<!--#include virtual="/api/ssi-sub" -->\n',
                                "ssi/env.shtml": "env:\n<!--#printenv -->\n"})


def raw(h, text, port=None):
    """Sends text as is; returns the response (the server closes or answers within 10 s)."""
    with socket.create_connection(("127.0.0.1", port or h.port), timeout=10) as s:
        s.sendall(text.encode("latin-1"))
        data = b""
        try:
            while True:
                part = s.recv(65536)
                if not part:
                    break
                data += part
                if b"\r\n\r\n" in data and b"Connection: close" not in data:
                    break
        except socket.timeout:
            pass
        return data.decode("latin-1")


def gw_lines(marker):
    gw = gateway_headers(domain="leak.example.com", path="/leak")
    gw["x-dd-proxy-stage"] = marker
    return "".join(f"{k}: {v}\r\n" for k, v in gw.items())


def leaked(backend, marker, timeout=5.0):
    """The backend requests that carried this test's marker in any x-dd-proxy* header (none
    may), once the backend saw a request carrying marker in its User-Agent."""
    seen = backend.wait_for(lambda r: marker in (r.header("User-Agent") or ""), 1, timeout)
    assert seen, f"the backend never saw the request marked {marker}"
    return [r for r in seen if r.headers_starting("x-dd-proxy")]


# Each: (name, request text with {gw} for the gateway header lines and {ua} for the marker,
# the status httpd answers, whether mod_proxy can serve its ErrorDocument). All of them are
# rejected before post_read_request. When httpd gave up on the connection's input (a bad header
# line or length), mod_proxy cannot serve the error document (it fails reading the body), but
# another handler can: the SSI page prints the environment a CGI would get.
EARLY = [
    ("bad-host", "GET /api/x HTTP/1.1\r\nHost: bad host!\r\nUser-Agent: {ua}\r\n{gw}\r\n", 400, True),
    ("no-host", "GET /api/x HTTP/1.1\r\nUser-Agent: {ua}\r\n{gw}\r\n", 400, True),
    ("bad-header-line",
     "GET /api/x HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: {ua}\r\n{gw}no colon here\r\n\r\n",
     400, False),
    ("header-too-long",
     "GET /api/x HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: {ua}\r\n{gw}X-Long: "
     + "a" * 2000 + "\r\n\r\n", 400, False),
    ("bad-transfer-encoding",
     "POST /api/x HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: {ua}\r\n{gw}"
     "Transfer-Encoding: gzip\r\n\r\n", 400, False),
    ("bad-content-length",
     "POST /api/x HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: {ua}\r\n{gw}"
     "Content-Length: 12x\r\n\r\n", 400, False),
]


@pytest.mark.parametrize("name,text,status,proxied", EARLY, ids=[e[0] for e in EARLY])
def test_error_document_of_early_rejection_gets_no_gateway_headers(h, backend, name, text,
                                                                   status, proxied):
    marker = f"ddtest-{name}-{uuid.uuid4().hex}"
    resp = raw(h, text.format(ua=marker, gw=gw_lines(marker)))
    assert resp.startswith(f"HTTP/1.1 {status}"), resp[:300]
    if proxied:
        assert f"status {status}" in resp, f"not the proxied ErrorDocument:\n{resp[:600]}"
        bad = leaked(backend, marker)
        assert not bad, f"x-dd-proxy headers reached the backend: {[r.header_items for r in bad]}"


@pytest.mark.parametrize("name,text,status,proxied", EARLY, ids=[e[0] for e in EARLY])
def test_error_document_handler_sees_no_gateway_headers(h, name, text, status, proxied):
    marker = f"ddtest-{name}-{uuid.uuid4().hex}"
    resp = raw(h, text.format(ua=marker, gw=gw_lines(marker)), port=h.ports[SSI_VHOST])
    assert resp.startswith(f"HTTP/1.1 {status}"), resp[:300]
    assert "env:" in resp and "REDIRECT_STATUS=400" in resp, resp[:2000]
    assert "X_DD_PROXY" not in resp.upper(), resp[:3000]


def test_error_document_of_a_later_hook_error(h, backend):
    """403 from the access checker: post_read_request ran, the ErrorDocument is proxied."""
    marker = f"ddtest-denied-{uuid.uuid4().hex}"
    resp = raw(h, f"GET /denied/x HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: {marker}\r\n"
                  f"{gw_lines(marker)}Connection: close\r\n\r\n")
    assert resp.startswith("HTTP/1.1 403"), resp[:300]
    assert not leaked(backend, marker)


def test_mod_rewrite_proxy(h, backend):
    marker = f"ddtest-rewrite-{uuid.uuid4().hex}"
    resp = raw(h, f"GET /rw/x HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: {marker}\r\n"
                  f"{gw_lines(marker)}Connection: close\r\n\r\n")
    assert resp.startswith("HTTP/1.1 200"), resp[:300]
    assert not leaked(backend, marker)


def test_ssi_subrequest(h, backend):
    marker = f"ddtest-ssi-{uuid.uuid4().hex}"
    resp = raw(h, f"GET /ssi/page.shtml HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: {marker}\r\n"
                  f"{gw_lines(marker)}Connection: close\r\n\r\n")
    assert resp.startswith("HTTP/1.1 200") and "backend ok" in resp, resp[:600]
    assert not leaked(backend, marker)


def test_not_found_error_document(h, backend):
    marker = f"ddtest-404-{uuid.uuid4().hex}"
    resp = raw(h, f"GET /nothing-here HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: {marker}\r\n"
                  f"{gw_lines(marker)}Connection: close\r\n\r\n")
    assert resp.startswith("HTTP/1.1 404"), resp[:300]
    assert not leaked(backend, marker)


# --- DDInferredProxyTrustedNetworks any in a <VirtualHost> (issue 16 item 5) --------------------

def test_trusted_any_in_vhost_beats_the_servers_list(h, agent):
    """The main server trusts 10.0.0.0/8 only; the vhost says any, so 127.0.0.1 makes spans
    there (and not on the main server)."""
    for port, want in ((h.ports[ANY_VHOST], True), (h.port, False)):
        ua = unique_ua("any")
        r = h.get("/api/any", port=port,
                  headers=dict(gateway_headers(domain="any.example.com"), **{"User-Agent": ua}))
        assert r.status_code == 200
        chunk = one_chunk(agent, ua)
        names = sorted(s["name"] for s in chunk)
        assert ("aws.apigateway" in names) == want, f"port {port}:\n{dump(chunk)}"
        server_span(chunk)


def test_trusted_any_with_networks_is_a_config_error(httpd_factory):
    h2 = httpd_factory("trusted-any-mixed", start=False)
    rc, out = h2.config_test("DDInferredProxyTrustedNetworks 10.0.0.0/8 any\n")
    assert rc != 0, out
    assert "DDInferredProxyTrustedNetworks" in out and "any" in out, out
