# SPDX-License-Identifier: Apache-2.0
"""test_620_peers_w3c_and_links.py - issue 15 "already measured": W3C re-parenting and span
links for conflicting contexts, in httpd and next to dd-trace-js (tests/peers/dd-trace-js).

- datadog and tracecontext headers of the same trace with different parent ids: the trace
  continues from traceparent's parent, and the root records the datadog side's last span as
  _dd.parent_id (tracestate p: when sent, else x-datadog-parent-id as 16 hex);
- contexts with different trace ids: the first style's wins, the others become span_links on
  the local root (the v0.4 span field: trace_id, trace_id_high, span_id, attributes
  {reason: terminated_context, context_headers: <style>}, tracestate, flags with bit 31).
dd-trace-js gets the same headers and must agree on parent, _dd.parent_id and the links (it
sends links as the meta tag _dd.span_links, JSON with hex ids: compared after decoding)."""

import json

import pytest

from helpers import NOT_MPM, dump, gateway_headers, one_chunk_where, unique_ua
from httpd import vhost
from peers import running_node

pytestmark = NOT_MPM  # runs on the event and sanitized passes: it does not depend on the MPM

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
HIGH, LOW = int(TRACE[:16], 16), int(TRACE[16:], 16)
TP_PARENT = 0x00f067aa0ba902b7
FLAG31 = 1 << 31


@pytest.fixture(scope="module")
def h(httpd_factory, agent):
    def config(h):
        return f"""
DDAgentURL {agent.url}
DDFlushInterval 100
DDService links-svc
DDPropagationStyle datadog tracecontext b3multi
""" + vhost(h.ports[1], "    DDInferredProxy On")
    return httpd_factory("peer-links", config=config, ports=2)


@pytest.fixture(scope="module")
def node(agent):
    with running_node(agent.url, "links-node",
                      env={"DD_TRACE_PROPAGATION_STYLE": "datadog,tracecontext,b3multi"}) as n:
        yield n


def same_trace_headers(p=True):
    ts = "dd=s:2;o:rum;t.dm:-4" + (";p:00000000000000bb" if p else "") + ",congo=t61rcWkgMzE"
    return {"x-datadog-trace-id": str(LOW), "x-datadog-parent-id": "8",
            "x-datadog-sampling-priority": "2", "x-datadog-origin": "rum",
            "x-datadog-tags": f"_dd.p.tid={HIGH:016x},_dd.p.dm=-4",
            "traceparent": f"00-{TRACE}-{TP_PARENT:016x}-01", "tracestate": ts}


CONFLICT = {"x-datadog-trace-id": "7", "x-datadog-parent-id": "8",
            "x-datadog-sampling-priority": "1",
            "traceparent": f"00-{TRACE}-{TP_PARENT:016x}-01",
            "tracestate": "dd=s:2;p:00000000000000bb,congo=t61rcWkgMzE",
            "x-b3-traceid": "0000000000000009", "x-b3-spanid": "000000000000000a",
            "x-b3-sampled": "0"}


def request(target, headers, server_name, agent, port=None):
    ua = unique_ua("links")
    kw = {"port": port} if port else {}
    r = target.get("/", headers={**headers, "User-Agent": ua}, **kw)
    assert r.status_code == 200
    chunk = one_chunk_where(agent, lambda s: s["name"] == server_name and
                            s["meta"].get("http.useragent") == ua, ua, timeout=10)
    ids = {s["span_id"] for s in chunk}
    roots = [s for s in chunk if s["parent_id"] not in ids]
    assert len(roots) == 1, dump(chunk)
    return chunk, roots[0]


def httpd_links(span):
    """span_links of the module's span, checked the way the agent reads them (span.proto)."""
    out = []
    for link in span.get("span_links", []):
        assert set(link) <= {"trace_id", "trace_id_high", "span_id", "attributes", "tracestate",
                             "flags"}, link
        for k in ("trace_id", "trace_id_high", "span_id"):
            assert isinstance(link[k], int) and 0 <= link[k] < 2**64, link
        if "flags" in link:
            assert link["flags"] & FLAG31, f"flags without bit 31: {link}"
        out.append({"trace_id": f"{link['trace_id_high']:016x}{link['trace_id']:016x}",
                    "span_id": f"{link['span_id']:016x}", "attributes": link.get("attributes"),
                    "flags": link["flags"] & 1 if "flags" in link else None,
                    "tracestate": link.get("tracestate")})
    return out


def node_links(span):
    raw = span["meta"].get("_dd.span_links")
    return [{"trace_id": ln["trace_id"], "span_id": ln["span_id"],
             "attributes": ln.get("attributes"), "flags": ln.get("flags"),
             "tracestate": ln.get("tracestate")} for ln in json.loads(raw)] if raw else []


@pytest.mark.parametrize("p", [True, False], ids=["tracestate-p", "no-p"])
def test_w3c_reparenting(h, agent, p):
    chunk, root = request(h, same_trace_headers(p), "httpd.request", agent)
    assert root["trace_id"] == LOW and root["meta"].get("_dd.p.tid") == f"{HIGH:016x}", dump(root)
    assert root["parent_id"] == TP_PARENT, dump(root)  # traceparent's parent
    assert root["meta"].get("_dd.parent_id") == ("00000000000000bb" if p else
                                                 "0000000000000008"), dump(root)
    assert root["metrics"]["_sampling_priority_v1"] == 2
    assert "span_links" not in root, dump(root)  # one trace: nothing to link


def test_w3c_reparenting_on_the_gateway_span(h, agent):
    gw = gateway_headers("aws-apigateway", method="GET", path="/x", domain="gw.example")
    chunk, root = request(h, {**same_trace_headers(False), **gw}, "httpd.request", agent,
                          port=h.ports[1])
    assert root["name"] == "aws.apigateway", dump(chunk)
    assert root["parent_id"] == TP_PARENT and root["meta"]["_dd.parent_id"] == \
        "0000000000000008", dump(root)


def test_conflicting_contexts_become_span_links(h, agent):
    chunk, root = request(h, CONFLICT, "httpd.request", agent)
    assert (root["trace_id"], root["parent_id"]) == (7, 8), dump(root)
    assert "_dd.parent_id" not in root["meta"], dump(root)
    assert httpd_links(root) == [
        {"trace_id": TRACE, "span_id": f"{TP_PARENT:016x}",
         "attributes": {"reason": "terminated_context", "context_headers": "tracecontext"},
         "flags": 1, "tracestate": CONFLICT["tracestate"]},
        {"trace_id": f"{0:016x}{9:016x}", "span_id": f"{10:016x}",
         "attributes": {"reason": "terminated_context", "context_headers": "b3multi"},
         "flags": 0, "tracestate": None},
    ], dump(root)
    others = [s for s in chunk if s is not root]
    assert all("span_links" not in s for s in others), dump(chunk)


def test_links_on_the_gateway_span(h, agent):
    gw = gateway_headers("aws-apigateway", method="GET", path="/x", domain="gw.example")
    chunk, root = request(h, {**CONFLICT, **gw}, "httpd.request", agent, port=h.ports[1])
    assert root["name"] == "aws.apigateway" and len(httpd_links(root)) == 2, dump(chunk)


@pytest.mark.parametrize("headers", [same_trace_headers(True), same_trace_headers(False),
                                     CONFLICT], ids=["same-trace-p", "same-trace-no-p",
                                                     "conflict"])
def test_same_as_dd_trace_js(h, node, agent, headers):
    _, hr = request(h, headers, "httpd.request", agent)
    _, nr = request(node, headers, "web.request", agent)
    got = {"trace": (hr["trace_id"], hr["meta"].get("_dd.p.tid")), "parent": hr["parent_id"],
           "_dd.parent_id": hr["meta"].get("_dd.parent_id"),
           "priority": hr["metrics"]["_sampling_priority_v1"], "links": httpd_links(hr)}
    want = {"trace": (nr["trace_id"], nr["meta"].get("_dd.p.tid")), "parent": nr["parent_id"],
            "_dd.parent_id": nr["meta"].get("_dd.parent_id"),
            "priority": nr["metrics"]["_sampling_priority_v1"], "links": node_links(nr)}
    assert got == want, f"httpd:\n{dump(hr)}\ndd-trace-js:\n{dump(nr)}"
