# SPDX-License-Identifier: Apache-2.0
"""test_630_baggage.py - issue 15 item 3: W3C baggage, DD_TRACE_PROPAGATION_BEHAVIOR_EXTRACT
(DDTrustInboundContext On|Off|Restart) and DD_TRACE_PROPAGATION_EXTRACT_FIRST, in httpd and
next to Datadog's Node.js tracer (tests/peers/dd-trace-js), which is the judge.

- baggage is a default style, as in the tracers (datadog,tracecontext,baggage): the header a
  backend behind mod_proxy gets is the one dd-trace-js would send for the same inbound headers
  (items normalized and re-encoded, properties dropped, limits 64 items / 8192 bytes; a
  malformed header goes no further);
- DDBaggageTagKeys (default user.id session.id account.id) become baggage.<key> tags on the
  local root when the trace continues an inbound context, as the tracer's are;
- Restart: a new trace whose root links to the caller's context (reason
  propagation_behavior_extract), baggage kept; Off (ignore): a new trace, no link, no baggage;
- without the style, the inbound header passes through untouched.
"""

import json

import pytest

from helpers import (NOT_MPM, counters, dump, gateway_headers, one_chunk_where, status_location,
                     unique_ua)
from httpd import vhost
from peers import running_node

pytestmark = NOT_MPM  # propagation does not depend on the MPM

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
HIGH, LOW = int(TRACE[:16], 16), int(TRACE[16:], 16)
DD_CTX = {"x-datadog-trace-id": "7", "x-datadog-parent-id": "8",
          "x-datadog-sampling-priority": "1"}
TC_CTX = {"traceparent": f"00-{TRACE}-00f067aa0ba902b7-01", "tracestate": "dd=s:1,congo=t61"}
PLAIN, NOBAG, ENVTAGS = 0, 1, 2

# (case, baggage header): each goes to httpd and to dd-trace-js
BAGGAGE = {
    "tags": "user.id=u-1, session.id = s%201 ;ttl=5,account.id=acc,other=x",
    "encode": "k=a b%2C%3B/:@&+$,u=Am%C3%A9lie,bad%=100%,e=%zz%41",
    "duplicates": "a=1,b=2,a=3",
    "empty-members": ",,user.id=u, ,b=2,",
    "malformed": "user.id=u-1,noequals",
    "bad-key": "user.id=u-1,a b=1",
    "too-many": ",".join(f"k{i}=v" for i in range(70)),
    "too-long": "user.id=u," + "big=" + "x" * 8200,
    "near-limit": "user.id=u," + "big=" + "x" * 8170,
}


@pytest.fixture(scope="module")
def h(httpd_factory, agent, backend):
    def config(h):
        return f"""
DDAgentURL {agent.url}
DDFlushInterval 100
DDService bag-svc
LimitRequestFieldSize 65536
ProxyPass /api/ {backend.url}/
ProxyPass /restart/ {backend.url}/
ProxyPass /ignore/ {backend.url}/
<Location /restart/>
    DDTrustInboundContext Restart
</Location>
<Location /ignore/>
    DDTrustInboundContext Off
</Location>
{status_location()}""" + vhost(h.ports[1], "    DDInferredProxy On")
    return httpd_factory("baggage", config=config, ports=2)


@pytest.fixture(scope="module")
def h_nobag(httpd_factory, agent, backend):
    def config(h):
        return f"""
DDAgentURL {agent.url}
DDFlushInterval 100
DDService bag-off-svc
DDPropagationStyle datadog tracecontext
ProxyPass /api/ {backend.url}/
"""
    return httpd_factory("baggage-off", config=config)


@pytest.fixture(scope="module")
def h_env(httpd_factory, agent, backend):
    """The environment's settings, as the tracers read them."""
    def config(h):
        return f"""
DDAgentURL {agent.url}
DDFlushInterval 100
DDService bag-env-svc
ProxyPass /api/ {backend.url}/
"""
    return httpd_factory("baggage-env", config=config, env={
        "DD_TRACE_BAGGAGE_TAG_KEYS": "*", "DD_TRACE_BAGGAGE_MAX_ITEMS": "2",
        "DD_TRACE_PROPAGATION_BEHAVIOR_EXTRACT": "restart",
        "DD_TRACE_PROPAGATION_EXTRACT_FIRST": "true"})


@pytest.fixture(scope="module")
def node(agent):
    with running_node(agent.url, "bag-node") as n:
        yield n


@pytest.fixture(scope="module")
def node_restart(agent):
    with running_node(agent.url, "bag-node-restart",
                      env={"DD_TRACE_PROPAGATION_BEHAVIOR_EXTRACT": "restart"}) as n:
        yield n


@pytest.fixture(scope="module")
def node_env(agent):
    with running_node(agent.url, "bag-node-env", env={
            "DD_TRACE_BAGGAGE_TAG_KEYS": "*", "DD_TRACE_BAGGAGE_MAX_ITEMS": "2",
            "DD_TRACE_PROPAGATION_BEHAVIOR_EXTRACT": "restart",
            "DD_TRACE_PROPAGATION_EXTRACT_FIRST": "true"}) as n:
        yield n


def through_httpd(h, agent, backend, path, headers):
    """(root span, what the backend got as baggage)."""
    ua = unique_ua("bag")
    r = h.get(path, headers={**headers, "User-Agent": ua})
    assert r.status_code == 200, r.text
    req = backend.by_header("User-Agent", ua)
    assert req is not None, f"the backend never saw {ua}"
    chunk = one_chunk_where(agent, lambda s: s["name"] == "httpd.request" and
                            s["meta"].get("http.useragent") == ua, ua, timeout=10)
    ids = {s["span_id"] for s in chunk}
    roots = [s for s in chunk if s["parent_id"] not in ids or s["parent_id"] == 0]
    return roots[0], req.header("baggage")


def through_node(node, agent, headers):
    """(dd-trace-js's server span, the baggage it would send on)."""
    ua = unique_ua("bag-node")
    r = node.get("/", headers={**headers, "User-Agent": ua})
    assert r.status_code == 200, r.text
    span = one_chunk_where(agent, lambda s: s["service"] == node.service and
                           s["meta"].get("http.useragent") == ua, ua, timeout=10)
    server = [s for s in span if s["meta"].get("http.useragent") == ua][0]
    return server, r.json()["injected"].get("baggage")


def baggage_tags(span):
    return {k: v for k, v in span["meta"].items() if k.startswith("baggage.")}


@pytest.mark.parametrize("case", list(BAGGAGE))
def test_baggage_as_dd_trace_js_sends_it(h, node, agent, backend, case):
    headers = {**DD_CTX, "baggage": BAGGAGE[case]}
    root, sent = through_httpd(h, agent, backend, "/api/bag", headers)
    nspan, nsent = through_node(node, agent, headers)
    assert sent == nsent, f"httpd sent {sent!r}, dd-trace-js {nsent!r}"
    # the tags: the tracer also keeps tags of valid members before a malformed one, a
    # partial effect of a header it otherwise drops; httpd drops the header whole (README)
    want = {} if case in ("malformed", "bad-key") else baggage_tags(nspan)
    assert baggage_tags(root) == want, dump(root)
    assert root["trace_id"] == 7 and root["parent_id"] == 8, dump(root)


def test_what_the_cases_mean(h, agent, backend):
    """The same cases in absolute terms, so that a tracer that changed would be noticed."""
    root, sent = through_httpd(h, agent, backend, "/api/bag", {**DD_CTX,
                                                               "baggage": BAGGAGE["tags"]})
    assert sent == "user.id=u-1,session.id=s%201,account.id=acc,other=x"
    assert baggage_tags(root) == {"baggage.user.id": "u-1", "baggage.session.id": "s 1",
                                  "baggage.account.id": "acc"}, dump(root)
    _, sent = through_httpd(h, agent, backend, "/api/bag", {"baggage": BAGGAGE["encode"]})
    assert sent == "k=a%20b%2C%3B%2F%3A%40%26%2B%24,u=Am%C3%A9lie,bad%=100%25,e=%25zzA"
    _, sent = through_httpd(h, agent, backend, "/api/bag", {"baggage": BAGGAGE["too-many"]})
    assert sent == ",".join(f"k{i}=v" for i in range(64))
    _, sent = through_httpd(h, agent, backend, "/api/bag", {"baggage": BAGGAGE["too-long"]})
    assert sent == "user.id=u"
    for case in ("malformed", "bad-key"):
        _, sent = through_httpd(h, agent, backend, "/api/bag", {"baggage": BAGGAGE[case]})
        assert sent is None, case


def test_no_context_no_tags_but_baggage_goes_on(h, node, agent, backend):
    headers = {"baggage": "user.id=u-2,x=1"}
    root, sent = through_httpd(h, agent, backend, "/api/bag", headers)
    nspan, nsent = through_node(node, agent, headers)
    assert sent == nsent == "user.id=u-2,x=1"
    assert baggage_tags(root) == baggage_tags(nspan) == {}, dump(root)


def test_tracecontext_context_takes_tags(h, node, agent, backend):
    headers = {**TC_CTX, "baggage": "account.id=a-9"}
    root, sent = through_httpd(h, agent, backend, "/api/bag", headers)
    nspan, _ = through_node(node, agent, headers)
    assert baggage_tags(root) == baggage_tags(nspan) == {"baggage.account.id": "a-9"}


def test_tags_where_dd_trace_js_puts_them_under_a_gateway(h, node, agent, backend):
    """With a gateway span the local root is the gateway's: which span gets the tags must be
    the tracer's choice too."""
    gw = gateway_headers("aws-apigateway", path="/bag", domain="gw.example", stage="prod")
    headers = {**DD_CTX, **gw, "baggage": "user.id=u-5"}
    ua = unique_ua("bag-gw")
    r = h.get("/api/bag", headers={**headers, "User-Agent": ua}, port=h.ports[1])
    assert r.status_code == 200
    chunk = one_chunk_where(agent, lambda s: s["name"] == "aws.apigateway" and
                            s["meta"].get("http.useragent") == ua, ua, timeout=10)
    mine = {s["name"]: baggage_tags(s) for s in chunk}
    ua = unique_ua("bag-gw-node")
    assert node.get("/bag", headers={**headers, "User-Agent": ua}).status_code == 200
    nchunk = one_chunk_where(agent, lambda s: s["service"] == node.service and
                             s["meta"].get("http.useragent") == ua, ua, timeout=10)
    theirs = {("httpd.request" if s["name"] == "web.request" else s["name"]): baggage_tags(s)
              for s in nchunk}
    assert mine == theirs, (dump(chunk), dump(nchunk))
    assert mine["aws.apigateway"] == {"baggage.user.id": "u-5"}


def test_counters(h, agent, backend):
    before = counters(h)
    through_httpd(h, agent, backend, "/api/bag", {"baggage": BAGGAGE["malformed"]})
    through_httpd(h, agent, backend, "/api/bag", {"baggage": BAGGAGE["too-many"]})
    through_httpd(h, agent, backend, "/api/bag", {"baggage": BAGGAGE["tags"]})
    after = counters(h)
    assert after["baggage_malformed"] - before["baggage_malformed"] == 1
    assert after["baggage_truncated"] - before["baggage_truncated"] == 1


def test_without_the_style_the_header_passes_untouched(h_nobag, agent, backend):
    raw = "user.id=u-1 ;p=1, bad"
    root, sent = through_httpd(h_nobag, agent, backend, "/api/bag", {**DD_CTX, "baggage": raw})
    assert sent == raw
    assert baggage_tags(root) == {}, dump(root)


def link_view(link):
    return {"trace_id": f"{link['trace_id_high']:016x}{link['trace_id']:016x}",
            "span_id": f"{link['span_id']:016x}", "attributes": link.get("attributes"),
            "flags": link["flags"] & 1 if "flags" in link else None,
            "tracestate": link.get("tracestate")}


def node_link_view(span):
    raw = span["meta"].get("_dd.span_links")
    return [{"trace_id": ln["trace_id"], "span_id": ln["span_id"],
             "attributes": ln.get("attributes"), "flags": ln.get("flags"),
             "tracestate": ln.get("tracestate")} for ln in json.loads(raw)] if raw else []


@pytest.mark.parametrize("ctx", ["datadog", "tracecontext", "both"])
def test_restart_as_dd_trace_js(h, node_restart, agent, backend, ctx):
    headers = {"datadog": DD_CTX, "tracecontext": TC_CTX,
               "both": {**DD_CTX, **TC_CTX}}[ctx]
    headers = {**headers, "baggage": "user.id=u-3"}
    root, sent = through_httpd(h, agent, backend, "/restart/bag", headers)
    nspan, nsent = through_node(node_restart, agent, headers)
    # a new trace: neither the inbound trace id nor its parent
    assert root["trace_id"] not in (7, LOW) and root["parent_id"] == 0, dump(root)
    assert nspan["trace_id"] not in (7, LOW) and nspan["parent_id"] == 0, dump(nspan)
    assert [link_view(ln) for ln in root.get("span_links", [])] == node_link_view(nspan), \
        dump(root)
    assert root["span_links"][0]["attributes"]["reason"] == "propagation_behavior_extract"
    assert sent == nsent == "user.id=u-3"  # baggage survives a restart
    assert baggage_tags(root) == baggage_tags(nspan) == {}
    assert "_dd.p.tid" in root["meta"] and root["meta"]["_dd.p.tid"] != TRACE[:16]


def test_ignore_drops_context_and_baggage(h, agent, backend):
    root, sent = through_httpd(h, agent, backend, "/ignore/bag",
                               {**DD_CTX, "baggage": "user.id=u-4"})
    assert root["trace_id"] != 7 and root["parent_id"] == 0 and "span_links" not in root
    assert sent is None
    assert baggage_tags(root) == {}


def test_environment_as_dd_trace_js(h_env, node_env, agent, backend):
    """DD_TRACE_BAGGAGE_TAG_KEYS=*, _MAX_ITEMS=2, BEHAVIOR_EXTRACT=restart, EXTRACT_FIRST."""
    headers = {**DD_CTX, **TC_CTX, "baggage": "a=1,b=2,c=3"}
    root, sent = through_httpd(h_env, agent, backend, "/api/bag", headers)
    nspan, nsent = through_node(node_env, agent, headers)
    assert sent == nsent == "a=1,b=2"
    # extract first: only the datadog context, linked without the traceparent's tracestate
    assert [link_view(ln) for ln in root.get("span_links", [])] == node_link_view(nspan), \
        dump(root)
    assert len(root["span_links"]) == 1 and root["span_links"][0]["trace_id"] == 7


def test_continue_with_all_tag_keys(httpd_factory, agent, backend):
    def config(h):
        return f"""
DDAgentURL {agent.url}
DDFlushInterval 100
DDBaggageTagKeys *
DDBaggageMaxItems 3
DDBaggageMaxBytes 20
ProxyPass /api/ {backend.url}/
"""
    h = httpd_factory("baggage-directives", config=config)
    root, sent = through_httpd(h, agent, backend, "/api/bag",
                               {**DD_CTX, "baggage": "a=1,b=2,c=x y z w,d=4"})
    # read: "a=1," "b=2," "c=x y z w," = 18 bytes, then d is past 20; sent: c's value
    # encoded ("c=x%20y%20z%20w,", 16) no longer fits, as in the tracer
    assert sent == "a=1,b=2"
    assert baggage_tags(root) == {"baggage.a": "1", "baggage.b": "2",
                                  "baggage.c": "x y z w"}, dump(root)
