# SPDX-License-Identifier: Apache-2.0
"""test_622_peers_dd_trace_js_behind_httpd.py - issue 15 item 1(b): Datadog's Node.js tracer
(tests/peers/dd-trace-js) behind httpd's mod_proxy continues httpd's trace.

For each propagation style httpd can write that dd-trace-js reads (datadog, tracecontext,
b3multi, and the default datadog + tracecontext), and each way a sampling decision can come
about (inbound priorities -1, 0, 1, 2 with their decision maker and a propagated tag; httpd's
own default decision; DDSampleRate 0 and 1 rules; a gateway request), the tracer's span must
have httpd's 128-bit trace id, httpd's server span as parent, httpd's decision and its _dd.p.*
tags, and no gateway span of its own (httpd stripped the x-dd-proxy* headers). b3multi carries
only "sampled" (1/0) and no tags: there the tracer gets priority 1/0, as from any b3 caller.
X-Ray is not a style dd-trace-js reads, so it is not in this list (test_600 covers it)."""

import pytest

from helpers import NOT_MPM, dump, gateway_headers, one_chunk_where, unique_ua
from httpd import vhost
from peers import node_unavailable, running_node

pytestmark = [NOT_MPM,  # the event and sanitized passes: it does not depend on the MPM
              pytest.mark.skipif(node_unavailable() is not None,
                                 reason=f"Node peer unavailable: {node_unavailable()}")]

STYLES = {"datadog": "datadog", "tracecontext": "tracecontext", "b3multi": "b3multi",
          "default": None}
PLAIN, GATEWAY, RATE0, RATE1 = 0, 1, 2, 3
HIGH, LOW, PARENT = 0x66a1b2c300000000, 0xa3ce929d0e0e4736, 0x00f067aa0ba902b7
USR = "u-42"


@pytest.fixture(scope="module")
def node(agent):
    with running_node(agent.url, "node-behind",
                      env={"DD_TRACE_PROPAGATION_STYLE_EXTRACT": "datadog,tracecontext,b3multi"}) as n:
        yield n


@pytest.fixture(scope="module")
def httpds(httpd_factory, agent, node):
    made = {}
    for name, style in STYLES.items():
        def config(h, style=style):
            return f"""
DDAgentURL {agent.url}
DDFlushInterval 100
DDService httpd-front
{f"DDPropagationStyle {style}" if style else ""}
ProxyPass /node/ {node.url}/
""" + vhost(h.ports[GATEWAY], "    DDInferredProxy On") \
                + vhost(h.ports[RATE0], "    DDSampleRate 0") \
                + vhost(h.ports[RATE1], "    DDSampleRate 1")
        made[name] = httpd_factory(f"peer-behind-{name}", config=config, ports=4)
    return made


def inbound(style, priority, dm="-4"):
    """A caller's context in the style httpd reads (the first one it is configured with)."""
    if style in ("datadog", "default"):
        return {"x-datadog-trace-id": str(LOW), "x-datadog-parent-id": str(PARENT),
                "x-datadog-sampling-priority": str(priority),
                "x-datadog-tags": f"_dd.p.tid={HIGH:016x},_dd.p.dm={dm},_dd.p.usr.id={USR}"}
    if style == "tracecontext":
        return {"traceparent": f"00-{HIGH:016x}{LOW:016x}-{PARENT:016x}-"
                               f"{'01' if priority > 0 else '00'}",
                "tracestate": f"dd=s:{priority};t.dm:{dm};t.usr.id:{USR},other=1"}
    return {"x-b3-traceid": f"{HIGH:016x}{LOW:016x}", "x-b3-spanid": f"{PARENT:016x}",
            "x-b3-sampled": "1" if priority > 0 else "0"}


def cases(style):
    """(name, port, headers, inbound priority or None)."""
    out = [(f"inbound-{p}", PLAIN, inbound(style, p), p) for p in (-1, 0, 1, 2)]
    out += [("httpd-decides", PLAIN, {}, None), ("rule-drop", RATE0, {}, None),
            ("rule-keep", RATE1, {}, None),
            ("gateway", GATEWAY, {**inbound(style, 2),
                                  **gateway_headers("aws-apigateway", method="GET", path="/x",
                                                    domain="gw.example", stage="prod")}, 2)]
    return out


def root(chunk):
    ids = {s["span_id"] for s in chunk}
    roots = [s for s in chunk if s["parent_id"] not in ids]
    assert len(roots) == 1, dump(chunk)
    return roots[0]


def tags(span):
    return {k: v for k, v in span["meta"].items() if k.startswith("_dd.p.")}


@pytest.mark.parametrize("style", list(STYLES))
def test_dd_trace_js_continues_httpds_trace(httpds, node, agent, style):
    h = httpds[style]
    sent = []
    for name, port, headers, prio in cases(style):
        ua = unique_ua(f"behind-{style}-{name}")
        r = h.get("/node/hello", port=h.ports[port], headers={**headers, "User-Agent": ua})
        assert r.status_code == 200, (name, r.status_code, r.text[:200])
        seen = r.json()["headers"]
        sent.append((name, prio, ua, seen))
    problems = []
    for name, prio, ua, seen in sent:
        hc = one_chunk_where(agent, lambda s: s["name"] == "httpd.request" and
                             s["meta"].get("http.useragent") == ua, f"httpd {ua}", timeout=10,
                             settle=0)
        nc = one_chunk_where(agent, lambda s: s["name"] == "web.request" and
                             s["meta"].get("http.useragent") == ua, f"node {ua}", timeout=10,
                             settle=0)
        srv = [s for s in hc if s["name"] == "httpd.request"][0]
        h_root, n_root = root(hc), root(nc)
        n_span = [s for s in nc if s["name"] == "web.request"][0]
        h_prio = int(h_root["metrics"]["_sampling_priority_v1"])
        n_prio = int(n_root["metrics"]["_sampling_priority_v1"])
        want = []
        if [s["name"] for s in nc] != ["web.request"]:
            want.append(f"node made {[s['name'] for s in nc]} (a second gateway span?)")
        if any(k.startswith("x-dd-proxy") for k in seen):
            want.append("x-dd-proxy* headers reached the backend")
        if n_span["trace_id"] != srv["trace_id"]:
            want.append(f"trace id {n_span['trace_id']} != httpd's {srv['trace_id']}")
        if n_root["meta"].get("_dd.p.tid") != h_root["meta"].get("_dd.p.tid"):
            want.append(f"_dd.p.tid {n_root['meta'].get('_dd.p.tid')} != httpd's "
                        f"{h_root['meta'].get('_dd.p.tid')}")
        if n_span["parent_id"] != srv["span_id"]:
            want.append(f"parent {n_span['parent_id']} is not httpd's span {srv['span_id']}")
        if prio is not None and style != "b3multi" and h_prio != prio:
            want.append(f"httpd did not keep the inbound priority {prio}: {h_prio}")
        if style == "b3multi":
            if n_prio != (1 if h_prio > 0 else 0):
                want.append(f"b3: node priority {n_prio} for httpd's {h_prio}")
        else:
            if n_prio != h_prio:
                want.append(f"node priority {n_prio} != httpd's {h_prio}")
            ht, nt = tags(h_root), tags(n_root)
            if {k: v for k, v in nt.items() if k in ht} != ht or set(nt) - set(ht) - {"_dd.p.dm"}:
                want.append(f"_dd.p.* not kept: httpd {ht} node {nt}")
            # a decision maker travels with a keep; the node tracer sets its own for a drop
            if h_prio > 0 and nt.get("_dd.p.dm") != ht.get("_dd.p.dm"):
                want.append(f"_dd.p.dm {nt.get('_dd.p.dm')} != httpd's {ht.get('_dd.p.dm')}")
            if prio is not None and ht.get("_dd.p.usr.id") != USR:
                want.append(f"httpd lost the inbound _dd.p.usr.id: {ht}")
        if want:
            problems.append(f"--- {style} {name}:\n  " + "\n  ".join(want) +
                            f"\nhttpd:\n{dump(hc)}\nnode:\n{dump(nc)}\nnode got: {seen}")
    assert not problems, "\n".join(problems)
