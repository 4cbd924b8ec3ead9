# SPDX-License-Identifier: Apache-2.0
"""test_211_features.py - header tags, server error statuses and query strings in http.url, set
by directives (README "Tracer features"); the environment variables are test_212's."""

import pytest

from helpers import NOT_MPM, dump, one_chunk, server_span, unique_ua
from httpd import MODULES_DIR, vhost

pytestmark = NOT_MPM  # runs on the event and sanitized passes: it does not depend on the MPM

SECRET_QUERY = "key1=val1&password=hunter2&token=03cb9f67dbbc4cb8b966329951e10934&q=shoes"


def span_for(h, agent, path, port=None, headers=None, status=200):
    ua = unique_ua("feat")
    hdrs = {"User-Agent": ua}
    hdrs.update(headers or {})
    r = h.get(path, port=port, headers=hdrs)
    assert r.status_code == status, r.text[:300]
    return server_span(one_chunk(agent, ua))


@pytest.fixture(scope="module")
def h(httpd_factory, agent, backend):
    def config(h):
        return f"""
LoadModule headers_module {MODULES_DIR}/mod_headers.so
DDAgentURL {agent.url}
DDFlushInterval 100
ProxyPass /api/ {backend.url}/
ErrorDocument 404 /errors/404.html
<Location /errors/>
    Header always set X-Error-Page yes
</Location>
Header always set X-Resp "r1"
Header always add Set-Cookie "a=1"
Header always add Set-Cookie "b=2"
""" + vhost(h.ports[1], r"""
    DDTraceHeaderTags x-request-id X-Custom.Thing x-mapped:my.tag
    DDTraceHeaderTags "content-type, x-resp, set-cookie, x-error-page, x-dd-proxy"
    DDInferredProxy On
    DDTraceServerErrorStatuses 500-599,429
    DDTraceQueryString On
    ProxyPass /api/ """ + backend.url + "/") + vhost(h.ports[2], r"""
    DDTraceServerErrorStatuses 400-499
    DDTraceQueryString On
    DDTraceQueryStringObfuscation ""
    ProxyPass /api/ """ + backend.url + "/") + vhost(h.ports[3], r"""
    DDTraceQueryString On
    DDTraceQueryStringObfuscation 'ssn=\d{3}-\d{2}-\d{4}'""")
    return httpd_factory("features", config=config, ports=4,
                         files={"errors/404.html": "not here\n"})


def test_defaults_add_nothing(h, agent):
    s = span_for(h, agent, "/index.html?" + SECRET_QUERY, headers={"x-request-id": "r-1"})
    m = s["meta"]
    assert m["http.url"] == f"http://127.0.0.1:{h.port}/index.html", dump(s)
    assert not any(k.startswith("http.request.headers.") or k.startswith("http.response.headers.")
                   for k in m), dump(s)


def test_request_and_response_header_tags(h, agent):
    s = span_for(h, agent, "/index.html", port=h.ports[1],
                 headers={"X-Request-Id": "req 42", "x-custom.thing": "c",
                          "X-Mapped": "m", "x-dd-proxy": "aws-apigateway"})
    m = s["meta"]
    want = {
        "http.request.headers.x-request-id": "req 42",
        "http.request.headers.x-custom_thing": "c",       # the tracers' normalization
        "my.tag": "m",
        # read before DDInferredProxyStripHeaders removes it
        "http.request.headers.x-dd-proxy": "aws-apigateway",
        "http.response.headers.content-type": "text/html",
        "http.response.headers.x-resp": "r1",
        "http.response.headers.set-cookie": "a=1, b=2",
    }
    assert {k: m.get(k) for k in want} == want, dump(s)
    assert "http.request.headers.content-type" not in m, dump(s)  # a GET sends none


def test_response_header_tags_of_the_final_response(h, agent, backend):
    """Behind mod_proxy (the backend's headers) and after an ErrorDocument redirect (the
    headers of the request that made the response)."""
    s = span_for(h, agent, "/api/thing", port=h.ports[1])
    assert s["meta"].get("http.response.headers.content-type") == "text/plain", dump(s)
    s = span_for(h, agent, "/missing.html", port=h.ports[1], status=404)
    assert s["meta"].get("http.response.headers.x-error-page") == "yes", dump(s)


def test_header_tag_values_capped_and_cleaned(h, agent):
    s = span_for(h, agent, "/index.html", port=h.ports[1],
                 headers={"x-request-id": "v" * 3000,
                          "x-mapped": "caf\xe9".encode("latin-1")})
    m = s["meta"]
    assert m["http.request.headers.x-request-id"] == "v" * 1024, len(m["http.request.headers.x-request-id"])
    assert m["my.tag"] == "caf\ufffd", dump(s)
    assert s["metrics"].get("_dd.proxy.truncated") == 1, dump(s)


@pytest.mark.parametrize("port_index,status,error", [
    (0, 429, 0), (0, 503, 1),     # default 500-599
    (1, 429, 1), (1, 503, 1), (1, 404, 0),   # 500-599,429
    (2, 429, 1), (2, 404, 1), (2, 503, 0),   # 400-499
])
def test_server_error_statuses(h, agent, port_index, status, error):
    s = span_for(h, agent, f"/api/status/{status}", port=h.ports[port_index], status=status)
    assert s["error"] == error, dump(s)
    assert s["meta"]["http.status_code"] == str(status)
    if error:
        assert s["meta"].get("error.type") == f"HTTP {status}", dump(s)
        assert s["meta"].get("error.message"), dump(s)
    else:
        assert "error.message" not in s["meta"] and "error.type" not in s["meta"], dump(s)


# system-tests Test_StandardTagsUrl (the tracers' default expression)
QUERY_CASES = [
    ("key1=val1&key2=val2&key3=val3", "key1=val1&key2=val2&key3=val3"),
    ("pass=03cb9f67-dbbc-4cb8-b966-329951e10934&key2=val2&key3=val3",
     "<redacted>&key2=val2&key3=val3"),
    ("key1=val1&public_key=MDNjYjlmNjctZGJiYy00Y2I4LWI5NjYtMzI5OTUxZTEwOTM0&key3=val3",
     "key1=val1&<redacted>&key3=val3"),
    ("key1=val1&key2=val2&token=03cb9f67dbbc4cb8b966329951e10934",
     "key1=val1&key2=val2&<redacted>"),
    ("key1=val1&key2=val2&application_key=123", "key1=val1&key2=val2&<redacted>"),
    ("json=%7B%20%22sign%22%3A%20%22%7B0x03cb9f67%2C0xdbbc%2C0x4cb8%2C%7B0xb9%2C0x66%2C0x32%2C0x99"
     "%2C0x51%2C0xe1%2C0x09%2C0x34%7D%7D%22%7D", "json=%7B%20<redacted>%7D"),
]


@pytest.mark.parametrize("query,shown", QUERY_CASES, ids=[q[:24] for q, _ in QUERY_CASES])
def test_query_string_default_obfuscation(h, agent, query, shown):
    s = span_for(h, agent, "/index.html?" + query, port=h.ports[1])
    assert s["meta"]["http.url"] == f"http://127.0.0.1:{h.ports[1]}/index.html?{shown}", dump(s)
    assert s["resource"] == "GET /index.html", dump(s)


def test_query_string_without_obfuscation_and_custom(h, agent):
    s = span_for(h, agent, "/api/x?application_key=123&a=%20b", port=h.ports[2])
    assert s["meta"]["http.url"].endswith("/api/x?application_key=123&a=%20b"), dump(s)
    s = span_for(h, agent, "/index.html?ssn=123-45-6789&application_key=123", port=h.ports[3])
    assert s["meta"]["http.url"].endswith("/index.html?<redacted>&application_key=123"), dump(s)
    s = span_for(h, agent, "/index.html?", port=h.ports[1])  # an empty query: no '?'
    assert s["meta"]["http.url"] == f"http://127.0.0.1:{h.ports[1]}/index.html", dump(s)


def test_long_query_capped_on_a_parameter(h, agent):
    query = "a=b&" * 1500 + "x=ghp_0123456789abcdefghijABCDEFGHIJ012345"
    s = span_for(h, agent, "/index.html?" + query, port=h.ports[1])
    url = s["meta"]["http.url"]
    assert len(url.encode()) <= 4096 and "ghp_" not in url, len(url)
    assert s["metrics"].get("_dd.proxy.truncated") == 1, dump(s)


def test_raw_bytes_in_query_made_valid(h, agent):
    import socket
    ua = unique_ua("rawq")
    with socket.create_connection(("127.0.0.1", h.ports[1]), timeout=5) as sock:
        sock.sendall(b"GET /index.html?q=caf\xe9&password=x HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                     b"User-Agent: " + ua.encode() + b"\r\nConnection: close\r\n\r\n")
        resp = b""
        while True:
            part = sock.recv(65536)
            if not part:
                break
            resp += part
    assert resp.startswith(b"HTTP/1.1 200"), resp[:200]
    s = server_span(one_chunk(agent, ua))
    assert s["meta"]["http.url"].endswith("/index.html?q=caf\ufffd&<redacted>"), dump(s)
