# SPDX-License-Identifier: Apache-2.0
"""test_600_propagation.py - CONTRACT sections 3.3 and 4 (issue 3): trace context in and out.

Every request goes through mod_proxy (ProxyPass /api/) to the recording backend, so each test
sees both sides: what the agent got (the payload ids) and what httpd sent downstream (the
outbound headers, with the server span as parent, in every configured style).

httpds (DDPropagationStyle is a main-server directive, so one httpd per style list):
  default  nothing set (datadog tracecontext); a vhost with DDInferredProxy On; a vhost with
           DDTrustInboundContext Off; <Location /untrusted/> Off, <Location /untrusted/again/> On
  all      datadog tracecontext b3multi xray; a vhost with DDInferredProxy On
  xray     xray datadog
  none     none
  (started by single tests: DD_TRACE_PROPAGATION_STYLE fallbacks, good and bad)

Outbound expectations are computed from the payload: trace id = server span's trace_id (low 64
bits) + the chunk root's _dd.p.tid (high 64 bits), parent = the server span, priority / origin /
_dd.p.* = the chunk root's. Each test also checks those payload values against the inbound
headers it sent."""

import http.client
import re
import time

import pytest

from helpers import (SERVER_SPAN, by_name, collect, dump, gateway_headers, server_span,
                     unique_ua)
from httpd import vhost

DEFAULT = ("datadog", "tracecontext")
ALL = ("datadog", "tracecontext", "b3multi", "xray")
XRAY_DD = ("xray", "datadog")
GW, NOTRUST = 1, 2
BACKEND_BODY = b"backend ok\n"

# What identifies each style's context among the headers (lowercase).
STYLE_KEY = {"datadog": "x-datadog-trace-id", "tracecontext": "traceparent",
             "b3multi": "x-b3-traceid", "xray": "x-amzn-trace-id"}
OUT_HEADERS = ("x-datadog-trace-id", "x-datadog-parent-id", "x-datadog-sampling-priority",
               "x-datadog-origin", "x-datadog-tags", "traceparent", "tracestate",
               "x-b3-traceid", "x-b3-spanid", "x-b3-sampled", "x-amzn-trace-id")

# Inbound ids used below (several >= 2^63).
TC_HIGH, TC_LOW, TC_PARENT = 0x4bf92f3577b34da6, 0xa3ce929d0e0e4736, 0x00f067aa0ba902b7
TC_TRACE = f"{TC_HIGH:016x}{TC_LOW:016x}"
XR_HIGH, XR_LOW, XR_PARENT = 0x5f3e2a1b9c8d7e6f, 0xfedcba9876543210, 0x53995c3f42cd8ad8
XR_ROOT = f"1-{XR_HIGH >> 32:08x}-{XR_HIGH & 0xffffffff:08x}{XR_LOW:016x}"
DD_HIGH = 0x66a1b2c300000000
U64_MAX = 2**64 - 1


# --- fixtures --------------------------------------------------------------------------------

def base(agent, backend, styles=None):
    return f"""
DDAgentURL {agent.url}
DDFlushInterval 100
DDService prop-svc
{f"DDPropagationStyle {styles}" if styles else ""}
ProxyPass /api/ {backend.url}/
ProxyPass /untrusted/ {backend.url}/
"""


@pytest.fixture(scope="module")
def h_default(httpd_factory, agent, backend):
    def config(h):
        return base(agent, backend) + """
<Location /untrusted/>
    DDTrustInboundContext Off
</Location>
<Location /untrusted/again/>
    DDTrustInboundContext On
</Location>
""" + vhost(h.ports[GW], "    DDInferredProxy On") \
            + vhost(h.ports[NOTRUST], "    DDTrustInboundContext Off")
    return httpd_factory("prop-default", config=config, ports=3)


@pytest.fixture(scope="module")
def h_all(httpd_factory, agent, backend):
    def config(h):
        return base(agent, backend, "datadog tracecontext b3multi xray") \
            + vhost(h.ports[GW], "    DDInferredProxy On")
    return httpd_factory("prop-all", config=config, ports=2)


@pytest.fixture(scope="module")
def h_xray(httpd_factory, agent, backend):
    return httpd_factory("prop-xray", config=base(agent, backend, "xray datadog"))


@pytest.fixture(scope="module")
def h_none(httpd_factory, agent, backend):
    return httpd_factory("prop-none", config=base(agent, backend, "none"))


# --- requests and lookups --------------------------------------------------------------------

def send(h, path, headers=(), port=None, method="GET"):
    """One request on a fresh connection with exactly these headers, in order (a list of pairs
    may repeat a name; a dict may not). Returns (status, body, ua)."""
    ua = unique_ua("prop")
    items = list(headers.items() if isinstance(headers, dict) else headers)
    conn = http.client.HTTPConnection("127.0.0.1", port or h.port, timeout=10)
    try:
        conn.putrequest(method, path, skip_accept_encoding=True)
        conn.putheader("User-Agent", ua)
        for k, v in items:
            conn.putheader(k, v)
        conn.endheaders()
        resp = conn.getresponse()
        return resp.status, resp.read(), ua
    finally:
        conn.close()


def request(h, agent, backend, headers=(), path="/api/prop", port=None, method="GET"):
    """Request through mod_proxy: asserts 200 + the backend's body; returns (chunk, backend
    request, ua)."""
    status, body, ua = send(h, path, headers, port, method)
    assert (status, body) == (200, BACKEND_BODY), (status, body)
    req = backend.by_header("User-Agent", ua)
    assert req is not None, f"the backend never saw {ua}"
    return collect(agent, [ua])[ua], req, ua


def root_of(chunk):
    ids = {s["span_id"] for s in chunk}
    roots = [s for s in chunk if s["parent_id"] not in ids]
    assert len(roots) == 1, dump(chunk)
    return roots[0]


def priority(root):
    return int(root["metrics"]["_sampling_priority_v1"])


def trace_ids(chunk):
    """(high, low) of the chunk: low from trace_id, high from the root's _dd.p.tid (0 if none)."""
    root = root_of(chunk)
    tid = root["meta"].get("_dd.p.tid")
    assert tid is None or re.fullmatch(r"[0-9a-f]{16}", tid), dump(root)
    return (int(tid, 16) if tid else 0), root["trace_id"]


def log_trace_id(h, ua):
    lines = h.access_log_line_for(f'"{ua}"')
    assert len(lines) == 1, f"access log lines for {ua}: {lines}"
    return lines[0].split()[-2]


def parse_dd_tags(v):
    return dict(m.split("=", 1) for m in v.split(",")) if v else {}


def dd_member(tracestate):
    """(dict of the dd= member's key:value pairs, [other members]); dd= must come first."""
    members = [m.strip() for m in tracestate.split(",")]
    assert members[0].startswith("dd="), tracestate
    pairs = dict(p.split(":", 1) for p in members[0][3:].split(";"))
    return pairs, members[1:]


def expect_outbound(req, chunk, styles, sent=(), other_tracestate=()):
    """The backend got this trace's context in every style in `styles`, with the server span as
    parent; styles not configured are absent (unless the client sent them: they pass through).
    `sent`: lowercase header names the client sent."""
    srv, root = server_span(chunk), root_of(chunk)
    high, low = trace_ids(chunk)
    span, prio = srv["span_id"], priority(root)
    origin = root["meta"].get("_dd.origin")
    ptags = {k: v for k, v in root["meta"].items() if k.startswith("_dd.p.")}
    full = f"{high:016x}{low:016x}"
    got = {}
    for k, v in req.header_items:
        got.setdefault(k.lower(), []).append(v)
    one = {k: v[0] for k, v in got.items()}
    problems = [f"{k} sent {len(got[k])} times" for k in OUT_HEADERS if len(got.get(k, ())) > 1]

    def want(name, value):
        if one.get(name) != value:
            problems.append(f"{name}: got {one.get(name)!r}, want {value!r}")

    sent = {s.lower() for s in sent}
    for style, key in STYLE_KEY.items():
        if style not in styles and key not in sent and key in one:
            problems.append(f"{key} sent downstream but {style} is not configured")
    if "datadog" in styles:
        want("x-datadog-trace-id", str(low))
        want("x-datadog-parent-id", str(span))
        want("x-datadog-sampling-priority", str(prio))
        want("x-datadog-origin", origin)
        if parse_dd_tags(one.get("x-datadog-tags")) != ptags:
            problems.append(f"x-datadog-tags: got {one.get('x-datadog-tags')!r}, want {ptags}")
    if "tracecontext" in styles:
        want("traceparent", f"00-{full}-{span:016x}-{'01' if prio > 0 else '00'}")
        ts = one.get("tracestate")
        if not ts:
            problems.append("no tracestate")
        else:
            pairs, others = dd_member(ts)
            expected = {"s": str(prio), "p": f"{span:016x}"}
            if origin:
                expected["o"] = origin
            for k, v in ptags.items():
                if k != "_dd.p.tid":
                    expected["t." + k[len("_dd.p."):]] = v.replace("=", "~")
            if pairs != expected:
                problems.append(f"tracestate dd= member: got {pairs}, want {expected}")
            if others != list(other_tracestate):
                problems.append(f"tracestate others: got {others}, want {list(other_tracestate)}")
    if "b3multi" in styles:
        want("x-b3-traceid", full if high else f"{low:016x}")
        want("x-b3-spanid", f"{span:016x}")
        want("x-b3-sampled", "1" if prio > 0 else "0")
    if "xray" in styles:
        want("x-amzn-trace-id", f"Root=1-{full[:8]}-{full[8:]};Parent={span:016x};"
                                f"Sampled={'1' if prio > 0 else '0'}")
    assert not problems, ("outbound context wrong:\n  " + "\n  ".join(problems) +
                          f"\nbackend headers: {req.header_items}\npayload:\n{dump(chunk)}")


def expect_payload(chunk, low, high, parent, prio, origin=None, ptags=None):
    """The chunk continues the inbound context exactly."""
    srv, root = server_span(chunk), root_of(chunk)
    assert srv["trace_id"] == low, f"trace_id {srv['trace_id']} != {low}\n{dump(chunk)}"
    assert root["parent_id"] == parent, f"parent_id {root['parent_id']} != {parent}\n{dump(chunk)}"
    if high:
        assert root["meta"].get("_dd.p.tid") == f"{high:016x}", dump(root)
    else:
        assert "_dd.p.tid" not in root["meta"], dump(root)
    assert priority(root) == prio, dump(root)
    assert root["meta"].get("_dd.origin") == origin, dump(root)
    for k, v in (ptags or {}).items():
        assert root["meta"].get(k) == v, f"{k} != {v!r}\n{dump(root)}"


def expect_log_id(h, ua, high, low):
    """%{dd.trace_id}n: 32 lowercase hex for a 128-bit id, decimal for a 64-bit one."""
    want = f"{high:016x}{low:016x}" if high else str(low)
    assert log_trace_id(h, ua) == want


def time_based_high(high):
    return high & 0xffffffff == 0 and abs((high >> 32) - time.time()) < 600


def expect_new_trace(chunk, not_lows=()):
    """A trace started here: no parent, a fresh 128-bit id (high = unix seconds << 32), the
    local default decision, nothing continued from upstream."""
    srv, root = server_span(chunk), root_of(chunk)
    assert root is srv and srv["parent_id"] == 0, dump(chunk)
    high, low = trace_ids(chunk)
    assert time_based_high(high), f"_dd.p.tid {high:016x} is not a new 128-bit id\n{dump(chunk)}"
    assert low not in not_lows, dump(chunk)
    assert "_dd.origin" not in root["meta"], dump(root)
    assert priority(root) == 1 and root["meta"].get("_dd.p.dm") == "-0", dump(root)


def module_log_above_debug(h, mark):
    return [ln for ln in h.error_log_text(mark).splitlines()
            if re.search(r"\[dd_proxy:(?!debug|trace\d)\w+\]", ln)]


# --- each style in, every style out ----------------------------------------------------------

# (id, inbound headers, (low, high, parent, priority, origin, _dd.p.* expected on the root))
STYLE_CASES = [
    ("datadog-64", {"x-datadog-trace-id": "1234567890123456789", "x-datadog-parent-id": "987654321",
                    "x-datadog-sampling-priority": "1"},
     (1234567890123456789, 0, 987654321, 1, None, {})),
    ("datadog-128-tags", {"x-datadog-trace-id": "42", "x-datadog-parent-id": "187",
                          "x-datadog-sampling-priority": "2", "x-datadog-origin": "synthetics",
                          "x-datadog-tags": f"_dd.p.tid={DD_HIGH:016x},_dd.p.dm=-4"},
     (42, DD_HIGH, 187, 2, "synthetics", {"_dd.p.dm": "-4"})),
    ("datadog-ids-over-2^63", {"x-datadog-trace-id": str(U64_MAX),
                               "x-datadog-parent-id": str(2**63 + 1),
                               "x-datadog-sampling-priority": "0"},
     (U64_MAX, 0, 2**63 + 1, 0, None, {})),
    ("tracecontext-128", {"traceparent": f"00-{TC_TRACE}-{TC_PARENT:016x}-01",
                          "tracestate": "dd=s:2;o:rum;t.dm:-4;p:00f067aa0ba902b7,"
                                        "congo=t61rcWkgMzE"},
     (TC_LOW, TC_HIGH, TC_PARENT, 2, "rum", {"_dd.p.dm": "-4",
                                             "_dd.parent_id": "00f067aa0ba902b7"})),
    ("tracecontext-unsampled", {"traceparent": f"00-{TC_TRACE}-{TC_PARENT:016x}-00"},
     (TC_LOW, TC_HIGH, TC_PARENT, 0, None, {})),
    ("tracecontext-future-version", {"traceparent": f"cc-{TC_TRACE}-{TC_PARENT:016x}-01-later"},
     (TC_LOW, TC_HIGH, TC_PARENT, 1, None, {})),
    ("b3multi-128", {"x-b3-traceid": TC_TRACE, "x-b3-spanid": f"{TC_PARENT:016x}",
                     "x-b3-sampled": "1"},
     (TC_LOW, TC_HIGH, TC_PARENT, 1, None, {})),
    ("b3multi-64", {"x-b3-traceid": f"{TC_LOW:016x}", "x-b3-spanid": f"{TC_PARENT:016x}",
                    "x-b3-sampled": "0"},
     (TC_LOW, 0, TC_PARENT, 0, None, {})),
    ("xray", {"X-Amzn-Trace-Id": f"Root={XR_ROOT};Parent={XR_PARENT:016x};Sampled=1"},
     (XR_LOW, XR_HIGH, XR_PARENT, 1, None, {})),
    ("xray-extra-fields", {"X-Amzn-Trace-Id": f"Self=1-67891234-12456789abcdef012345678;"
                                              f"Root={XR_ROOT};Parent={XR_PARENT:016x};"
                                              f"Sampled=0;Lineage=a87bd80c:1|68fd508a:5"},
     (XR_LOW, XR_HIGH, XR_PARENT, 0, None, {})),
    # Root only (ALB, API Gateway for an uninstrumented caller): the trace, no parent (issue 17)
    ("xray-root-only", {"X-Amzn-Trace-Id": f"Root={XR_ROOT};Sampled=1"},
     (XR_LOW, XR_HIGH, 0, 1, None, {})),
]


@pytest.mark.parametrize("ctx,want", [c[1:] for c in STYLE_CASES], ids=[c[0] for c in STYLE_CASES])
def test_each_style_in_every_style_out(h_all, agent, backend, ctx, want):
    low, high, parent, prio, origin, ptags = want
    chunk, req, ua = request(h_all, agent, backend, ctx)
    assert len(chunk) == 1, dump(chunk)
    expect_payload(chunk, low, high, parent, prio, origin, ptags)
    others = ["congo=t61rcWkgMzE"] if "tracestate" in ctx else []
    expect_outbound(req, chunk, ALL, sent=[k.lower() for k in ctx], other_tracestate=others)
    expect_log_id(h_all, ua, high, low)


def test_default_styles_datadog_in_datadog_and_tracecontext_out(h_default, agent, backend):
    ctx = {"x-datadog-trace-id": str(2**63 + 7), "x-datadog-parent-id": str(U64_MAX),
           "x-datadog-sampling-priority": "1"}
    chunk, req, ua = request(h_default, agent, backend, ctx)
    expect_payload(chunk, 2**63 + 7, 0, U64_MAX, 1)
    expect_outbound(req, chunk, DEFAULT, sent=ctx)
    assert req.header("traceparent").startswith(f"00-0000000000000000{2**63 + 7:016x}-")
    expect_log_id(h_default, ua, 0, 2**63 + 7)


def test_default_styles_tracecontext_in(h_default, agent, backend):
    ctx = {"traceparent": f"00-{TC_TRACE}-{TC_PARENT:016x}-01"}
    chunk, req, ua = request(h_default, agent, backend, ctx)
    expect_payload(chunk, TC_LOW, TC_HIGH, TC_PARENT, 1)
    expect_outbound(req, chunk, DEFAULT, sent=ctx)
    # the 128-bit id leaves as x-datadog-trace-id (low 64 bits) + _dd.p.tid (high 64 bits)
    assert req.header("x-datadog-trace-id") == str(TC_LOW)
    assert parse_dd_tags(req.header("x-datadog-tags")).get("_dd.p.tid") == f"{TC_HIGH:016x}"
    expect_log_id(h_default, ua, TC_HIGH, TC_LOW)


@pytest.mark.parametrize("ctx", [
    {"x-b3-traceid": TC_TRACE, "x-b3-spanid": f"{TC_PARENT:016x}", "x-b3-sampled": "1"},
    {"X-Amzn-Trace-Id": f"Root={XR_ROOT};Parent={XR_PARENT:016x};Sampled=1"},
], ids=["b3multi", "xray"])
def test_unconfigured_style_is_not_read(h_default, agent, backend, ctx):
    chunk, req, _ = request(h_default, agent, backend, ctx)
    expect_new_trace(chunk, not_lows={TC_LOW, XR_LOW})
    expect_outbound(req, chunk, DEFAULT, sent=[k.lower() for k in ctx])


def test_new_trace_is_128_bit_and_goes_out_in_every_style(h_all, agent, backend):
    chunk, req, ua = request(h_all, agent, backend)
    expect_new_trace(chunk)
    expect_outbound(req, chunk, ALL)
    high, low = trace_ids(chunk)
    expect_log_id(h_all, ua, high, low)


# --- precedence and round trips --------------------------------------------------------------

def test_first_style_with_a_valid_context_wins(h_all, h_xray, agent, backend):
    dd = {"x-datadog-trace-id": "1111", "x-datadog-parent-id": "2222",
          "x-datadog-sampling-priority": "1"}
    tp = {"traceparent": f"00-{TC_TRACE}-{TC_PARENT:016x}-01"}
    xr = {"X-Amzn-Trace-Id": f"Root={XR_ROOT};Parent={XR_PARENT:016x};Sampled=1"}
    # all: datadog before tracecontext before xray
    chunk, _, _ = request(h_all, agent, backend, {**xr, **tp, **dd})
    expect_payload(chunk, 1111, 0, 2222, 1)
    # an invalid datadog context is skipped: tracecontext is the first valid one
    chunk, _, _ = request(h_all, agent, backend, {**xr, **tp, "x-datadog-trace-id": "zz",
                                                   "x-datadog-parent-id": "2222"})
    expect_payload(chunk, TC_LOW, TC_HIGH, TC_PARENT, 1)
    # xray datadog: X-Ray first
    chunk, req, _ = request(h_xray, agent, backend, {**dd, **xr})
    expect_payload(chunk, XR_LOW, XR_HIGH, XR_PARENT, 1)
    expect_outbound(req, chunk, XRAY_DD)


def test_xray_root_in_same_root_out_and_datadog_ids(h_xray, agent, backend):
    ctx = {"X-Amzn-Trace-Id": f"Root={XR_ROOT};Parent={XR_PARENT:016x};Sampled=1"}
    chunk, req, ua = request(h_xray, agent, backend, ctx)
    expect_payload(chunk, XR_LOW, XR_HIGH, XR_PARENT, 1)
    srv = server_span(chunk)
    assert req.header("X-Amzn-Trace-Id") == f"Root={XR_ROOT};Parent={srv['span_id']:016x};Sampled=1"
    assert req.header("x-datadog-trace-id") == str(XR_LOW)
    assert req.header("x-datadog-parent-id") == str(srv["span_id"])
    assert parse_dd_tags(req.header("x-datadog-tags")).get("_dd.p.tid") == f"{XR_HIGH:016x}"
    expect_outbound(req, chunk, XRAY_DD)
    expect_log_id(h_xray, ua, XR_HIGH, XR_LOW)


def test_datadog_128_in_xray_root_out(h_xray, agent, backend):
    ctx = {"x-datadog-trace-id": str(XR_LOW), "x-datadog-parent-id": "5",
           "x-datadog-sampling-priority": "0", "x-datadog-tags": f"_dd.p.tid={XR_HIGH:016x}"}
    chunk, req, _ = request(h_xray, agent, backend, ctx)
    expect_payload(chunk, XR_LOW, XR_HIGH, 5, 0)
    srv = server_span(chunk)
    assert req.header("X-Amzn-Trace-Id") == f"Root={XR_ROOT};Parent={srv['span_id']:016x};Sampled=0"
    expect_outbound(req, chunk, XRAY_DD, sent=ctx)


def test_round_trip_through_three_httpds(h_xray, h_default, h_all, agent, backend):
    """X-Ray -> [xray datadog] -> datadog headers -> [default] -> traceparent -> [all] -> X-Ray:
    one trace all along, each hop the child of the previous server span, the Root unchanged."""
    ctx = {"X-Amzn-Trace-Id": f"Root={XR_ROOT};Parent={XR_PARENT:016x};Sampled=1"}
    c1, r1, _ = request(h_xray, agent, backend, ctx)
    hop1 = {k: r1.header(k) for k in ("x-datadog-trace-id", "x-datadog-parent-id",
                                       "x-datadog-sampling-priority", "x-datadog-tags")
            if r1.header(k) is not None}
    c2, r2, _ = request(h_default, agent, backend, hop1)
    expect_payload(c2, XR_LOW, XR_HIGH, server_span(c1)["span_id"], 1)
    hop2 = {k: r2.header(k) for k in ("traceparent", "tracestate") if r2.header(k) is not None}
    assert hop2["traceparent"].startswith(f"00-{XR_HIGH:016x}{XR_LOW:016x}-"), hop2
    c3, r3, _ = request(h_all, agent, backend, hop2)
    expect_payload(c3, XR_LOW, XR_HIGH, server_span(c2)["span_id"], 1)
    assert r3.header("X-Amzn-Trace-Id") == \
        f"Root={XR_ROOT};Parent={server_span(c3)['span_id']:016x};Sampled=1"
    # the decision maker travels with the trace too
    dm = [root_of(c)["meta"].get("_dd.p.dm") for c in (c1, c2, c3)]
    assert dm[0] == dm[1] == dm[2], dm


# --- gateway: the inferred span continues the inbound context -------------------------------

def test_inferred_span_continues_datadog_context(h_default, agent, backend):
    """system-tests' vector (Test_AWS_API_Gateway_Inferred_Span_Creation_v2 ...distributed)."""
    ctx = {"x-datadog-trace-id": "1", "x-datadog-parent-id": "2", "x-datadog-origin": "rum",
           "x-datadog-sampling-priority": "2"}
    gw = gateway_headers("aws-apigateway", method="GET", path="/api/dist", domain="d.example")
    chunk, req, ua = request(h_default, agent, backend, {**gw, **ctx}, path="/api/dist",
                             port=h_default.ports[GW])
    inf, srv = by_name(chunk, "aws.apigateway"), by_name(chunk, SERVER_SPAN)
    assert (inf["trace_id"], inf["parent_id"]) == (1, 2), dump(chunk)
    assert (srv["trace_id"], srv["parent_id"]) == (1, inf["span_id"]), dump(chunk)
    assert root_of(chunk) is inf
    assert inf["metrics"].get("_sampling_priority_v1") == 2, dump(inf)
    assert inf["meta"].get("_dd.origin") == "rum", dump(inf)
    assert "_dd.p.tid" not in inf["meta"], dump(inf)
    expect_outbound(req, chunk, DEFAULT, sent=ctx)
    assert req.header("x-datadog-parent-id") == str(srv["span_id"])  # the server span, not inf
    expect_log_id(h_default, ua, 0, 1)


def test_inferred_span_continues_tracecontext(h_all, agent, backend):
    """The W3C vector of the spec (PHP propagated_tags_before_span_start.phpt)."""
    ctx = {"traceparent": "00-0000000000000000000000000000002a-0000000000000001-01",
           "tracestate": "dd=p:00000000000000bb;s:1;o:rum;t.dm:-4;t.usr.id:12345"}
    gw = gateway_headers("aws-httpapi", method="GET", path="/api/w3c", domain="w.example")
    chunk, req, _ = request(h_all, agent, backend, {**gw, **ctx}, path="/api/w3c",
                            port=h_all.ports[GW])
    inf, srv = by_name(chunk, "aws.httpapi"), by_name(chunk, SERVER_SPAN)
    assert (inf["trace_id"], inf["parent_id"]) == (42, 1), dump(chunk)
    assert srv["parent_id"] == inf["span_id"], dump(chunk)
    expect_payload(chunk, 42, 0, 1, 1, "rum", {"_dd.p.dm": "-4", "_dd.p.usr.id": "12345",
                                               "_dd.parent_id": "00000000000000bb"})
    for k in ("_dd.rule_psr", "_dd.agent_psr", "_dd.limit_psr"):
        assert k not in inf["metrics"] and k not in srv["metrics"], dump(chunk)
    expect_outbound(req, chunk, ALL, sent=ctx)


def test_inferred_span_128_bit_xray(h_all, agent, backend):
    ctx = {"X-Amzn-Trace-Id": f"Root={XR_ROOT};Parent={XR_PARENT:016x};Sampled=0"}
    gw = gateway_headers("aws-apigateway", method="GET", path="/api/xr", domain="x.example")
    chunk, req, _ = request(h_all, agent, backend, {**gw, **ctx}, path="/api/xr",
                            port=h_all.ports[GW])
    inf = by_name(chunk, "aws.apigateway")
    assert root_of(chunk) is inf
    expect_payload(chunk, XR_LOW, XR_HIGH, XR_PARENT, 0)
    expect_outbound(req, chunk, ALL, sent=ctx)


# --- trust -----------------------------------------------------------------------------------

TRUST_CTX = {"x-datadog-trace-id": "777", "x-datadog-parent-id": "888",
             "x-datadog-sampling-priority": "2", "x-datadog-origin": "rum",
             "traceparent": "00-000000000000000000000000000003e8-0000000000000378-01"}


@pytest.mark.parametrize("path,port,trusted", [
    ("/api/t", None, True),
    ("/untrusted/t", None, False),
    ("/untrusted/again/t", None, True),
    ("/api/t", NOTRUST, False),
], ids=["server", "location-off", "location-on-again", "vhost-off"])
def test_trust_inbound_context_per_location(h_default, agent, backend, path, port, trusted):
    port = h_default.ports[port] if port else None
    chunk, req, ua = request(h_default, agent, backend, TRUST_CTX, path=path, port=port)
    if trusted:
        expect_payload(chunk, 777, 0, 888, 2, "rum")
    else:
        expect_new_trace(chunk, not_lows={777, 1000})
    # downstream: our trace (a new one where trust is off), never the caller's
    expect_outbound(req, chunk, DEFAULT)
    high, low = trace_ids(chunk)
    expect_log_id(h_default, ua, high, low)


# --- DDPropagationStyle none and the environment fallback -----------------------------------

def test_style_none_reads_and_writes_nothing(h_none, agent, backend):
    chunk, req, ua = request(h_none, agent, backend, TRUST_CTX)
    expect_new_trace(chunk, not_lows={777, 1000})
    srv = server_span(chunk)
    ours = {str(srv["trace_id"]), str(srv["span_id"]), f"{srv['trace_id']:016x}",
            f"{srv['span_id']:016x}"}
    leaked = [(k, v) for k, v in req.header_items if any(x in v for x in ours)]
    assert not leaked, f"style none, yet our ids went downstream: {leaked}"
    high, low = trace_ids(chunk)
    expect_log_id(h_none, ua, high, low)
    # without inbound headers: nothing of any style reaches the backend
    chunk, req, _ = request(h_none, agent, backend)
    names = {k.lower() for k, _ in req.header_items}
    assert not names & set(OUT_HEADERS), req.header_items


def test_env_propagation_style(httpd_factory, agent, backend):
    h = httpd_factory("prop-env", config=base(agent, backend),
                      env={"DD_TRACE_PROPAGATION_STYLE": "b3multi,xray"})
    both = {"x-datadog-trace-id": "31", "x-datadog-parent-id": "32",
            "x-b3-traceid": f"{TC_LOW:016x}", "x-b3-spanid": f"{TC_PARENT:016x}",
            "x-b3-sampled": "1"}
    chunk, req, _ = request(h, agent, backend, both)
    expect_payload(chunk, TC_LOW, 0, TC_PARENT, 1)
    expect_outbound(req, chunk, ("b3multi", "xray"), sent=both)
    assert req.header("x-datadog-trace-id") == "31"  # not ours: passed through untouched
    assert req.header("traceparent") is None
    # the directive beats the environment
    h2 = httpd_factory("prop-env-directive", config=base(agent, backend, "datadog"),
                       env={"DD_TRACE_PROPAGATION_STYLE": "b3multi,xray"})
    chunk, req, _ = request(h2, agent, backend, both)
    expect_payload(chunk, 31, 0, 32, 1)
    expect_outbound(req, chunk, ("datadog",), sent=both)


@pytest.mark.allow_log(r"DDP1005")
def test_bad_env_propagation_style_warns_once_and_default_applies(httpd_factory, agent, backend):
    h = httpd_factory("prop-env-bad", config=base(agent, backend),
                      env={"DD_TRACE_PROPAGATION_STYLE": "datadog,bogus"})
    ctx = {"x-datadog-trace-id": "51", "x-datadog-parent-id": "52"}
    chunk, req, _ = request(h, agent, backend, ctx)
    expect_payload(chunk, 51, 0, 52, 1)
    expect_outbound(req, chunk, DEFAULT, sent=ctx)
    warns = [ln for ln in h.error_log_text().splitlines() if "DDP1005" in ln]
    assert len(warns) == 1, warns
    assert re.search(r":warn\].*ignoring.*DD_TRACE_PROPAGATION_STYLE.*bogus", warns[0]), warns
    # like every other line of the module, tagged with its name (so LogLevel dd_proxy:... and
    # log searches find it)
    assert "[dd_proxy:warn]" in warns[0], f"not tagged as the module's: {warns[0]}"


# --- malformed context: served unchanged, a new trace, nothing logged above debug -----------

H32 = TC_TRACE
P16 = f"{TC_PARENT:016x}"
MALFORMED = [
    # datadog
    ("dd-trace-id-not-decimal", [("x-datadog-trace-id", "12a4"), ("x-datadog-parent-id", "5")]),
    ("dd-trace-id-hex", [("x-datadog-trace-id", "0x1f"), ("x-datadog-parent-id", "5")]),
    ("dd-trace-id-negative", [("x-datadog-trace-id", "-42"), ("x-datadog-parent-id", "5")]),
    ("dd-trace-id-over-2^64", [("x-datadog-trace-id", str(2**64)), ("x-datadog-parent-id", "5")]),
    ("dd-trace-id-empty", [("x-datadog-trace-id", ""), ("x-datadog-parent-id", "5")]),
    ("dd-trace-id-inner-space", [("x-datadog-trace-id", "12 34"), ("x-datadog-parent-id", "5")]),
    ("dd-trace-id-zero", [("x-datadog-trace-id", "0"), ("x-datadog-parent-id", "5")]),
    ("dd-parent-id-zero", [("x-datadog-trace-id", "77"), ("x-datadog-parent-id", "0")]),
    ("dd-parent-id-bad", [("x-datadog-trace-id", "77"), ("x-datadog-parent-id", "5x")]),
    ("dd-parent-id-missing", [("x-datadog-trace-id", "77"),
                              ("x-datadog-sampling-priority", "2")]),
    ("dd-trace-id-repeated", [("x-datadog-trace-id", "77"), ("x-datadog-trace-id", "78"),
                              ("x-datadog-parent-id", "5")]),
    ("dd-parent-id-repeated", [("x-datadog-trace-id", "77"), ("x-datadog-parent-id", "5"),
                               ("x-datadog-parent-id", "6")]),
    ("dd-tags-oversized-no-ids", [("x-datadog-tags", "_dd.p.dm=-4," + "_dd.p.x=" + "a" * 600)]),
    ("dd-tags-malformed-bad-ids", [("x-datadog-trace-id", "x"), ("x-datadog-parent-id", "5"),
                                   ("x-datadog-tags", "garbage")]),
    # tracecontext
    ("tp-uppercase", [("traceparent", f"00-{H32.upper()}-{P16.upper()}-01")]),
    ("tp-trace-id-31-hex", [("traceparent", f"00-{H32[:31]}-{P16}-01")]),
    ("tp-trace-id-33-hex", [("traceparent", f"00-{H32}a-{P16}-01")]),
    ("tp-parent-15-hex", [("traceparent", f"00-{H32}-{P16[:15]}-01")]),
    ("tp-parent-17-hex", [("traceparent", f"00-{H32}-{P16}0-01")]),
    ("tp-flags-1-hex", [("traceparent", f"00-{H32}-{P16}-1")]),
    ("tp-non-hex", [("traceparent", f"00-{H32[:31]}g-{P16}-01")]),
    ("tp-zero-trace-id", [("traceparent", f"00-{'0' * 32}-{P16}-01")]),
    ("tp-zero-parent-id", [("traceparent", f"00-{H32}-{'0' * 16}-01")]),
    ("tp-version-ff", [("traceparent", f"ff-{H32}-{P16}-01")]),
    ("tp-version-00-extra-field", [("traceparent", f"00-{H32}-{P16}-01-extra")]),
    ("tp-unknown-version-bad-flags", [("traceparent", f"cc-{H32}-{P16}-zz")]),
    ("tp-unknown-version-short-trace", [("traceparent", f"cc-{H32[:30]}-{P16}-01")]),
    ("tp-unknown-version-glued-field", [("traceparent", f"cc-{H32}-{P16}-01.extra")]),
    ("tp-version-not-hex", [("traceparent", f"0g-{H32}-{P16}-01")]),
    ("tp-garbage", [("traceparent", "hello world")]),
    ("tp-repeated", [("traceparent", f"00-{H32}-{P16}-01"),
                     ("traceparent", f"00-{'1' * 32}-{P16}-01")]),
    # b3multi
    ("b3-trace-id-15-hex", [("x-b3-traceid", f"{TC_LOW:016x}"[:15]), ("x-b3-spanid", P16)]),
    ("b3-trace-id-20-hex", [("x-b3-traceid", H32[:20]), ("x-b3-spanid", P16)]),
    ("b3-trace-id-non-hex", [("x-b3-traceid", "q" * 16), ("x-b3-spanid", P16)]),
    ("b3-trace-id-zero", [("x-b3-traceid", "0" * 32), ("x-b3-spanid", P16)]),
    ("b3-span-id-zero", [("x-b3-traceid", H32), ("x-b3-spanid", "0" * 16)]),
    ("b3-span-id-short", [("x-b3-traceid", H32), ("x-b3-spanid", P16[:8])]),
    ("b3-span-id-missing", [("x-b3-traceid", H32), ("x-b3-sampled", "1")]),
    ("b3-trace-id-repeated", [("x-b3-traceid", H32), ("x-b3-traceid", "1" * 32),
                              ("x-b3-spanid", P16)]),
    # xray
    ("xray-parent-without-root", [("X-Amzn-Trace-Id", f"Parent={XR_PARENT:016x};Sampled=1")]),
    ("xray-root-version-2", [("X-Amzn-Trace-Id", f"Root=2{XR_ROOT[1:]};Parent={XR_PARENT:016x}")]),
    ("xray-root-short", [("X-Amzn-Trace-Id", f"Root={XR_ROOT[:-1]};Parent={XR_PARENT:016x}")]),
    ("xray-root-long", [("X-Amzn-Trace-Id", f"Root={XR_ROOT}0;Parent={XR_PARENT:016x}")]),
    ("xray-root-non-hex", [("X-Amzn-Trace-Id", f"Root={XR_ROOT[:-1]}x;Parent={XR_PARENT:016x}")]),
    ("xray-root-bad-dashes", [("X-Amzn-Trace-Id",
                               f"Root=1-{XR_ROOT[2:10]}{XR_ROOT[11:]}-;Parent={XR_PARENT:016x}")]),
    ("xray-root-zero", [("X-Amzn-Trace-Id",
                         f"Root=1-00000000-{'0' * 24};Parent={XR_PARENT:016x};Sampled=1")]),
    ("xray-parent-15-hex", [("X-Amzn-Trace-Id", f"Root={XR_ROOT};Parent={XR_PARENT:016x}"[:-1])]),
    ("xray-parent-zero", [("X-Amzn-Trace-Id", f"Root={XR_ROOT};Parent={'0' * 16}")]),
    ("xray-parent-non-hex", [("X-Amzn-Trace-Id", f"Root={XR_ROOT};Parent={'z' * 16}")]),
    ("xray-two-roots", [("X-Amzn-Trace-Id",
                         f"Root={XR_ROOT};Root={XR_ROOT};Parent={XR_PARENT:016x}")]),
    ("xray-repeated-header", [("X-Amzn-Trace-Id", f"Root={XR_ROOT};Parent={XR_PARENT:016x}"),
                              ("X-Amzn-Trace-Id", f"Root={XR_ROOT};Parent={XR_PARENT:016x}")]),
    ("xray-garbage", [("X-Amzn-Trace-Id", ";;==;Root;Parent=")]),
]
MALFORMED_LOWS = {77, 78, 5, 0x1f, 1234, TC_LOW, XR_LOW, int("1" * 16, 16)}


def test_malformed_context_is_served_unchanged_as_a_new_trace(h_all, agent, backend):
    """Every malformed case of issue 3, sent to the httpd that reads all four styles: 200 with
    the backend's body, a new trace, our fresh context downstream (the inbound headers
    replaced), and no dd_proxy line above debug in the error log."""
    mark = h_all.log_mark()
    sent = []
    for name, headers in MALFORMED:
        status, body, ua = send(h_all, f"/api/bad/{name}", headers)
        sent.append((name, headers, status, body, ua))
    chunks = collect(agent, [s[4] for s in sent])
    failures = []
    for name, headers, status, body, ua in sent:
        try:
            assert (status, body) == (200, BACKEND_BODY), (status, body)
            chunk = chunks[ua]
            assert len(chunk) == 1, dump(chunk)
            expect_new_trace(chunk, MALFORMED_LOWS)
            req = backend.by_header("User-Agent", ua)
            assert req is not None, "backend never saw it"
            expect_outbound(req, chunk, ALL)
            high, low = trace_ids(chunk)
            expect_log_id(h_all, ua, high, low)
        except AssertionError as e:
            failures.append(f"--- {name} {headers}:\n{e}")
    assert not failures, f"{len(failures)} of {len(MALFORMED)} cases failed:\n" + \
        "\n".join(failures)
    noisy = module_log_above_debug(h_all, mark)
    assert not noisy, "dd_proxy logged above debug:\n" + "\n".join(noisy)


# x-datadog-tags that are oversized or malformed are ignored, as Datadog tracers do: the valid
# ids still continue the trace, no tag of the bad header is kept or forwarded, and the root
# says why (_dd.propagation_error, dd-trace-cpp's values).
BAD_TAGS = [
    ("oversized", [("x-datadog-tags", "_dd.p.dm=-4,_dd.p.big=" + "a" * 600)], "extract_max_size"),
    ("no-equals", [("x-datadog-tags", "_dd.p.dm=-4,garbage")], "decoding_error"),
    ("repeated", [("x-datadog-tags", "_dd.p.dm=-4"), ("x-datadog-tags", "_dd.p.big=1")],
     "decoding_error"),
]


def test_bad_x_datadog_tags_are_ignored_the_ids_continue(h_all, agent, backend):
    mark = h_all.log_mark()
    sent = []
    for i, (name, tags, err) in enumerate(BAD_TAGS):
        ids = [("x-datadog-trace-id", str(2**63 + i)), ("x-datadog-parent-id", "9"),
               ("x-datadog-sampling-priority", "1")]
        status, body, ua = send(h_all, f"/api/badtags/{name}", ids + tags)
        sent.append((name, 2**63 + i, err, status, body, ua))
    chunks = collect(agent, [s[-1] for s in sent])
    failures = []
    for name, low, err, status, body, ua in sent:
        try:
            assert (status, body) == (200, BACKEND_BODY), (status, body)
            chunk = chunks[ua]
            expect_payload(chunk, low, 0, 9, 1)
            root = root_of(chunk)
            kept = {k: v for k, v in root["meta"].items() if k.startswith("_dd.p.")}
            assert kept == {}, f"tags of a bad x-datadog-tags kept: {kept}"
            assert root["meta"].get("_dd.propagation_error") == err, dump(root)
            req = backend.by_header("User-Agent", ua)
            expect_outbound(req, chunk, ALL)
            assert req.header("x-datadog-tags") is None, req.header_items
        except AssertionError as e:
            failures.append(f"--- {name}:\n{e}")
    assert not failures, "\n".join(failures)
    noisy = module_log_above_debug(h_all, mark)
    assert not noisy, "dd_proxy logged above debug:\n" + "\n".join(noisy)


@pytest.mark.parametrize("tid", ["zzzzzzzzzzzzzzzz", "640cfd8d0000000", "640cfd8d000000001"])
def test_malformed_tid_continues_as_64_bit(h_all, agent, backend, tid):
    ctx = {"x-datadog-trace-id": "4242", "x-datadog-parent-id": "9",
           "x-datadog-sampling-priority": "1", "x-datadog-tags": f"_dd.p.tid={tid},_dd.p.dm=-4"}
    chunk, req, ua = request(h_all, agent, backend, ctx)
    expect_payload(chunk, 4242, 0, 9, 1, ptags={"_dd.p.dm": "-4"})
    assert root_of(chunk)["meta"].get("_dd.propagation_error", "").startswith("malformed_tid"), \
        dump(chunk)
    expect_outbound(req, chunk, ALL, sent=ctx)
    expect_log_id(h_all, ua, 0, 4242)
