# SPDX-License-Identifier: Apache-2.0
"""test_621_peers_gateway_vs_dd_trace_js.py - issue 15 item 1(a): the module's gateway span next
to the one Datadog's own Node.js tracer (dd-trace, tests/peers/dd-trace-js) makes of the same
headers, field by field.

The same request (gateway headers of each gateway, every optional header, inbound contexts, a
500) goes to the Node app and to httpd, both configured alike (service, env, version, a tag,
gateway spans on) and both sending to this module's capture agent. The two inferred spans must
agree on name, service, resource, type, error, start, every meta and every metric, and on the
trace's shape: the inferred span is the local root, continues the inbound context, carries the
sampling decision, and is the parent of the server span. What may differ is exactly the list
below (also in README, "Differences from Datadog's tracers"), each with its reason: a new
difference, or one that went away, fails the test."""

import time

import pytest

from helpers import NOT_MPM, NO_TIME, dump, gateway_headers, now_ms, one_chunk_where, unique_ua
from peers import node_unavailable, running_node

pytestmark = [NOT_MPM,  # the event and sanitized passes: it does not depend on the MPM
              pytest.mark.skipif(node_unavailable() is not None,
                                 reason=f"Node peer unavailable: {node_unavailable()}")]

SERVICE = "peer-svc"
ENV = "peer-env"
VERSION = "1.2.3"
GATEWAYS = {"aws-apigateway": "aws.apigateway", "aws-httpapi": "aws.httpapi",
            "azure-apim": "azure.apim", "azure-gw": "azure.app-gateway",
            "azure-fd": "azure.frontdoor"}
SERVER_NAMES = ("httpd.request", "web.request")

# Tags only dd-trace-js puts on the gateway span, and why the module does not.
NODE_ONLY_META = {
    "service": "dd-trace-js repeats the span's service as a meta tag; the span's own service "
               "field carries it (the other tracers send no such tag)",
    "_dd.integration": "dd-trace-js's name for the integration that made the span (= component)",
    "_dd.tags.process": "dd-trace-js's process tags (Node entry point, package.json name): "
                        "nothing an httpd has",
    "_dd.sdk.otlp_export": "dd-trace-js's flag for its OTLP exporter",
}
NODE_ONLY_METRICS = {
    "_dd.measured": "dd-trace-js marks every server/client span measured; the gateway span is "
                    "a service entry span, so the agent computes its stats anyway",
    "_dd.top_level": "dd-trace-js computes top-level spans itself; without its "
                     "Datadog-Client-Computed-Top-Level header the agent does it (same result)",
}
# Tags only the module puts on the gateway span.
HTTPD_ONLY_META = {
    "http.useragent": "dd-trace-py, -java and -rb copy the user agent to the gateway span "
                      "(system-tests find the span by it); dd-trace-js does not",
}
# Differences in single cases: {case id: {"meta key": reason}}.
CASE_DIFFERENCES = {
    "no-domain": {"http.url": "without x-dd-proxy-domain-name dd-trace-js sends "
                              "'https://undefined/<path>'; the module sends the path alone "
                              "(as dd-trace-java)"},
    "status-500": {"error.message": "the module gives both spans the status line as message "
                                    "and 'HTTP <status>' as type (dd-trace-py copies the "
                                    "server span's too); dd-trace-js sets only error=1",
                   "error.type": "see error.message"},
}
NO_ARN = {"dd_resource_key": "dd-trace-js makes an AWS API Gateway ARN "
                             "(arn:aws:apigateway:<region>::/restapis/<api id>) from the api id "
                             "and region whatever the gateway; the module only for AWS's (an "
                             "Azure gateway has no such ARN), as for azure-apim"}
# Present in both, values of the process that sent them.
PER_PROCESS = {"runtime-id", "language", "process_id", "_dd.p.tid"}
SAMPLING_KEYS = ("_sampling_priority_v1", "_dd.agent_psr", "_dd.rule_psr", "_dd.limit_psr",
                 "_dd.p.dm", "_dd.p.tid", "_dd.p.ksr")


@pytest.fixture(scope="module")
def node(agent):
    with running_node(agent.url, SERVICE,
                      env={"DD_ENV": ENV, "DD_VERSION": VERSION, "DD_TAGS": "team:edge"}) as n:
        yield n


@pytest.fixture(scope="module")
def h(httpd_factory, agent, backend):
    return httpd_factory("peer-compare", config=f"""
DDAgentURL {agent.url}
DDFlushInterval 100
DDService {SERVICE}
DDEnv {ENV}
DDVersion {VERSION}
DDTag team edge
DDInferredProxy On
DDInferredProxyUserTag On
ProxyPass /status/ {backend.url}/status/
""")


def full(proxy, path="/api/users/123", **kw):
    base = dict(method="GET", path=path, domain="abc123.execute-api.eu-west-3.amazonaws.com",
                stage="prod", resource_path="/api/users/{id}", account_id="123456789012",
                api_id="abc123", region="eu-west-3", user="arn:aws:iam::123456789012:user/t")
    base.update(kw)
    return gateway_headers(proxy, **{k: v for k, v in base.items() if v is not None})


W3C = {"traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
       "tracestate": "dd=s:2;o:rum;p:00f067aa0ba902b7;t.dm:-4;t.usr.id:42,congo=t61rcWkgMzE"}
DATADOG = {"x-datadog-trace-id": "1", "x-datadog-parent-id": "2", "x-datadog-origin": "rum",
           "x-datadog-sampling-priority": "2"}

# (id, request path, gateway headers, other headers, expected status)
CASES = [
    ("rest-every-header", "/", full("aws-apigateway"), {}, 200),
    ("httpapi-every-header", "/", full("aws-httpapi", method="POST", path="/api/orders",
                                       resource_path="/api/{proxy+}"), {}, 200),
    ("apim", "/", full("azure-apim", path="/api/v1/users", domain="my-api.azure-api.net",
                       region="canada central", stage=None, resource_path=None,
                       account_id=None, api_id=None, user=None), {}, 200),
    ("apim-url-template-without-slash", "/",
     full("azure-apim", method="GET", path="carts/{id}/items", domain="shop.azure-api.net",
          region="west europe", stage=None, resource_path=None, account_id=None, api_id=None,
          user=None), {}, 200),
    ("rest-v2-mapping-seconds", "/",
     gateway_headers("aws-apigateway", time_ms=f"{now_ms() // 1000}000", method="GET",
                     path="/api/v2/items", domain="id.execute-api.us-east-1.amazonaws.com",
                     stage="$default"), {}, 200),
    ("no-domain", "/", full("aws-apigateway", domain=None), {}, 200),
    ("status-500", "/status/500", full("aws-apigateway", path="/status/500",
                                       resource_path="/status/{code}"), {}, 500),
    ("inbound-datadog", "/", full("aws-apigateway"), DATADOG, 200),
    ("inbound-w3c", "/", full("aws-httpapi"), W3C, 200),
]
# Azure Application Gateway and Front Door: every optional header, with and without the time
# (which they cannot send: the span then starts when the request arrives).
for _proxy, _domain in (("azure-gw", "shop.westeurope.cloudapp.azure.com"),
                        ("azure-fd", "shop-e7f2.z01.azurefd.net")):
    CASES += [
        (f"{_proxy}-every-header", "/", full(_proxy, domain=_domain, region="west europe"), {},
         200),
        (f"{_proxy}-no-time-every-header", "/",
         full(_proxy, time_ms=NO_TIME, domain=_domain, region="west europe"), {}, 200),
        (f"{_proxy}-no-time-path-without-slash", "/",
         full(_proxy, time_ms=NO_TIME, method="POST", path="api/orders", domain=_domain,
              stage=None, resource_path=None, account_id=None, api_id=None, region=None,
              user=None), {}, 200),
    ]
CASES += [
    ("azure-fd-no-time-status-500", "/status/500",
     full("azure-fd", time_ms=NO_TIME, path="/status/500", resource_path="/status/{code}",
          domain="shop-e7f2.z01.azurefd.net", api_id=None), {}, 500),
    ("azure-gw-no-time-inbound-w3c", "/",
     full("azure-gw", time_ms=NO_TIME, domain="shop.westeurope.cloudapp.azure.com",
          api_id=None), W3C, 200),
]
for _case in CASES:
    if _case[0].startswith("azure-") and "x-dd-proxy-api-id" in _case[2]:
        CASE_DIFFERENCES[_case[0]] = NO_ARN
CASE_DIFFERENCES["azure-fd-no-time-status-500"] = CASE_DIFFERENCES["status-500"]


def send(target, path, headers):
    ua = unique_ua("peer")
    r = target.get(path, headers={**headers, "User-Agent": ua})
    return r.status_code, ua


def chunk_of(agent, ua, server_name):
    return one_chunk_where(
        agent, lambda s: s.get("name") == server_name and
        (s.get("meta") or {}).get("http.useragent") == ua, f"{server_name} with {ua}",
        timeout=10)


def spans(chunk):
    names = [s["name"] for s in chunk]
    inferred = [s for s in chunk if s["name"] in GATEWAYS.values()]
    server = [s for s in chunk if s["name"] in SERVER_NAMES]
    assert len(inferred) == 1 and len(server) == 1 and len(chunk) == 2, names
    return inferred[0], server[0]


def sampling_holders(chunk):
    """{sampling key: [names of the spans carrying it]}."""
    out = {}
    for k in SAMPLING_KEYS:
        out[k] = sorted(s["name"] for s in chunk
                        if k in (s.get("meta") or {}) or k in (s.get("metrics") or {}))
    return out


def compare(node_span, httpd_span, allowed=(), same_start=True):
    """The list of differences not in the documented lists (nor in allowed, meta keys).
    same_start: the gateway sent its time, so both spans start then."""
    problems = []
    for f in ("name", "service", "resource", "type", "error"):
        if node_span.get(f) != httpd_span.get(f):
            problems.append(f"{f}: node {node_span.get(f)!r} httpd {httpd_span.get(f)!r}")
    if same_start and abs(node_span["start"] - httpd_span["start"]) > 1000:  # via a float
        problems.append(f"start: node {node_span['start']} httpd {httpd_span['start']}")
    for kind, node_only, httpd_only in (("meta", NODE_ONLY_META, HTTPD_ONLY_META),
                                        ("metrics", NODE_ONLY_METRICS, {})):
        a, b = node_span.get(kind) or {}, httpd_span.get(kind) or {}
        for k in sorted(set(a) | set(b)):
            if k in node_only:
                if k not in a or k in b:
                    problems.append(f"{kind} {k}: documented as dd-trace-js only; node has "
                                    f"{a.get(k)!r}, httpd {b.get(k)!r}")
            elif k in httpd_only:
                if k not in b or k in a:
                    problems.append(f"{kind} {k}: documented as httpd only; node has "
                                    f"{a.get(k)!r}, httpd {b.get(k)!r}")
            elif kind == "meta" and k in allowed:
                if a.get(k) == b.get(k):
                    problems.append(f"meta {k}: documented as different, yet both {a.get(k)!r}")
            elif k not in a or k not in b:
                problems.append(f"{kind} {k}: node {a.get(k)!r} httpd {b.get(k)!r}")
            elif k not in PER_PROCESS and a[k] != b[k]:
                problems.append(f"{kind} {k}: node {a[k]!r} httpd {b[k]!r}")
    return problems


@pytest.mark.parametrize("case,path,gw,ctx,status", CASES, ids=[c[0] for c in CASES])
def test_gateway_span_matches_dd_trace_js(h, node, agent, case, path, gw, ctx, status):
    headers = {**gw, **ctx}
    timed = "x-dd-proxy-request-time-ms" in gw
    t0 = time.time_ns()
    got_node, ua_node = send(node, path, headers)
    t1 = time.time_ns()
    got_httpd, ua_httpd = send(h, path, headers)
    t2 = time.time_ns()
    assert (got_node, got_httpd) == (status, status)
    n_chunk = chunk_of(agent, ua_node, "web.request")
    h_chunk = chunk_of(agent, ua_httpd, "httpd.request")
    n_inf, n_srv = spans(n_chunk)
    h_inf, h_srv = spans(h_chunk)

    problems = compare(n_inf, h_inf, CASE_DIFFERENCES.get(case, {}), same_start=timed)
    if not timed:
        # no gateway time: each tracer's span starts when its request arrived (dd-trace-js's
        # Date.now(), a whole millisecond; httpd's request start, with the server span)
        if not (t0 - 1_000_000 <= n_inf["start"] <= n_srv["start"] and n_inf["start"] <= t1):
            problems.append(f"node start {n_inf['start']} not when its request came "
                            f"[{t0}, {t1}] (server span {n_srv['start']})")
        if not (t1 <= h_inf["start"] == h_srv["start"] <= t2):
            problems.append(f"httpd start {h_inf['start']} not its request's {h_srv['start']} "
                            f"in [{t1}, {t2}]")
        for who, inf, srv in (("node", n_inf, n_srv), ("httpd", h_inf, h_srv)):
            if inf["start"] + inf["duration"] < srv["start"] + srv["duration"]:
                problems.append(f"{who}: gateway span ends before the server span")
    # the same shape: the gateway span continues the inbound context and is the parent of the
    # server span; the server span keeps the configured service and its version
    for who, inf, srv in (("node", n_inf, n_srv), ("httpd", h_inf, h_srv)):
        if srv["parent_id"] != inf["span_id"] or srv["trace_id"] != inf["trace_id"]:
            problems.append(f"{who}: server span is not the gateway span's child")
        if srv["service"] != SERVICE or srv["meta"].get("version") != VERSION:
            problems.append(f"{who}: server span service/version {srv['service']}/"
                            f"{srv['meta'].get('version')}")
    if n_inf["parent_id"] != h_inf["parent_id"]:
        problems.append(f"inbound parent: node {n_inf['parent_id']} httpd {h_inf['parent_id']}")
    if ctx and n_inf["trace_id"] != h_inf["trace_id"]:
        problems.append(f"inbound trace id: node {n_inf['trace_id']} httpd {h_inf['trace_id']}")
    # the sampling decision lives on the gateway span (the local root) in both; dd-trace-js also
    # repeats _sampling_priority_v1 on every span of the chunk (documented)
    n_hold, h_hold = sampling_holders(n_chunk), sampling_holders(h_chunk)
    n_hold["_sampling_priority_v1"] = [x for x in n_hold["_sampling_priority_v1"]
                                       if x not in SERVER_NAMES]
    if n_hold != h_hold:
        problems.append(f"sampling tags on: node {n_hold} httpd {h_hold}")
    assert not problems, "differences from dd-trace-js:\n  " + "\n  ".join(problems) + \
        f"\nnode:\n{dump(n_chunk)}\nhttpd:\n{dump(h_chunk)}"


# --- a sampling rule: the same decision and the same tags where the tracer puts them -------

@pytest.fixture(scope="module")
def node_rule(agent):
    with running_node(agent.url, SERVICE, env={"DD_TRACE_SAMPLE_RATE": "0.5"}) as n:
        yield n


@pytest.fixture(scope="module")
def h_rule(httpd_factory, agent):
    return httpd_factory("peer-compare-rule", config=f"""
DDAgentURL {agent.url}
DDFlushInterval 100
DDService {SERVICE}
DDInferredProxy On
DDSampleRate 0.5
""")


@pytest.mark.parametrize("low", [1, 2, 3, 5, 8, 13, 2**63 + 11, 2**64 - 59])
def test_rule_decision_and_tags_match_dd_trace_js(h_rule, node_rule, agent, low):
    """The caller sent ids but no decision: both decide with the same trace id, under the
    same rule (rate 0.5), on the gateway span."""
    headers = {**full("aws-apigateway"), "x-datadog-trace-id": str(low),
               "x-datadog-parent-id": "77"}
    _, ua_n = send(node_rule, "/", headers)
    _, ua_h = send(h_rule, "/", headers)
    n_inf, _ = spans(chunk_of(agent, ua_n, "web.request"))
    h_inf, _ = spans(chunk_of(agent, ua_h, "httpd.request"))
    keys = ("_sampling_priority_v1", "_dd.agent_psr", "_dd.p.dm", "_dd.p.ksr")

    def pick(s):
        return {k: (s["meta"].get(k), s["metrics"].get(k)) for k in keys}
    assert pick(h_inf) == pick(n_inf), f"httpd:\n{dump(h_inf)}\ndd-trace-js:\n{dump(n_inf)}"
    assert h_inf["meta"]["_dd.p.ksr"] == "0.5", dump(h_inf)
    # Documented difference: dd-trace-js records the rule's and the limiter's rates only on a
    # span without a parent; the module (as dd-trace-py and dd-trace-cpp) on the local root.
    kept = h_inf["metrics"]["_sampling_priority_v1"] > 0  # only a keep consults the limiter
    assert (h_inf["metrics"].get("_dd.rule_psr"), h_inf["metrics"].get("_dd.limit_psr")) == \
        (0.5, 1.0 if kept else None), dump(h_inf)
    assert "_dd.rule_psr" not in n_inf["metrics"], "dd-trace-js now sends _dd.rule_psr here: " \
        "update README's differences\n" + dump(n_inf)
