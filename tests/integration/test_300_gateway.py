# SPDX-License-Identifier: Apache-2.0
"""test_300_gateway.py - CONTRACT section 3.2: the inferred span for API gateways.

One httpd, one port per setting:
  port 0  nothing set (DDInferredProxy defaults to Off)
  on      DDInferredProxy On
  off     DDInferredProxy Off
  nostrip DDInferredProxy On + DDInferredProxyStripHeaders Off
  user    DDInferredProxy On + DDInferredProxyUserTag On
and a second httpd (h_untrusted) whose DDInferredProxyTrustedNetworks exclude 127.0.0.1.
Every request goes through mod_proxy to the test backend (ProxyPass /api/)."""

import time

import pytest

from helpers import (GATEWAY_NAMES, NO_TIME, SERVER_SPAN, by_name, dump, gateway_headers,
                     now_ms, one_chunk, span_end, unique_ua)
from httpd import vhost

SERVICE = "gw-test-svc"
ON, OFF, NOSTRIP, USER = 1, 2, 3, 4

AWS_DOMAIN = "abc123def4.execute-api.eu-west-3.amazonaws.com"


@pytest.fixture(scope="module")
def h(httpd_factory, agent, backend):
    def config(h):
        return f"""
DDAgentURL {agent.url}
DDFlushInterval 100
DDService {SERVICE}
ProxyPass /api/ {backend.url}/
""" + vhost(h.ports[ON], "    DDInferredProxy On") \
            + vhost(h.ports[OFF], "    DDInferredProxy Off") \
            + vhost(h.ports[NOSTRIP], "    DDInferredProxy On\n    DDInferredProxyStripHeaders Off") \
            + vhost(h.ports[USER], "    DDInferredProxy On\n    DDInferredProxyUserTag On")
    return httpd_factory("gateway", config=config, ports=5)


def send(h, agent, port_index, path, gw, method="GET", expect_status=200, extra=None, **kw):
    """Makes the request; returns (chunk, ua). The chunk must arrive exactly once."""
    ua = unique_ua("gw")
    headers = {"User-Agent": ua}
    headers.update(gw)
    headers.update(extra or {})
    r = h.request(method, path, port=h.ports[port_index], headers=headers, **kw)
    assert r.status_code == expect_status, (r.status_code, r.text)
    return one_chunk(agent, ua), ua


def pair(chunk, name):
    """(inferred, server) of a gateway chunk, after the structural checks."""
    assert sorted(s["name"] for s in chunk) == sorted([name, SERVER_SPAN]), dump(chunk)
    inf, srv = by_name(chunk, name), by_name(chunk, SERVER_SPAN)
    assert srv["trace_id"] == inf["trace_id"], dump(chunk)
    assert srv["parent_id"] == inf["span_id"], dump(chunk)
    assert inf["metrics"].get("_dd.inferred_span") == 1, dump(inf)
    assert inf["type"] == "web", dump(inf)
    assert inf["meta"].get("span.kind") == "server", dump(inf)
    assert inf["duration"] >= 0
    # ends with (never before) the server span
    assert span_end(inf) >= span_end(srv), dump(chunk)
    assert srv["service"] == SERVICE, dump(srv)  # the server span keeps httpd's service
    return inf, srv


def expect_meta(span, expected, absent=()):
    got = {k: span["meta"].get(k) for k in expected}
    assert got == expected, f"meta mismatch:\n got {got}\nwant {expected}\n{dump(span)}"
    present = [k for k in absent if k in span["meta"]]
    assert not present, f"unexpected meta {present}:\n{dump(span)}"


def test_rest_v1_with_all_headers(h, agent, backend):
    t = now_ms() - 1234
    gw = gateway_headers("aws-apigateway", time_ms=t, method="GET", path="/api/users/123",
                         resource_path="/api/users/{id}", domain=AWS_DOMAIN, stage="prod",
                         account_id="123456789012", api_id="abc123def4", region="eu-west-3",
                         user="test-user")
    chunk, ua = send(h, agent, ON, "/api/users/123", gw)
    inf, srv = pair(chunk, "aws.apigateway")
    assert inf["parent_id"] == 0, dump(inf)  # no inbound context
    assert inf["start"] == t * 1_000_000, dump(inf)
    assert inf["service"] == AWS_DOMAIN
    assert inf["resource"] == "GET /api/users/{id}"
    assert inf["error"] == 0
    expect_meta(inf, {
        "component": "aws-apigateway",
        "http.method": "GET",
        "http.url": f"https://{AWS_DOMAIN}/api/users/123",
        "http.route": "/api/users/{id}",
        "stage": "prod",
        "region": "eu-west-3",
        "account_id": "123456789012",
        "apiid": "abc123def4",
        "dd_resource_key": "arn:aws:apigateway:eu-west-3::/restapis/abc123def4",
        "http.useragent": ua,
        "http.status_code": "200",
    }, absent=("aws_user", "error.message", "error.type"))
    # the server span: httpd's own view, with the gateway's route
    assert srv["resource"] == "GET /api/users/123", dump(srv)
    expect_meta(srv, {"component": "httpd", "http.route": "/api/users/{id}",
                      "http.status_code": "200", "http.method": "GET"})
    assert backend.by_header("User-Agent", ua).path == "/users/123"


def test_http_api_v2_sending_aws_apigateway(h, agent):
    """What Datadog's docs and CDK constructs configure for HTTP API v2: six headers and
    ${context.requestTimeEpoch}000 (whole seconds)."""
    secs = int(time.time()) - 1
    domain = "id.execute-api.us-east-1.amazonaws.com"
    gw = gateway_headers("aws-apigateway", time_ms=f"{secs}000", method="GET",
                         path="/api/v2/items", domain=domain, stage="$default")
    chunk, ua = send(h, agent, ON, "/api/v2/items", gw)
    inf, srv = pair(chunk, "aws.apigateway")
    assert inf["start"] == secs * 1_000_000_000, dump(inf)
    assert inf["resource"] == "GET /api/v2/items"
    assert inf["service"] == domain
    expect_meta(inf, {"component": "aws-apigateway", "http.url": f"https://{domain}/api/v2/items",
                      "stage": "$default", "http.status_code": "200", "http.useragent": ua},
                absent=("http.route", "region", "account_id", "apiid", "dd_resource_key",
                        "aws_user"))
    assert "http.route" not in srv["meta"], dump(srv)


def test_aws_httpapi_with_optional_tags(h, agent, backend):
    t = now_ms() - 20
    domain = "q1w2e3.execute-api.us-east-1.amazonaws.com"
    gw = gateway_headers("aws-httpapi", time_ms=t, method="POST", path="/api/orders",
                         resource_path="/api/{proxy+}", domain=domain, stage="prod",
                         account_id="123456789012", api_id="q1w2e3", region="us-east-1",
                         user="someone")
    chunk, ua = send(h, agent, ON, "/api/orders", gw, method="POST", data=b"{}")
    inf, srv = pair(chunk, "aws.httpapi")
    assert inf["start"] == t * 1_000_000
    assert inf["resource"] == "POST /api/{proxy+}"
    assert inf["service"] == domain
    expect_meta(inf, {
        "component": "aws-httpapi", "http.method": "POST",
        "http.url": f"https://{domain}/api/orders", "http.route": "/api/{proxy+}",
        "stage": "prod", "region": "us-east-1", "account_id": "123456789012", "apiid": "q1w2e3",
        "dd_resource_key": "arn:aws:apigateway:us-east-1::/apis/q1w2e3",
        "http.status_code": "200", "http.useragent": ua,
    }, absent=("aws_user",))
    assert srv["resource"] == "POST /api/orders"
    assert backend.by_header("User-Agent", ua).method == "POST"


def test_azure_apim(h, agent):
    t = now_ms() - 700
    domain = "my-api.azure-api.net"
    # Azure sends no stage; api id is sent here only to show no ARN is made for Azure
    gw = gateway_headers("azure-apim", time_ms=t, method="POST", path="/api/v1/users",
                         domain=domain, region="canada central", api_id="apim-1")
    chunk, ua = send(h, agent, ON, "/api/v1/users", gw, method="POST", data=b"{}")
    inf, _ = pair(chunk, "azure.apim")
    assert inf["start"] == t * 1_000_000
    assert inf["service"] == domain
    assert inf["resource"] == "POST /api/v1/users"
    expect_meta(inf, {"component": "azure-apim", "http.method": "POST",
                      "http.url": f"https://{domain}/api/v1/users", "region": "canada central",
                      "apiid": "apim-1", "http.status_code": "200", "http.useragent": ua},
                absent=("dd_resource_key", "stage", "http.route", "aws_user"))


# Azure Application Gateway and Front Door (as dd-trace-js): no time to send, so the span starts
# with httpd's request; a time they do send is used (and checked) as for the others.
AZURE_NO_TIME = [("azure-gw", "azure.app-gateway", "shop.westeurope.cloudapp.azure.com"),
                 ("azure-fd", "azure.frontdoor", "shop-e7f2.z01.azurefd.net")]


@pytest.mark.parametrize("proxy,name,domain", AZURE_NO_TIME, ids=["azure-gw", "azure-fd"])
@pytest.mark.parametrize("timed", [False, True], ids=["no-time", "time"])
def test_azure_gateways_time_optional(h, agent, backend, proxy, name, domain, timed):
    t = now_ms() - 300
    gw = gateway_headers(proxy, time_ms=t if timed else NO_TIME, method="GET",
                         path="api/orders/7", resource_path="/api/orders/{id}", domain=domain,
                         stage="prod", region="west europe", account_id="sub-1",
                         api_id="api-1", user="someone")
    before = time.time_ns()
    chunk, ua = send(h, agent, USER, "/api/orders/7", gw)
    inf, srv = pair(chunk, name)
    if timed:
        assert inf["start"] == t * 1_000_000, dump(inf)
    else:
        assert inf["start"] == srv["start"] and inf["start"] >= before, dump(chunk)
    assert inf["service"] == domain
    assert inf["resource"] == "GET /api/orders/{id}"
    expect_meta(inf, {"component": proxy, "http.method": "GET",
                      "http.url": f"https://{domain}/api/orders/7",
                      "http.route": "/api/orders/{id}", "stage": "prod",
                      "region": "west europe", "account_id": "sub-1", "apiid": "api-1",
                      "aws_user": "someone", "http.status_code": "200", "http.useragent": ua},
                absent=("dd_resource_key",))
    assert srv["meta"].get("http.route") == "/api/orders/{id}", dump(srv)
    assert backend.by_header("User-Agent", ua).headers_starting("x-dd-proxy") == {}


@pytest.mark.parametrize("proxy", ["azure-apim", "aws-apigateway", "aws-httpapi"])
def test_other_gateways_still_need_their_time(h, agent, proxy):
    gw = gateway_headers(proxy, time_ms=NO_TIME, method="GET", path="/api/t", domain="t.example")
    chunk, _ = send(h, agent, ON, "/api/t", gw)
    assert [s["name"] for s in chunk] == [SERVER_SPAN], dump(chunk)


@pytest.mark.parametrize("proxy", ["azure-gw", "azure-fd"])
def test_azure_gateway_bad_time_no_span(h, agent, proxy):
    gw = gateway_headers(proxy, time_ms="abc", method="GET", path="/api/t", domain="t.example")
    chunk, _ = send(h, agent, ON, "/api/t", gw)
    assert [s["name"] for s in chunk] == [SERVER_SPAN], dump(chunk)

def test_no_domain_service_is_ddservice(h, agent):
    gw = gateway_headers("aws-apigateway", method="GET", path="/api/nodomain")
    chunk, _ = send(h, agent, ON, "/api/nodomain", gw)
    inf, _ = pair(chunk, "aws.apigateway")
    assert inf["service"] == SERVICE, dump(inf)
    assert inf["resource"] == "GET /api/nodomain"


def test_arn_needs_region_and_api_id(h, agent):
    gw = gateway_headers("aws-apigateway", method="GET", path="/api/x", domain="d.example",
                         api_id="onlyid")
    chunk, _ = send(h, agent, ON, "/api/x", gw)
    inf, _ = pair(chunk, "aws.apigateway")
    expect_meta(inf, {"apiid": "onlyid"}, absent=("dd_resource_key", "region"))


@pytest.mark.parametrize("port,expected", [(ON, None), (USER, "arn:aws:iam::123456789012:user/t")])
def test_aws_user_only_with_user_tag_on(h, agent, port, expected):
    gw = gateway_headers("aws-apigateway", method="GET", path="/api/u", domain="d.example",
                         user="arn:aws:iam::123456789012:user/t")
    chunk, _ = send(h, agent, port, "/api/u", gw)
    inf, _ = pair(chunk, "aws.apigateway")
    assert inf["meta"].get("aws_user") == expected, dump(inf)


def test_header_names_and_value_case_insensitive(h, agent):
    t = now_ms() - 10
    gw = {"X-DD-PROXY": "AWS-APIGATEWAY", "X-DD-PROXY-REQUEST-TIME-MS": str(t),
          "X-Dd-Proxy-HttpMethod": "GET", "X-DD-Proxy-Path": "/api/case",
          "X-DD-PROXY-DOMAIN-NAME": "case.example", "X-Dd-Proxy-Stage": "dev"}
    chunk, _ = send(h, agent, ON, "/api/case", gw)
    inf, _ = pair(chunk, "aws.apigateway")
    assert inf["start"] == t * 1_000_000
    assert inf["service"] == "case.example"
    expect_meta(inf, {"component": "aws-apigateway", "stage": "dev",
                      "http.url": "https://case.example/api/case"})


def test_single_quotes_stripped(h, agent):
    """API Gateway v1 mappings use literals like 'aws-apigateway'."""
    t = now_ms() - 10
    gw = gateway_headers("'aws-apigateway'", time_ms=f"'{t}'", method="'GET'",
                         path="'/api/quoted'", domain="'q.example'", stage="'prod'",
                         region="'us-east-1'", api_id="'abc123'", account_id="'123'")
    chunk, _ = send(h, agent, ON, "/api/quoted", gw)
    inf, _ = pair(chunk, "aws.apigateway")
    assert inf["start"] == t * 1_000_000, dump(inf)
    assert inf["service"] == "q.example"
    assert inf["resource"] == "GET /api/quoted"
    expect_meta(inf, {"component": "aws-apigateway", "region": "us-east-1", "stage": "prod",
                      "apiid": "abc123", "account_id": "123",
                      "http.url": "https://q.example/api/quoted",
                      "dd_resource_key": "arn:aws:apigateway:us-east-1::/restapis/abc123"})


def test_backend_500_marks_both_spans(h, agent):
    gw = gateway_headers("aws-apigateway", method="GET", path="/api/status/500",
                         domain="err.example", stage="prod")
    chunk, _ = send(h, agent, ON, "/api/status/500", gw, expect_status=500)
    inf, srv = pair(chunk, "aws.apigateway")
    for s in (inf, srv):
        assert s["error"] == 1, dump(chunk)
        assert s["meta"].get("http.status_code") == "500", dump(chunk)
        assert s["meta"].get("error.message"), dump(chunk)
        assert s["meta"].get("error.type"), dump(chunk)
    # copied from the server span at its end
    assert inf["meta"]["error.message"] == srv["meta"]["error.message"], dump(chunk)
    assert inf["meta"]["error.type"] == srv["meta"]["error.type"], dump(chunk)


def test_backend_404_is_not_an_error(h, agent):
    gw = gateway_headers("aws-apigateway", method="GET", path="/api/status/404",
                         domain="nf.example")
    chunk, _ = send(h, agent, ON, "/api/status/404", gw, expect_status=404)
    inf, srv = pair(chunk, "aws.apigateway")
    for s in (inf, srv):
        assert s["error"] == 0 and s["meta"]["http.status_code"] == "404", dump(chunk)


def test_inferred_span_is_the_local_root(h, agent):
    gw = gateway_headers("aws-apigateway", method="GET", path="/api/root", domain="r.example")
    chunk, _ = send(h, agent, ON, "/api/root", gw)
    inf, _ = pair(chunk, "aws.apigateway")
    assert "_sampling_priority_v1" in inf["metrics"], dump(chunk)
    tid = inf["meta"].get("_dd.p.tid", "")
    assert len(tid) == 16 and tid == tid.lower() and int(tid, 16) > 0, dump(chunk)


def test_inbound_datadog_context_is_the_parent(h, agent):
    """system-tests' distributed vector: the inferred span continues the caller's trace."""
    gw = gateway_headers("aws-apigateway", method="GET", path="/api/distributed",
                         domain="dist.example", stage="staging")
    ctx = {"x-datadog-trace-id": "1", "x-datadog-parent-id": "2", "x-datadog-origin": "rum",
           "x-datadog-sampling-priority": "2"}
    chunk, _ = send(h, agent, ON, "/api/distributed", gw, extra=ctx)
    inf, srv = pair(chunk, "aws.apigateway")
    assert (inf["trace_id"], inf["parent_id"]) == (1, 2), dump(chunk)
    assert inf["metrics"].get("_sampling_priority_v1") == 2, dump(inf)


def test_gateway_clock_ahead_within_tolerance(h, agent):
    """2 minutes ahead is accepted, but the span cannot start after httpd got the request."""
    gw = gateway_headers("aws-apigateway", time_ms=now_ms() + 120_000, method="GET",
                         path="/api/ahead", domain="a.example")
    chunk, _ = send(h, agent, ON, "/api/ahead", gw)
    inf, srv = pair(chunk, "aws.apigateway")
    assert inf["start"] == srv["start"], dump(chunk)
    assert span_end(inf) >= span_end(srv)


def test_old_but_within_an_hour(h, agent):
    t = now_ms() - 55 * 60 * 1000
    gw = gateway_headers("aws-apigateway", time_ms=t, method="GET", path="/api/old",
                         domain="o.example")
    chunk, _ = send(h, agent, ON, "/api/old", gw)
    inf, _ = pair(chunk, "aws.apigateway")
    assert inf["start"] == t * 1_000_000
    assert inf["duration"] >= 55 * 60 * 10**9


# --- header stripping (CONTRACT 3.2, last bullet) ------------------------------------------

FULL = dict(method="GET", path="/api/strip", domain="s.example", stage="prod",
            resource_path="/api/{x}", account_id="1", api_id="2", region="eu-west-1", user="u")


def test_off_vhost_no_span_and_headers_pass_through(h, agent, backend):
    gw = gateway_headers("aws-apigateway", **FULL)
    chunk, ua = send(h, agent, OFF, "/api/strip", gw)
    assert [s["name"] for s in chunk] == [SERVER_SPAN], dump(chunk)
    assert chunk[0]["parent_id"] == 0
    seen = backend.by_header("User-Agent", ua).headers_starting("x-dd-proxy")
    assert seen == {k.lower(): v for k, v in gw.items()}


def test_default_is_off(h, agent, backend):
    gw = gateway_headers("aws-apigateway", **FULL)
    chunk, ua = send(h, agent, 0, "/api/strip", gw)
    assert [s["name"] for s in chunk] == [SERVER_SPAN], dump(chunk)
    assert backend.by_header("User-Agent", ua).headers_starting("x-dd-proxy") == \
        {k.lower(): v for k, v in gw.items()}


@pytest.mark.parametrize("proxy", ["aws-apigateway", "azure-gw", "azure-fd", "dummy-proxy"])
def test_on_vhost_strips_headers_valid_or_not(h, agent, backend, proxy):
    gw = gateway_headers(proxy, **FULL)
    gw["X-DD-PROXY-SOMETHING-NEW"] = "x"  # any x-dd-proxy* header, any case
    chunk, ua = send(h, agent, ON, "/api/strip", gw)
    names = sorted(s["name"] for s in chunk)
    assert names == sorted([SERVER_SPAN] + ([GATEWAY_NAMES[proxy]] if proxy in GATEWAY_NAMES
                                            else [])), dump(chunk)
    req = backend.by_header("User-Agent", ua)
    assert req.headers_starting("x-dd-proxy") == {}, req.header_items


@pytest.fixture(scope="module")
def h_untrusted(httpd_factory, agent, backend):
    return httpd_factory("gateway-untrusted", config=f"""
DDAgentURL {agent.url}
DDFlushInterval 100
ProxyPass /api/ {backend.url}/
DDInferredProxy On
DDInferredProxyTrustedNetworks 10.0.0.0/8 192.168.0.0/16
""")


def test_untrusted_peer_no_span_but_headers_stripped(h_untrusted, agent, backend):
    """127.0.0.1 is outside DDInferredProxyTrustedNetworks: the headers are not believed, and
    (DDInferredProxy being On there) still removed."""
    gw = gateway_headers("aws-apigateway", **FULL)
    chunk, ua = send(h_untrusted, agent, 0, "/api/strip", gw)
    assert [s["name"] for s in chunk] == [SERVER_SPAN], dump(chunk)
    assert chunk[0]["parent_id"] == 0
    assert backend.by_header("User-Agent", ua).headers_starting("x-dd-proxy") == {}


def test_strip_off_passes_headers_and_still_infers(h, agent, backend):
    gw = gateway_headers("aws-apigateway", **FULL)
    chunk, ua = send(h, agent, NOSTRIP, "/api/strip", gw)
    pair(chunk, "aws.apigateway")
    assert backend.by_header("User-Agent", ua).headers_starting("x-dd-proxy") == \
        {k.lower(): v for k, v in gw.items()}


# --- the environment switch ----------------------------------------------------------------

@pytest.fixture(scope="module")
def h_env(httpd_factory, agent, backend):
    def config(h):
        return f"""
DDAgentURL {agent.url}
DDFlushInterval 100
ProxyPass /api/ {backend.url}/
""" + vhost(h.ports[1], "    DDInferredProxy Off")
    return httpd_factory("gateway-env", config=config, ports=2,
                         env={"DD_TRACE_INFERRED_PROXY_SERVICES_ENABLED": "true"})


def test_env_enables_and_directive_beats_env(h_env, agent):
    gw = gateway_headers("aws-apigateway", method="GET", path="/api/env", domain="e.example")
    chunk, _ = send(h_env, agent, 0, "/api/env", gw)
    inf, _ = pair_any(chunk)
    assert inf["name"] == "aws.apigateway"
    chunk, _ = send(h_env, agent, 1, "/api/env", gw)
    assert [s["name"] for s in chunk] == [SERVER_SPAN], dump(chunk)


def pair_any(chunk):
    names = [s["name"] for s in chunk if s["name"] != SERVER_SPAN]
    assert len(names) == 1, dump(chunk)
    inf = by_name(chunk, names[0])
    return inf, by_name(chunk, SERVER_SPAN)
