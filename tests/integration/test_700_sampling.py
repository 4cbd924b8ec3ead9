# SPDX-License-Identifier: Apache-2.0
"""test_700_sampling.py - CONTRACT section 5 (issue 4): the sampling decision at the local root.

Decisions are made deterministic by sending known trace ids (x-datadog-trace-id + parent id,
no priority) and comparing with the keep test computed here:
    keep iff (trace_id_low * 1111111111111111111) mod 2^64 <= rate * 2^64
Rules (and DDSampleRate, a catch-all rule) give 2 / -1 with _dd.p.dm=-3 (kept only),
_dd.rule_psr and _dd.limit_psr (when the limiter was asked: rule keeps); agent rates and the
default give 1 / 0 with _dd.p.dm=-1 / -0 (kept only) and _dd.agent_psr.

httpds:
  sampling  one port per setting (DDRateLimit high enough never to interfere):
            0 nothing set; RATE DDSampleRate 0.5; RULES rules on the gateway's domain and on
            httpd's service (DDInferredProxy On); MIXED a rule + DDSampleRate; GLOB glob, name and
            tag rules (DDInferredProxy On); PRIO DDSampleRate 0 (inbound priorities still win)
  single    one child process (limiter and agent rates are per process) with its own capture
            agent: DDRateLimit 5 and a rule at rate 1 (LIMIT), agent rates on 0 / OTHER / GW
  (started by single tests: env fallbacks, good and bad; `apache2 -t` for bad rules)"""

import http.client
import json
import random
import re
import time

import pytest

import conftest
from helpers import SERVER_SPAN, by_name, collect, dump, gateway_headers, unique_ua
from httpd import vhost

# The single-process httpd under prefork (MaxRequestWorkers 1) tells us that it is full.
ALLOW_LOG = [r"\[mpm_prefork:error\].*AH00161: server reached MaxRequestWorkers"]

KNUTH = 1111111111111111111
RATE, RULES, MIXED, GLOB, PRIO = 1, 2, 3, 4, 5
LIMIT, OTHER, SGW = 1, 2, 3
BACKEND_BODY = b"backend ok\n"
SAMPLING_METRICS = ("_sampling_priority_v1", "_dd.rule_psr", "_dd.agent_psr", "_dd.limit_psr")

# Known trace ids: fixed, spread over the whole 64-bit range (half of them >= 2^63).
IDS = [(random.Random(700 + i).getrandbits(63) | 1) + (2**63 if i % 2 else 0) for i in range(24)]

# the gateway's domain vs. httpd's own service
RULES_RULES = [{"service": "gw.example.com", "sample_rate": 0.2},
               {"service": "httpd-svc", "sample_rate": 0.7}]
MIXED_RULES = [{"resource": "GET /api/r3/*", "sample_rate": 0.3}]
GLOB_RULES = [
    {"service": "glob-svc-?", "resource": "GET /api/keep/*", "sample_rate": 1},
    {"name": "azure.*", "sample_rate": 0},
    {"tags": {"http.useragent": "ddtest-tagdrop*"}, "sample_rate": 0},
    {"tags": {"team": "pay*", "http.method": "POST"}, "sample_rate": 0},
    {"service": "glob-*", "sample_rate": 0.5},
]


def keep(trace_id, rate):
    return (trace_id * KNUTH) % 2**64 <= rate * 2**64


def both_outcomes(ids, rate):
    """The id set must show both decisions at this rate, or the test proves little."""
    kept = sum(keep(i, rate) for i in ids)
    assert 0 < kept < len(ids), f"ids give only one outcome at rate {rate}"


# --- fixtures --------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def h(httpd_factory, agent, backend):
    def config(h):
        return f"""
DDAgentURL {agent.url}
DDFlushInterval 100
DDService samp-main
DDRateLimit 100000
DDPropagationStyle datadog tracecontext xray
ProxyPass /api/ {backend.url}/
""" + vhost(h.ports[RATE], "    DDSampleRate 0.5") \
            + vhost(h.ports[RULES], f"""    DDService httpd-svc
    DDInferredProxy On
    DDSamplingRules '{json.dumps(RULES_RULES)}'""") \
            + vhost(h.ports[MIXED], f"""    DDSamplingRules '{json.dumps(MIXED_RULES)}'
    DDSampleRate 0.8""") \
            + vhost(h.ports[GLOB], f"""    DDService glob-svc-1
    DDInferredProxy On
    DDTag team payments
    DDSamplingRules '{json.dumps(GLOB_RULES)}'""") \
            + vhost(h.ports[PRIO], "    DDSampleRate 0\n    DDInferredProxy On")
    return httpd_factory("sampling", config=config, ports=6)


def one_process(mpm):
    """MPM settings (they override the harness's) for exactly one child process, and no
    keep-alive, so a held connection never blocks the single prefork child."""
    if mpm == "prefork":
        tuning = ("StartServers 1\nMinSpareServers 1\nMaxSpareServers 1\nServerLimit 1\n"
                  "MaxRequestWorkers 1")
    else:
        tuning = ("ServerLimit 1\nStartServers 1\nThreadsPerChild 16\nMaxRequestWorkers 16\n"
                  "MinSpareThreads 1\nMaxSpareThreads 32")
    return tuning + "\nKeepAlive Off\n"


@pytest.fixture(scope="module")
def own_agent():
    """This module's single-process httpd talks to its own agent: its rate_by_service must not
    reach the other httpds."""
    with conftest.running_agent() as a:
        yield a


@pytest.fixture(scope="module")
def single(httpd_factory, own_agent, backend):
    def config(h):
        return one_process(h.mpm) + f"""
DDAgentURL {own_agent.url}
DDFlushInterval 100
DDService ratesvc
DDEnv rateenv
DDRateLimit 5
ProxyPass /api/ {backend.url}/
""" + vhost(h.ports[LIMIT], """    DDSamplingRules '[{"sample_rate": 1}]'""") \
            + vhost(h.ports[OTHER], "    DDService othersvc") \
            + vhost(h.ports[SGW], "    DDInferredProxy On")
    h = httpd_factory("sampling-single", config=config, ports=4)
    yield h
    httpd_factory.finish(h)  # before its agent goes away


# --- requests and lookups --------------------------------------------------------------------

def send(h, path="/api/s", headers=(), port=None):
    """One GET on a fresh connection; returns (status, body, ua)."""
    ua = unique_ua("samp")
    items = list(headers.items() if isinstance(headers, dict) else headers)
    if not any(k.lower() == "user-agent" for k, _ in items):
        items.insert(0, ("User-Agent", ua))
    else:
        ua = next(v for k, v in items if k.lower() == "user-agent")
    conn = http.client.HTTPConnection("127.0.0.1", port or h.port, timeout=10)
    try:
        conn.putrequest("GET", path, skip_accept_encoding=True)
        for k, v in items:
            conn.putheader(k, v)
        conn.endheaders()
        resp = conn.getresponse()
        return resp.status, resp.read(), ua
    finally:
        conn.close()


def ctx(trace_id, parent=1, **extra):
    """A datadog context without a sampling priority: httpd decides."""
    return {"x-datadog-trace-id": str(trace_id), "x-datadog-parent-id": str(parent), **extra}


def run(h, agent, reqs, backend=None):
    """reqs: [(key, path, headers, port)] -> {key: (chunk, backend request or None)}."""
    sent = []
    for key, path, headers, port in reqs:
        status, body, ua = send(h, path, headers, h.ports[port] if port else None)
        assert status == 200, (key, status, body)
        sent.append((key, ua))
    chunks = collect(agent, [ua for _, ua in sent])
    out = {}
    for key, ua in sent:
        req = backend.by_header("User-Agent", ua) if backend else None
        out[key] = (chunks[ua], req)
    return out


def root_of(chunk):
    ids = {s["span_id"] for s in chunk}
    roots = [s for s in chunk if s["parent_id"] not in ids]
    assert len(roots) == 1, dump(chunk)
    return roots[0]


def decision_problems(chunk, mechanism, rate, kept, limit_psr=None, req=None):
    """What is wrong with the root's decision (empty when it is right).
    mechanism: "rule" (2/-1, _dd.rule_psr, dm -3, limiter on keeps), "agent" (1/0,
    _dd.agent_psr, dm -1), "default" (1/0, dm -0, _dd.agent_psr absent or 1)."""
    root = root_of(chunk)
    m, meta = root["metrics"], root["meta"]
    p = []
    prio = m.get("_sampling_priority_v1")
    if mechanism == "rule":
        want = 2 if kept else -1
        if m.get("_dd.rule_psr") != rate:
            p.append(f"_dd.rule_psr {m.get('_dd.rule_psr')} != {rate}")
        if kept:
            if "_dd.limit_psr" not in m:
                p.append("no _dd.limit_psr on a rule keep (the limiter was asked)")
            elif limit_psr is not None and m["_dd.limit_psr"] != limit_psr:
                p.append(f"_dd.limit_psr {m['_dd.limit_psr']} != {limit_psr}")
        elif "_dd.limit_psr" in m:
            p.append("_dd.limit_psr on a rule drop (the limiter is only asked for keeps)")
        if "_dd.agent_psr" in m:
            p.append("_dd.agent_psr on a rule decision")
        dm = "-3"
    else:
        want = 1 if kept else 0
        if mechanism == "agent" and m.get("_dd.agent_psr") != rate:
            p.append(f"_dd.agent_psr {m.get('_dd.agent_psr')} != {rate}")
        if mechanism == "default" and m.get("_dd.agent_psr", 1.0) != 1.0:
            p.append(f"_dd.agent_psr {m.get('_dd.agent_psr')} with the default rate 1")
        for k in ("_dd.rule_psr", "_dd.limit_psr"):
            if k in m:
                p.append(f"{k} without a rule")
        dm = "-1" if mechanism == "agent" else "-0"
    if prio != want:
        p.append(f"_sampling_priority_v1 {prio} != {want}")
    if kept and meta.get("_dd.p.dm") != dm:
        p.append(f"_dd.p.dm {meta.get('_dd.p.dm')!r} != {dm!r}")
    if not kept and "_dd.p.dm" in meta:
        p.append(f"_dd.p.dm {meta['_dd.p.dm']!r} on a dropped trace")
    for s in chunk:
        if s is not root:
            extra = [k for k in SAMPLING_METRICS if k in s["metrics"]]
            if extra:
                p.append(f"{s['name']} (not the root) carries {extra}")
    down = req.header("x-datadog-sampling-priority") if req is not None else str(want)
    if down != str(want):
        p.append(f"downstream x-datadog-sampling-priority {down} != {want}")
    if p:
        p.append(dump(chunk))
    return p


def check_all(results, expectations):
    """expectations: {key: (mechanism, rate, kept[, limit_psr])}; one failure list for all."""
    failures = []
    for key, exp in expectations.items():
        chunk, req = results[key]
        problems = decision_problems(chunk, *exp, req=req)
        if problems:
            failures.append(f"--- {key} (expected {exp[:3]}):\n  " + "\n  ".join(problems))
    assert not failures, f"{len(failures)} of {len(expectations)} decisions wrong:\n" + \
        "\n".join(failures)


# --- rules and DDSampleRate: the formula -----------------------------------------------------

def test_sample_rate_keeps_by_the_formula(h, agent, backend):
    both_outcomes(IDS, 0.5)
    res = run(h, agent, [(tid, "/api/rate", ctx(tid), RATE) for tid in IDS], backend)
    for tid in IDS:
        assert res[tid][0][0]["trace_id"] == tid
    check_all(res, {tid: ("rule", 0.5, keep(tid, 0.5), 1.0) for tid in IDS})


def test_sample_rate_on_new_traces(h, agent):
    """Without an inbound id the decision still follows the formula on the generated id."""
    res = run(h, agent, [(i, "/api/new", {}, RATE) for i in range(16)])
    check_all(res, {i: ("rule", 0.5, keep(res[i][0][0]["trace_id"], 0.5), 1.0)
                    for i in range(16)})


def test_rule_then_sample_rate_as_catch_all(h, agent, backend):
    both_outcomes(IDS, 0.3)
    both_outcomes(IDS, 0.8)
    reqs = [(("r3", t), "/api/r3/x", ctx(t), MIXED) for t in IDS] + \
           [(("other", t), "/api/other", ctx(t), MIXED) for t in IDS]
    res = run(h, agent, reqs, backend)
    check_all(res, {**{("r3", t): ("rule", 0.3, keep(t, 0.3)) for t in IDS},
                    **{("other", t): ("rule", 0.8, keep(t, 0.8)) for t in IDS}})


def test_no_sampling_config_keeps_everything_by_default(h, agent, backend):
    res = run(h, agent, [(t, "/api/default", ctx(t), None) for t in IDS[:6]], backend)
    check_all(res, {t: ("default", 1.0, True) for t in IDS[:6]})


# --- rules on the gateway's service vs. httpd's ----------------------------------------------

def test_rule_for_the_gateway_service_vs_the_httpd_service(h, agent, backend):
    both_outcomes(IDS, 0.2)
    both_outcomes(IDS, 0.7)

    def gw(domain, tid):
        g = gateway_headers("aws-apigateway", method="GET", path="/api/g", domain=domain)
        return {**g, **ctx(tid)}

    reqs = []
    for t in IDS:
        reqs += [(("gw", t), "/api/g", gw("gw.example.com", t), RULES),
                 (("httpd", t), "/api/g", ctx(t), RULES)]
    for t in IDS[:4]:
        reqs += [(("gw-other", t), "/api/g", gw("other.example.com", t), RULES),
                 (("gw-no-domain", t), "/api/g", gw(None, t), RULES)]
    res = run(h, agent, reqs, backend)
    for key, (chunk, _) in res.items():
        root = root_of(chunk)
        if key[0].startswith("gw"):
            assert root["name"] == "aws.apigateway" and len(chunk) == 2, dump(chunk)
            assert by_name(chunk, SERVER_SPAN)["service"] == "httpd-svc", dump(chunk)
        else:
            assert root["name"] == SERVER_SPAN and len(chunk) == 1, dump(chunk)
    check_all(res, {
        **{("gw", t): ("rule", 0.2, keep(t, 0.2)) for t in IDS},
        **{("httpd", t): ("rule", 0.7, keep(t, 0.7)) for t in IDS},
        # no rule for the gateway's domain: the agent's rate / the default
        **{("gw-other", t): ("default", 1.0, True) for t in IDS[:4]},
        # no domain: the gateway span's service is DDService, whose rule applies
        **{("gw-no-domain", t): ("rule", 0.7, keep(t, 0.7)) for t in IDS[:4]},
    })


# --- globs, names and tags -------------------------------------------------------------------

def test_glob_name_and_tag_rules(h, agent, backend):
    both_outcomes(IDS[:8], 0.5)
    ids = IDS[:8]

    def gw(kind, domain, path, tid):
        g = gateway_headers(kind, method="GET", path=path, domain=domain)
        return {**g, **ctx(tid)}

    reqs = []
    for t in ids:
        reqs += [
            # service glob-svc-1 matches glob-svc-? and the resource glob: rule 1
            (("keep", t), "/api/keep/a", ctx(t), GLOB),
            # gateway service glob-svc-12 is one character too long for glob-svc-?; the
            # azure.apim span matches the name glob of rule 2
            (("azure", t), "/api/keep/a", gw("azure-apim", "glob-svc-12", "/api/keep/a", t), GLOB),
            # an aws gateway span with that service: only rule 5 (glob-*)
            (("aws", t), "/api/keep/a", gw("aws-apigateway", "glob-svc-12", "/api/keep/a", t),
             GLOB),
            # the tag glob on http.useragent: rule 3
            (("ua", t), "/api/x", {"User-Agent": unique_ua("tagdrop"), **ctx(t)}, GLOB),
            # DDTag team=payments and http.method GET: rule 4 wants POST, so rule 5
            (("team-get", t), "/api/team/x", ctx(t), GLOB),
            # an unrelated gateway domain: no rule at all
            (("none", t), "/api/x", gw("aws-apigateway", "unrelated.example", "/api/x", t), GLOB),
        ]
    res = run(h, agent, reqs, backend)
    check_all(res, {
        **{("keep", t): ("rule", 1, True, 1.0) for t in ids},
        **{("azure", t): ("rule", 0, False) for t in ids},
        **{("aws", t): ("rule", 0.5, keep(t, 0.5)) for t in ids},
        **{("ua", t): ("rule", 0, False) for t in ids},
        **{("team-get", t): ("rule", 0.5, keep(t, 0.5)) for t in ids},
        **{("none", t): ("default", 1.0, True) for t in ids},
    })


def test_tag_rule_sees_ddtag_tags(h, agent, backend):
    """A rule on a DDTag tag (here team=pay* with http.method POST) decides like a rule on any
    other tag of the root span: DDTag tags are on the span (CONTRACT 3.1)."""
    status_ok = []
    uas = []
    for t in IDS[:4]:
        ua = unique_ua("team")
        conn = http.client.HTTPConnection("127.0.0.1", h.ports[GLOB], timeout=10)
        conn.request("POST", "/api/team/x", body=b"{}",
                     headers={"User-Agent": ua, **ctx(t), "Content-Type": "application/json"})
        resp = conn.getresponse()
        resp.read()
        conn.close()
        status_ok.append(resp.status)
        uas.append(ua)
    assert status_ok == [200] * 4
    chunks = collect(agent, uas)
    for ua in uas:
        assert by_name(chunks[ua], SERVER_SPAN)["meta"].get("team") == "payments"
    check_all({ua: (chunks[ua], None) for ua in uas},
              {ua: ("rule", 0, False) for ua in uas})


# --- inbound priorities ----------------------------------------------------------------------

INBOUND = [
    ("datadog-2", ctx(IDS[0], **{"x-datadog-sampling-priority": "2"}), 2),
    ("datadog-1", ctx(IDS[1], **{"x-datadog-sampling-priority": "1"}), 1),
    ("datadog-0", ctx(IDS[2], **{"x-datadog-sampling-priority": "0"}), 0),
    ("datadog-minus-1", ctx(IDS[3], **{"x-datadog-sampling-priority": "-1"}), -1),
    ("tracecontext-01", {"traceparent": f"00-{IDS[4]:032x}-0000000000000001-01"}, 1),
    ("tracecontext-00", {"traceparent": f"00-{IDS[5]:032x}-0000000000000001-00"}, 0),
    ("tracecontext-s2", {"traceparent": f"00-{IDS[6]:032x}-0000000000000001-01",
                         "tracestate": "dd=s:2;t.dm:-4"}, 2),
    ("xray-sampled-1", {"X-Amzn-Trace-Id": f"Root=1-00000000-0000000{IDS[7]:017x};"
                                           "Parent=0000000000000001;Sampled=1"}, 1),
    ("xray-sampled-0", {"X-Amzn-Trace-Id": f"Root=1-00000000-0000000{IDS[8]:017x};"
                                           "Parent=0000000000000001;Sampled=0"}, 0),
]


@pytest.mark.parametrize("gateway", [False, True], ids=["server-root", "gateway-root"])
def test_inbound_priority_is_honoured(h, agent, backend, gateway):
    """On a vhost whose DDSampleRate 0 would drop everything: the caller's decision stands,
    on the local root, and goes downstream unchanged."""
    reqs = []
    for name, headers, _ in INBOUND:
        if gateway:
            headers = {**gateway_headers("aws-apigateway", method="GET", path="/api/p",
                                         domain="prio.example"), **headers}
        reqs.append((name, "/api/p", headers, PRIO))
    res = run(h, agent, reqs, backend)
    failures = []
    for name, headers, prio in INBOUND:
        chunk, req = res[name]
        root = root_of(chunk)
        p = []
        if gateway and root["name"] != "aws.apigateway":
            p.append("the gateway span is not the root")
        if root["parent_id"] != 1:
            p.append(f"parent_id {root['parent_id']}: the inbound context was not continued")
        if root["metrics"].get("_sampling_priority_v1") != prio:
            p.append(f"_sampling_priority_v1 {root['metrics'].get('_sampling_priority_v1')}")
        made = [k for k in ("_dd.rule_psr", "_dd.agent_psr", "_dd.limit_psr")
                if k in root["metrics"]]
        if made:
            p.append(f"a local decision was made anyway: {made}")
        want_dm = "-4" if "t.dm:-4" in headers.get("tracestate", "") else None
        if root["meta"].get("_dd.p.dm") != want_dm:
            p.append(f"_dd.p.dm {root['meta'].get('_dd.p.dm')!r} != {want_dm!r}")
        if req.header("x-datadog-sampling-priority") != str(prio):
            p.append(f"downstream priority {req.header('x-datadog-sampling-priority')}")
        tp = req.header("traceparent") or ""
        if not tp.endswith("-01" if prio > 0 else "-00"):
            p.append(f"downstream traceparent {tp}")
        xr = req.header("X-Amzn-Trace-Id") or ""
        if not xr.endswith(f";Sampled={1 if prio > 0 else 0}"):
            p.append(f"downstream X-Amzn-Trace-Id {xr}")
        if p:
            failures.append(f"--- {name} (want {prio}): " + "; ".join(p) + "\n" + dump(chunk))
    assert not failures, "\n".join(failures)


def test_upstream_decision_maker_is_kept(h, agent, backend):
    headers = ctx(IDS[9], **{"x-datadog-sampling-priority": "2",
                             "x-datadog-tags": "_dd.p.dm=-4"})
    res = run(h, agent, [("dm", "/api/dm", headers, PRIO)], backend)
    chunk, req = res["dm"]
    root = root_of(chunk)
    assert root["metrics"]["_sampling_priority_v1"] == 2 and root["meta"]["_dd.p.dm"] == "-4", \
        dump(root)
    assert "_dd.p.dm=-4" in req.header("x-datadog-tags").split(","), req.header_items


def test_xray_sampled_unknown_leaves_it_to_httpd(h, agent, backend):
    tid = next(t for t in IDS if not keep(t, 0.5))
    root = f"1-00000000-0000000{tid:017x}"
    reqs = [("rate0", "/api/x", {"X-Amzn-Trace-Id": f"Root={root};Parent=00000000000000a1;"
                                                    "Sampled=?"}, PRIO),
            ("rate05", "/api/x", {"X-Amzn-Trace-Id": f"Root={root};Parent=00000000000000a1"},
             RATE)]
    res = run(h, agent, reqs, backend)
    for key, (chunk, _) in res.items():
        assert chunk[0]["trace_id"] == tid and root_of(chunk)["parent_id"] == 0xa1, dump(chunk)
    check_all(res, {"rate0": ("rule", 0, False), "rate05": ("rule", 0.5, False)})


# --- the rate limiter (one child process) ----------------------------------------------------

def test_rate_limiter_lets_about_the_limit_through(single, own_agent):
    """DDRateLimit 5, a rule at rate 1, a burst of 50: about 5 keeps (the bucket's burst), the
    rest -1; every decision says what the limiter let through (_dd.limit_psr)."""
    time.sleep(1.2)  # a full bucket
    uas = []
    t0 = time.monotonic()
    for _ in range(50):
        status, _, ua = send(single, "/index.html", port=single.ports[LIMIT])
        assert status == 200
        uas.append(ua)
    elapsed = time.monotonic() - t0
    assert elapsed < 1.0, f"the burst took {elapsed:.2f}s; the test needs it within 1 s"
    chunks = collect(own_agent, uas)  # dropped traces are sent too
    prios = [root_of(chunks[ua])["metrics"].get("_sampling_priority_v1") for ua in uas]
    kept = prios.count(2)
    assert prios.count(-1) == 50 - kept, prios
    # the bucket holds 5 and refills 5 a second
    assert 3 <= kept <= 7 + int(elapsed * 5), f"{kept} kept of 50 in {elapsed:.2f}s: {prios}"
    for ua in uas:
        chunk = chunks[ua]
        m = root_of(chunk)["metrics"]
        assert m.get("_dd.rule_psr") == 1, dump(chunk)
        assert 0 < m.get("_dd.limit_psr", -1) <= 1, dump(chunk)
        kept_one = m["_sampling_priority_v1"] == 2
        assert (root_of(chunk)["meta"].get("_dd.p.dm") == "-3") == kept_one, dump(chunk)
    # the last decision saw the whole burst: its effective rate is kept / seen
    last = root_of(chunks[uas[-1]])["metrics"]["_dd.limit_psr"]
    assert last == pytest.approx(kept / 50, abs=1e-6), (last, kept)


# --- the agent's rates (one child process) ---------------------------------------------------

def sync_rates(h, agent):
    """Makes the child take the agent's current rate_by_service: a payload answered after the
    change, then one more (the single flusher handles an answer before sending again)."""
    for _ in range(2):
        status, _, ua = send(h, "/index.html")
        assert status == 200
        collect(agent, [ua], settle=0)


def test_agent_rates_are_followed(single, own_agent, backend):
    ids = IDS[:12]
    for r in (0.5, 0.25, 0.1):
        both_outcomes(ids, r)

    def batch():
        reqs = []
        for t in ids:
            reqs += [(("svc", t), "/api/a", ctx(t), None),
                     (("other", t), "/api/a", ctx(t), OTHER),
                     (("gw", t), "/api/a",
                      {**gateway_headers("aws-apigateway", method="GET", path="/api/a",
                                         domain="gw.example"), **ctx(t)}, SGW)]
        return run(single, own_agent, reqs, backend)

    # before any rates: the default, 1.0
    own_agent.rate_by_service = {}
    sync_rates(single, own_agent)
    res = batch()
    check_all(res, {k: ("default", 1.0, True) for k in res})

    own_agent.rate_by_service = {"service:ratesvc,env:rateenv": 0.5,
                                 "service:gw.example,env:rateenv": 0.1,
                                 "service:othersvc,env:otherenv": 1.0,
                                 "service:,env:": 0.25}
    sync_rates(single, own_agent)
    res = batch()
    check_all(res, {
        **{("svc", t): ("agent", 0.5, keep(t, 0.5)) for t in ids},
        # othersvc has a rate only for another env: the agent's default key applies
        **{("other", t): ("agent", 0.25, keep(t, 0.25)) for t in ids},
        # the gateway span is the root: its service (the domain) picks the rate
        **{("gw", t): ("agent", 0.1, keep(t, 0.1)) for t in ids},
    })

    # later answers replace the table: rate 0 drops all (still sent), no default key left
    own_agent.rate_by_service = {"service:ratesvc,env:rateenv": 0}
    sync_rates(single, own_agent)
    res = batch()
    check_all(res, {
        **{("svc", t): ("agent", 0, False) for t in ids},
        **{("other", t): ("default", 1.0, True) for t in ids},
        **{("gw", t): ("default", 1.0, True) for t in ids},
    })
    own_agent.rate_by_service = {}


def test_rules_beat_agent_rates(single, own_agent, backend):
    own_agent.rate_by_service = {"service:ratesvc,env:rateenv": 0, "service:,env:": 0}
    try:
        sync_rates(single, own_agent)
        time.sleep(1.0)  # tokens for the rule's keeps
        res = run(single, own_agent, [(t, "/api/r", ctx(t), LIMIT) for t in IDS[:3]], backend)
        check_all(res, {t: ("rule", 1, True) for t in IDS[:3]})
    finally:
        own_agent.rate_by_service = {}


# --- environment fallbacks -------------------------------------------------------------------

def test_env_sampling(httpd_factory, agent, backend):
    env = {"DD_TRACE_SAMPLE_RATE": "0.5",
           "DD_TRACE_SAMPLING_RULES": '[{"resource": "GET /api/zero/*", "sample_rate": 0}]',
           "DD_TRACE_RATE_LIMIT": "100000"}

    def config(h):
        return f"DDAgentURL {agent.url}\nDDFlushInterval 100\nProxyPass /api/ {backend.url}/\n" \
            + vhost(h.ports[1], "    DDSampleRate 1")
    he = httpd_factory("sampling-env", config=config, ports=2, env=env)
    ids = IDS[:8]
    both_outcomes(ids, 0.5)
    reqs = []
    for t in ids:
        reqs += [(("zero", t), "/api/zero/x", ctx(t), None), (("rate", t), "/api/x", ctx(t), None),
                 (("vh-zero", t), "/api/zero/x", ctx(t), 1), (("vh-rate", t), "/api/x", ctx(t), 1)]
    res = run(he, agent, reqs, backend)
    check_all(res, {
        **{("zero", t): ("rule", 0, False) for t in ids},
        **{("rate", t): ("rule", 0.5, keep(t, 0.5), 1.0) for t in ids},
        # the directive beats DD_TRACE_SAMPLE_RATE; the env rules still come first
        **{("vh-zero", t): ("rule", 0, False) for t in ids},
        **{("vh-rate", t): ("rule", 1, True, 1.0) for t in ids},
    })


@pytest.mark.allow_log(r"DDP100[678]")
def test_bad_env_sampling_warns_once_each_and_defaults_apply(httpd_factory, agent, backend):
    env = {"DD_TRACE_SAMPLE_RATE": "1.5", "DD_TRACE_SAMPLING_RULES": '[{"sample_rate": 2}]',
           "DD_TRACE_RATE_LIMIT": "lots"}
    he = httpd_factory("sampling-env-bad", env=env,
                       config=f"DDAgentURL {agent.url}\nDDFlushInterval 100\n"
                              f"ProxyPass /api/ {backend.url}/\n")
    res = run(he, agent, [(t, "/api/x", ctx(t), None) for t in IDS[:4]], backend)
    check_all(res, {t: ("default", 1.0, True) for t in IDS[:4]})
    log = he.error_log_text().splitlines()
    for code, name, value in (("DDP1006", "DD_TRACE_SAMPLE_RATE", "1.5"),
                              ("DDP1007", "DD_TRACE_SAMPLING_RULES", "sample_rate"),
                              ("DDP1008", "DD_TRACE_RATE_LIMIT", "lots")):
        lines = [ln for ln in log if code in ln]
        assert len(lines) == 1, (code, lines)
        assert re.search(rf":warn\].*ignoring.*{name}.*{value}", lines[0]), lines


# --- bad rules fail `apache2 -t` -------------------------------------------------------------

BAD_RULES = [
    ("not-json", '[{"sample_rate": 0.5', r"(?i)json"),
    ("not-json-bare", "sample_rate=0.5", r"(?i)json"),
    ("not-a-list-object", '{"sample_rate": 0.5}', r"(?i)list|array"),
    ("not-a-list-number", "0.5", r"(?i)list|array"),
    ("rule-not-an-object", "[1]", r"(?i)object"),
    ("rate-above-1", '[{"sample_rate": 1.5}]', r"(?i)sample_rate.*1\.5.*(\[0, ?1\]|range)"),
    ("rate-below-0", '[{"sample_rate": -0.1}]', r"(?i)sample_rate.*-0\.1.*(\[0, ?1\]|range)"),
    ("rate-not-a-number", '[{"sample_rate": "0.5"}]', r"(?i)sample_rate.*number"),
    ("rate-missing", '[{"service": "a"}]', r"(?i)sample_rate.*(missing|required)"),
    ("service-not-a-string", '[{"service": 5, "sample_rate": 1}]', r"(?i)service.*string"),
    ("name-not-a-string", '[{"name": ["a"], "sample_rate": 1}]', r"(?i)name.*string"),
    ("resource-not-a-string", '[{"resource": null, "sample_rate": 1}]',
     r"(?i)resource.*string"),
    ("tag-glob-not-a-string", '[{"tags": {"k": 1}, "sample_rate": 1}]', r"(?i)string"),
    ("tags-not-an-object", '[{"tags": "k", "sample_rate": 1}]', r"(?i)tags.*(object|map)"),
    ("unknown-key", '[{"services": "a", "sample_rate": 1}]', r"(?i)unknown key 'services'"),
]


def test_bad_rules_fail_config_test(httpd_factory):
    hc = httpd_factory("sampling-bad-rules", start=False)
    failures = []
    for name, rules, problem in BAD_RULES:
        for where in ("server", "vhost"):
            line = f"DDSamplingRules '{rules}'"
            extra = line if where == "server" else vhost(hc.port, "    " + line)
            rc, out = hc.config_test(extra)
            msg = out.split("is not valid", 1)[-1]  # the problem, not the echoed value
            if rc == 0 or "DDSamplingRules" not in out or not re.search(problem, msg):
                failures.append(f"{name} ({where}): rc={rc} want /{problem}/ in: {out.strip()}")
    rc, out = hc.config_test('DDSamplingRules \'[{"service": "a*", "sample_rate": 0.5}]\'')
    assert rc == 0, out
    assert not failures, "\n".join(failures)
