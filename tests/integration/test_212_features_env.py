# SPDX-License-Identifier: Apache-2.0
"""test_212_features_env.py - the tracers' environment variables for the tracer features:
DD_TRACE_HEADER_TAGS, DD_TRACE_HTTP_SERVER_ERROR_STATUSES, DD_HTTP_SERVER_TAG_QUERY_STRING,
DD_TRACE_OBFUSCATION_QUERY_STRING_REGEXP, DD_TAGS' forms and unified service tagging,
DD_TRACE_ENABLED and DD_APM_TRACING_ENABLED; directives beat them."""

import time

import pytest

from helpers import NOT_MPM, dump, one_chunk, server_span, unique_ua
from httpd import vhost

pytestmark = NOT_MPM  # runs on the event and sanitized passes: it does not depend on the MPM


def span_for(h, agent, path, port=None, headers=None, status=200):
    ua = unique_ua("env")
    hdrs = {"User-Agent": ua}
    hdrs.update(headers or {})
    r = h.get(path, port=port, headers=hdrs)
    assert r.status_code == status, r.text[:300]
    return server_span(one_chunk(agent, ua))


@pytest.fixture(scope="module")
def h(httpd_factory, agent, backend):
    def config(h):
        return f"""
DDAgentURL {agent.url}
DDFlushInterval 100
ProxyPass /api/ {backend.url}/
""" + vhost(h.ports[1], f"""
    DDService vhost-svc
    DDEnv vhost-env
    DDTraceHeaderTags x-other
    DDTraceServerErrorStatuses 500-599
    DDTraceQueryString Off
    ProxyPass /api/ {backend.url}/""")
    return httpd_factory("features-env", config=config, ports=2, env={
        "DD_TRACE_HEADER_TAGS": "x-request-id , x-mapped:env.tag",
        "DD_TRACE_HTTP_SERVER_ERROR_STATUSES": "400-404",
        "DD_HTTP_SERVER_TAG_QUERY_STRING": "true",
        "DD_TRACE_OBFUSCATION_QUERY_STRING_REGEXP": "secret=[^&]+",
        # space-separated (no comma): key:value, a key alone, a value with ':'
        "DD_TAGS": "team:env-team env:tag-env version:tag-ver service:tag-svc flag "
                   "url:http://x:1/y",
        "DD_VERSION": "real-ver",  # beats DD_TAGS' version:
    })


def test_environment_applies(h, agent):
    s = span_for(h, agent, "/api/status/404?a=1&secret=s3&b=2", status=404,
                 headers={"x-request-id": "r1", "x-mapped": "m", "x-other": "o"})
    m = s["meta"]
    assert s["service"] == "tag-svc", dump(s)
    want = {"env": "tag-env", "version": "real-ver", "team": "env-team", "flag": "",
            "url": "http://x:1/y", "http.request.headers.x-request-id": "r1", "env.tag": "m",
            "http.url": f"http://127.0.0.1:{h.port}/api/status/404?a=1&<redacted>&b=2"}
    assert {k: m.get(k) for k in want} == want, dump(s)
    assert "service" not in m and "http.request.headers.x-other" not in m, dump(s)
    assert s["error"] == 1 and m.get("error.type") == "HTTP 404", dump(s)
    s = span_for(h, agent, "/api/status/503", status=503)
    assert s["error"] == 0, dump(s)


def test_directives_beat_environment(h, agent):
    s = span_for(h, agent, "/api/status/503?secret=s3", port=h.ports[1], status=503,
                 headers={"x-request-id": "r1", "x-other": "o"})
    m = s["meta"]
    assert (s["service"], m.get("env"), m.get("version")) == ("vhost-svc", "vhost-env",
                                                              "real-ver"), dump(s)
    assert m.get("http.request.headers.x-other") == "o", dump(s)
    assert "http.request.headers.x-request-id" not in m, dump(s)
    assert m["http.url"] == f"http://127.0.0.1:{h.ports[1]}/api/status/503", dump(s)
    assert s["error"] == 1, dump(s)


def untraced_then_traced(h, agent, off_path, on_path):
    ua_off, ua_on = unique_ua("off"), unique_ua("on")
    assert h.get(off_path, headers={"User-Agent": ua_off}).status_code == 200
    assert h.get(on_path, headers={"User-Agent": ua_on}).status_code == 200
    on = one_chunk(agent, ua_on)
    time.sleep(0.5)  # flushes run in order: the untraced one had its chance
    return agent.chunks_with_meta("http.useragent", ua_off), server_span(on)


@pytest.mark.parametrize("env", [{"DD_TRACE_ENABLED": "false"},
                                 {"DD_APM_TRACING_ENABLED": "false"},
                                 {"DD_TRACE_ENABLED": "0", "DD_APM_TRACING_ENABLED": "true"}],
                         ids=["trace-enabled-false", "apm-tracing-enabled-false", "zero"])
def test_tracing_disabled_by_environment(httpd_factory, agent, env):
    """DDTrace unset: the environment switches tracing off; DDTrace On beats it. DD_TAGS in
    its comma form, with DD_ENV beating env:."""
    env = dict(env, DD_TAGS="a:1, b: two words ,env:tag-env", DD_ENV="real-env")
    h = httpd_factory("features-off-" + "-".join(sorted(env)), env=env, config=f"""
DDAgentURL {agent.url}
DDFlushInterval 100
<Location /on>
    DDTrace On
</Location>
""", files={"on/index.html": "on\n"})
    off, on = untraced_then_traced(h, agent, "/index.html", "/on/index.html")
    assert off == [], dump(off)
    m = on["meta"]
    assert (m.get("a"), m.get("b"), m.get("env")) == ("1", "two words", "real-env"), dump(on)
    # the request left no ids behind where it was not traced
    line = h.access_log_line_for(" \"GET /index.html ")
    assert line and line[0].endswith(" - -"), line
