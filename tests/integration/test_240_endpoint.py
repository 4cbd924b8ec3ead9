# SPDX-License-Identifier: Apache-2.0
"""test_240_endpoint.py - http.endpoint (resource renaming, issue 15): the path of http.url with
the segments that look like parameters as placeholders, as dd-trace-cpp infers it
(endpoint_inferral.cpp; lib/dd_endpoint.c, whose edges test_endpoint.c checks).

- absent by default (no directive, no environment variable);
- DDTraceResourceRenaming On: on the server span, never on the gateway span, never the
  resource; not where there is an http.route (a gateway's resource path) unless
  DDTraceResourceRenamingAlwaysSimplified On; a header tag named http.endpoint is kept;
- DD_TRACE_RESOURCE_RENAMING_ENABLED / _ALWAYS_SIMPLIFIED_ENDPOINT do the same where no
  directive is set, and a directive beats them;
- next to dd-trace-js 5.132 with DD_TRACE_RESOURCE_RENAMING_ENABLED=true, path by path: the same
  endpoint, except in the two ways the tracers differ (DIFFERENT below)."""

import pytest

from helpers import (NOT_MPM, by_name, dump, gateway_headers, one_chunk, one_chunk_where,
                     server_span, unique_ua)
from httpd import vhost
from peers import running_node

pytestmark = NOT_MPM  # runs on the event and sanitized passes: it does not depend on the MPM

DEFAULT, ON, ALWAYS, HEADER = 0, 1, 2, 3

# (request path, the endpoint dd-trace-cpp infers): also what dd-trace-js infers
SAME = [
    ("/", "/"),
    ("/index.html", "/index.html"),
    ("/users/123", "/users/{param:int}"),
    ("/users/123/orders/abcdef12", "/users/{param:int}/orders/{param:hex}"),
    ("/users/123?expand=1&x=%20", "/users/{param:int}"),
    ("/api/v1/items/0-1_2.3", "/api/v1/items/{param:int_id}"),
    ("/files/5f3e2b1c-0000-4000-8000-000000000000", "/files/{param:hex_id}"),
    ("/search/q=abc", "/search/{param:str}"),
    ("/p/caf%C3%A9", "/p/{param:str}"),
    ("/p/aaaaaaaaaaaaaaaaaaaaaaaaa", "/p/{param:str}"),
    ("/x/09", "/x/09"),
    ("/a/b/c/d/e/f/g/h", "/a/b/c/d/e/f/g/h"),
]
# where dd-trace-js 5.132 (calculateHttpEndpoint) infers otherwise:
# (path, dd-trace-cpp's and the module's, dd-trace-js's, why)
DIFFERENT = [
    ("/users/123/", "/users/{param:int}/", "/users/{param:int}",
     "dd-trace-cpp keeps a trailing '/', dd-trace-js drops it"),
    ("/1/2/3/4/5/6/7/8/9/10", "/1/2/3/4/5/6/7/8/", "/1/2/3/4/5/6/7/8",
     "past 8 segments dd-trace-cpp ends with '/', dd-trace-js does not"),
    ("/a/---", "/a/{param:int_id}", "/a/---",
     "dd-trace-cpp's {param:int_id} needs no digit, dd-trace-js's does"),
]


@pytest.fixture(scope="module")
def h(httpd_factory, agent):
    config = lambda h: f"""
DDAgentURL {agent.url}
DDFlushInterval 100
DDInferredProxy On
""" + vhost(h.ports[ON], "    DDTraceResourceRenaming On") \
        + vhost(h.ports[ALWAYS], "    DDTraceResourceRenaming On\n"
                "    DDTraceResourceRenamingAlwaysSimplified On") \
        + vhost(h.ports[HEADER], "    DDTraceResourceRenaming On\n"
                "    DDTraceHeaderTags x-endpoint:http.endpoint")
    return httpd_factory("endpoint", config=config, ports=4)


@pytest.fixture(scope="module")
def h_env(httpd_factory, agent):
    """Both environment variables set; the vhost turns renaming off, then "always" off."""
    config = lambda h: f"""
DDAgentURL {agent.url}
DDFlushInterval 100
DDInferredProxy On
""" + vhost(h.ports[1], "    DDTraceResourceRenaming Off") \
        + vhost(h.ports[2], "    DDTraceResourceRenamingAlwaysSimplified Off")
    return httpd_factory("endpoint-env", config=config, ports=3,
                         env={"DD_TRACE_RESOURCE_RENAMING_ENABLED": "true",
                              "DD_TRACE_RESOURCE_RENAMING_ALWAYS_SIMPLIFIED_ENDPOINT": "true"})


def chunk_of(h, agent, path, port=None, headers=None):
    ua = unique_ua("endpoint")
    h.get(path, port=port, headers=dict(headers or {}, **{"User-Agent": ua}))
    return one_chunk(agent, ua, settle=0.05)


def meta(h, agent, path, port=None, headers=None):
    return server_span(chunk_of(h, agent, path, port, headers))["meta"]


GW = dict(proxy="aws-apigateway", path="/users/123", domain="api.example.com",
          resource_path="/users/{id}")


def test_absent_by_default(h, agent):
    for path in ("/users/123", "/", "/files/abcdef12"):
        chunk = chunk_of(h, agent, path)
        assert not any("http.endpoint" in (s.get("meta") or {}) for s in chunk), dump(chunk)


@pytest.mark.parametrize("path,expected", SAME + [(p, c) for p, c, _, _ in DIFFERENT],
                         ids=[c[0] for c in SAME] + [c[0] for c in DIFFERENT])
def test_on_infers_from_the_path(h, agent, path, expected):
    s = server_span(chunk_of(h, agent, path, port=h.ports[ON]))
    assert s["meta"].get("http.endpoint") == expected, dump(s)
    assert "http.route" not in s["meta"], dump(s)
    assert s["resource"] == "GET " + path.split("?")[0], dump(s)  # never the resource


def test_not_next_to_a_route_unless_always(h, agent):
    """A gateway's resource path is the server span's http.route: dd-trace-cpp's fallback mode
    leaves http.endpoint out there; its "always" mode adds it. The gateway span never has it
    (it is the server span's, as dd-trace-js puts it)."""
    for port, want in ((h.ports[ON], None), (h.ports[ALWAYS], "/users/{param:int}")):
        chunk = chunk_of(h, agent, "/users/123", port=port, headers=gateway_headers(**GW))
        s = server_span(chunk)
        assert s["meta"]["http.route"] == "/users/{id}", dump(s)
        assert s["meta"].get("http.endpoint") == want, dump(chunk)
        gw = by_name(chunk, "aws.apigateway")
        assert "http.endpoint" not in gw["meta"], dump(gw)
    # without a route, "always" is the same as on
    m = meta(h, agent, "/users/123", port=h.ports[ALWAYS],
             headers=gateway_headers(proxy="aws-apigateway", path="/users/123",
                                     domain="api.example.com"))
    assert m.get("http.endpoint") == "/users/{param:int}" and "http.route" not in m, m


def test_header_tag_named_http_endpoint_is_kept(h, agent):
    m = meta(h, agent, "/users/123", port=h.ports[HEADER], headers={"x-endpoint": "/mine"})
    assert m["http.endpoint"] == "/mine", m
    m = meta(h, agent, "/users/123", port=h.ports[HEADER])
    assert m["http.endpoint"] == "/users/{param:int}", m


def test_environment_and_directives_beating_it(h_env, agent):
    gw = gateway_headers(**GW)
    # the environment: on, and always (so next to the gateway's route too)
    assert meta(h_env, agent, "/users/123", headers=gw).get("http.endpoint") == \
        "/users/{param:int}"
    # DDTraceResourceRenaming Off beats DD_TRACE_RESOURCE_RENAMING_ENABLED=true
    m = meta(h_env, agent, "/users/123", port=h_env.ports[1])
    assert "http.endpoint" not in m, m
    # ...AlwaysSimplified Off beats the environment's: on, but not next to a route
    m = meta(h_env, agent, "/users/123", port=h_env.ports[2], headers=gw)
    assert "http.endpoint" not in m and m["http.route"] == "/users/{id}", m
    m = meta(h_env, agent, "/users/123", port=h_env.ports[2])
    assert m.get("http.endpoint") == "/users/{param:int}", m


# --- next to dd-trace-js ---------------------------------------------------------------------

@pytest.fixture(scope="module")
def node(agent):
    with running_node(agent.url, "endpoint-peer", inferred=False,
                      env={"DD_TRACE_RESOURCE_RENAMING_ENABLED": "true"}) as n:
        yield n


def node_endpoint(node, agent, path):
    ua = unique_ua("endpoint-node")
    node.get(path, headers={"User-Agent": ua})
    chunk = one_chunk_where(agent, lambda s: s.get("name") == "web.request" and
                            (s.get("meta") or {}).get("http.useragent") == ua,
                            f"web.request with {ua}", timeout=10, settle=0.05)
    return by_name(chunk, "web.request")["meta"].get("http.endpoint")


def test_same_as_dd_trace_js(h, agent, node):
    problems = []
    for path, expected in SAME:
        theirs = node_endpoint(node, agent, path)
        ours = meta(h, agent, path, port=h.ports[ON]).get("http.endpoint")
        if not (theirs == ours == expected):
            problems.append(f"{path}: dd-trace-js {theirs!r}, httpd {ours!r}, expected "
                            f"{expected!r}")
    for path, cpp, js, why in DIFFERENT:
        theirs = node_endpoint(node, agent, path)
        ours = meta(h, agent, path, port=h.ports[ON]).get("http.endpoint")
        if (theirs, ours) != (js, cpp):
            problems.append(f"{path} ({why}): dd-trace-js {theirs!r} (expected {js!r}), httpd "
                            f"{ours!r} (expected {cpp!r})")
    assert not problems, "\n".join(problems)
