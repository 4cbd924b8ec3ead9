# SPDX-License-Identifier: Apache-2.0
"""test_520_client_stats.py - issue 13.2: client-side stats and dropping unsampled traces.

Where the agent's /info announces /v0.6/stats and client_drop_p0s (and DDClientStats On), the
module computes APM stats (10 s buckets; per key hits, errors, top-level hits, durations and
ok / error DDSketches) and POSTs them to /v0.6/stats, marks its trace payloads
Datadog-Client-Computed-Stats: yes and sends no trace whose priority is <= 0, counting them in
Datadog-Client-Dropped-P0-Traces / -Spans instead.

The "agent vs client" check: what the agent would compute from the traces (all of them kept at
rate 1) against the module's stats payloads, key by key: hits, errors, top-level hits and total
duration exactly, quantiles within the sketch's relative accuracy. The same traffic through an
agent that announces nothing gets every trace, no stats, and the same hits and errors.
"""

import math
import time

import pytest

import conftest
from helpers import NOT_MPM, counters, gateway_headers, status_location, unique_ua

pytestmark = NOT_MPM
# the fault test's agent is down: its traces cannot be delivered either (logged at stop)
ALLOW_LOG = [r"DDP1002: cannot deliver traces to the agent"]

INFO = {  # a Datadog agent 7.x /info (datadog-agent pkg/trace/api/info.go)
    "version": "7.52.0",
    "endpoints": ["/v0.3/traces", "/v0.4/traces", "/v0.5/traces", "/v0.7/traces",
                  "/v0.6/stats", "/v0.7/config", "/info"],
    "client_drop_p0s": True, "span_meta_structs": True,
    "peer_tags": ["_dd.base_service", "peer.service", "db.instance"],
    "config": {"default_env": "none", "max_request_bytes": 25000000},
}
OLD_INFO = dict(INFO, endpoints=["/v0.3/traces", "/v0.4/traces", "/info"], client_drop_p0s=False)
BUCKET_WAIT = 14  # a 10 s bucket is sent once it is over: at most 10 s + a flush tick
ACCURACY = 0.01
TRIM = 2 ** -9  # the agent's (and the module's) 10-bit mantissa on durations
QUANTILES = (0.0, 0.5, 0.75, 0.9, 0.95, 0.99, 1.0)

# the traffic: (count, path, extra headers, status)
GW = "gw.example.com"
TRAFFIC = [
    (24, "/index.html", None, 200),
    (12, "/missing.html", None, 404),
    (10, "/api/status/500", None, 500),
    (8, "/api/delay/15", None, 200),
    (8, "/api/gw", "gateway", 200),
]


def one_process(mpm):
    """One child process (the agent's rates are per child)."""
    if mpm == "prefork":
        return ("StartServers 1\nMinSpareServers 1\nMaxSpareServers 1\nServerLimit 1\n"
                "MaxRequestWorkers 1\nKeepAlive Off\n")
    return ("ServerLimit 1\nStartServers 1\nThreadsPerChild 16\nMaxRequestWorkers 16\n"
            "MinSpareThreads 1\nMaxSpareThreads 32\nKeepAlive Off\n")


@pytest.fixture
def own_agent():
    with conftest.running_agent() as a:
        yield a


@pytest.fixture
def make(httpd_factory, backend):
    made = []

    def start(agent, name, client_stats="On"):
        def config(h):
            return one_process(h.mpm) + "\n".join([
                f"DDAgentURL {agent.url}", "DDFlushInterval 100", f"DDClientStats {client_stats}",
                "DDService cs-svc", "DDEnv cs-env", "DDVersion 1.2", "DDInferredProxy On",
                "DDRateLimit 100000", f"ProxyPass /api/ {backend.url}/", status_location()])
        h = httpd_factory(name, config=config)
        made.append(h)
        return h

    yield start
    for h in made:
        httpd_factory.finish(h)  # before the test's own agent goes away


def wait_cstats_on(h, agent):
    """Until the child has applied the agent's /info answer (the GET seen by the agent is not
    enough: a request served before the answer is parsed is sent as a trace, not counted)."""
    assert agent.wait_for(lambda a: info_requests(a), timeout=5)
    deadline = time.monotonic() + 5
    while counters(h)["client_stats_active"] != 1:
        assert time.monotonic() < deadline, "client stats did not turn on"
        time.sleep(0.05)


def info_requests(agent):
    return [r for r in list(agent.other_requests) if r[0] == "GET" and r[1] == "/info"]


def ours(chunks):
    """The chunks of send_traffic's requests (not the harness's start-up probe)."""
    return [c for c in chunks
            if any((s.get("meta") or {}).get("http.useragent", "").startswith("ddtest-cs/")
                   for s in c)]


def send_traffic(h):
    for n, path, extra, status in TRAFFIC:
        for _ in range(n):
            headers = {"User-Agent": unique_ua("cs")}
            if extra == "gateway":
                headers.update(gateway_headers("aws-apigateway", method="GET", path=path,
                                               domain=GW))
            assert h.get(path, headers=headers).status_code == status, path


def expected_spans():
    return sum(n * (2 if extra == "gateway" else 1) for n, _, extra, _ in TRAFFIC)


# --- the agent's computation, in Python ---------------------------------------------------------

def agent_stats(chunks):
    """What the agent computes from traces: {key: {hits, errors, top, duration, ok, err}}."""
    out = {}
    for chunk in chunks:
        by_id = {s["span_id"]: s for s in chunk}
        for s in chunk:
            parent = by_id.get(s["parent_id"])
            top = parent is None or parent["service"] != s["service"]
            meta, metrics = s.get("meta") or {}, s.get("metrics") or {}
            kind = meta.get("span.kind", "")
            if not (top or metrics.get("_dd.measured") == 1 or
                    kind in ("server", "client", "producer", "consumer")):
                continue
            key = (s["service"], s["name"], s["resource"], int(meta.get("http.status_code", 0)),
                   s.get("type") or "", kind, 1 if s["parent_id"] == 0 else 2)
            g = out.setdefault(key, {"hits": 0, "errors": 0, "top": 0, "duration": 0,
                                     "ok": [], "err": []})
            g["hits"] += 1
            g["top"] += top
            g["duration"] += s["duration"]
            if s["error"]:
                g["errors"] += 1
                g["err"].append(s["duration"])
            else:
                g["ok"].append(s["duration"])
    return out


# --- the module's stats payloads, decoded ----------------------------------------------------------

def varint(b, i):
    v = shift = 0
    while True:
        c = b[i]
        i += 1
        v |= (c & 0x7F) << shift
        if not c & 0x80:
            return v, i
        shift += 7


def f64(b, i):
    import struct
    return struct.unpack_from("<d", b, i)[0]


def decode_sketch(b):
    """A DDSketch protobuf (sketches-go's ddsketch.proto) -> (gamma, offset, {index: count}, zero).
    Checks the field numbers and wire types it knows; anything else fails the test."""
    gamma, offset, bins, zero, i = None, 0.0, {}, 0.0, 0
    while i < len(b):
        key, i = varint(b, i)
        field, wire = key >> 3, key & 7
        if (field, wire) == (1, 2):  # mapping: IndexMapping
            n, i = varint(b, i)
            j, end = i, i + n
            while j < end:
                k, j = varint(b, j)
                if k == (1 << 3 | 1):
                    gamma = f64(b, j)
                    j += 8
                elif k == (2 << 3 | 1):
                    offset = f64(b, j)
                    j += 8
                elif k == (3 << 3 | 0):
                    interp, j = varint(b, j)
                    assert interp == 0, "interpolation must be NONE"
                else:
                    raise AssertionError(f"IndexMapping: unexpected key {k}")
            i = end
        elif (field, wire) in ((2, 2), (3, 2)):  # positiveValues / negativeValues: Store
            n, i = varint(b, i)
            j, end = i, i + n
            counts, first = [], 0
            while j < end:
                k, j = varint(b, j)
                if k == (2 << 3 | 2):  # contiguousBinCounts, packed doubles
                    m, j = varint(b, j)
                    counts = [f64(b, j + x) for x in range(0, m, 8)]
                    j += m
                elif k == (3 << 3 | 0):  # contiguousBinIndexOffset, sint32 (zigzag)
                    z, j = varint(b, j)
                    first = (z >> 1) ^ -(z & 1)
                else:
                    raise AssertionError(f"Store: unexpected key {k}")
            assert field == 2, "no negative durations"
            for x, c in enumerate(counts):
                if c:
                    bins[first + x] = bins.get(first + x, 0) + c
            i = end
        elif (field, wire) == (4, 1):  # zeroCount
            zero = f64(b, i)
            i += 8
        else:
            raise AssertionError(f"DDSketch: unexpected field {field} wire type {wire}")
    assert gamma is not None and abs(gamma - (1 + ACCURACY) / (1 - ACCURACY)) < 1e-12, gamma
    assert offset == 0
    return gamma, bins, zero


def sketch_quantile(gamma, bins, zero, q):
    """As the agent reads it (sketches-go: the bin holding rank q * (count - 1))."""
    count = zero + sum(bins.values())
    rank, n = q * (count - 1), zero
    if n > rank:
        return 0.0
    for idx in sorted(bins):
        n += bins[idx]
        if n > rank:
            return gamma ** idx * 2 * gamma / (1 + gamma)
    return gamma ** max(bins) * 2 * gamma / (1 + gamma)


def module_stats(agent):
    """The stats payloads merged over buckets and payloads, keyed as agent_stats()."""
    out = {}
    for headers, p in list(agent.stats_payloads):
        assert headers.get("Content-Type") == "application/msgpack"
        assert headers.get("Datadog-Meta-Lang") and headers.get("Datadog-Meta-Tracer-Version")
        assert p["Env"] == "cs-env" and p["Version"] == "1.2" and p["Service"] == "cs-svc", p
        assert p["Lang"] and p["TracerVersion"] and len(p["RuntimeID"]) == 36, p
        for bucket in p["Stats"]:
            assert bucket["Duration"] == 10 * 10**9 and bucket["Start"] % (10 * 10**9) == 0
            for g in bucket["Stats"]:
                key = (g["Service"], g["Name"], g["Resource"], g["HTTPStatusCode"], g["Type"],
                       g["SpanKind"], g["IsTraceRoot"])
                m = out.setdefault(key, {"hits": 0, "errors": 0, "top": 0, "duration": 0,
                                         "ok": {}, "err": {}, "zero": [0, 0], "gamma": None})
                m["hits"] += g["Hits"]
                m["errors"] += g["Errors"]
                m["top"] += g["TopLevelHits"]
                m["duration"] += g["Duration"]
                assert g["Synthetics"] is False and g["PeerTags"] == [] and g["DBType"] == ""
                for which, field, z in (("ok", "OkSummary", 0), ("err", "ErrorSummary", 1)):
                    gamma, bins, zero = decode_sketch(g[field])
                    m["gamma"] = gamma
                    m["zero"][z] += zero
                    for idx, c in bins.items():
                        m[which][idx] = m[which].get(idx, 0) + c
    return out


def stats_hits(agent):
    return sum(g["Hits"] for _, p in list(agent.stats_payloads) if p
               for b in p["Stats"] for g in b["Stats"])


def compare(expected, got):
    assert set(got) == set(expected), \
        f"keys differ:\nagent:  {sorted(expected)}\nmodule: {sorted(got)}"
    for key, e in expected.items():
        m = got[key]
        for f in ("hits", "errors", "top", "duration"):
            assert m[f] == e[f], f"{key}: {f} {m[f]} != {e[f]} the agent computes"
        for which, z in (("ok", 0), ("err", 1)):
            durations = sorted(e[which])
            assert sum(m[which].values()) + m["zero"][z] == len(durations), (key, which)
            for q in QUANTILES if durations else ():
                want = durations[int(q * (len(durations) - 1))]
                have = sketch_quantile(m["gamma"], m[which], m["zero"][z], q)
                assert abs(have - want) <= want * (ACCURACY + TRIM) * 1.001, \
                    f"{key} {which} q{q}: sketch {have} vs exact {want}"


# --- tests -----------------------------------------------------------------------------------------

def test_agent_and_client_stats_agree(make, own_agent):
    """Rate 1: every trace is kept and sent, with stats beside them; both must say the same."""
    own_agent.info = INFO
    own_agent.stats_status = 200
    h = make(own_agent, "cstats-agree")
    wait_cstats_on(h, own_agent)
    send_traffic(h)
    n = expected_spans()
    assert own_agent.wait_for(lambda a: sum(len(c) for c in a.traces) >= n, timeout=5)
    assert own_agent.wait_for(lambda a: stats_hits(a) >= n, timeout=BUCKET_WAIT), \
        f"stats for {stats_hits(own_agent)} of {n} spans"
    for p in own_agent.payloads:
        assert p.headers.get("Datadog-Client-Computed-Stats") == "yes", dict(p.headers)
        assert p.headers.get("Datadog-Client-Dropped-P0-Traces") == "0"
    c = counters(h)
    assert c["client_stats_active"] == 1 and c["client_stats_payloads_sent"] >= 1, c
    assert c["client_stats_payloads_failed"] == 0 and c["client_stats_keys_dropped"] == 0, c
    assert c["client_stats_buckets"] >= 1 and c["p0_traces_dropped"] == 0, c
    expected = agent_stats(ours(own_agent.traces))
    got = {k: v for k, v in module_stats(own_agent).items() if k[2] != "GET /"}  # not the probe
    compare(expected, got)
    # sanity of the traffic itself: errors where the status is 500, gateway spans top-level
    assert sum(e["errors"] for e in expected.values()) == 10
    gw = [k for k in expected if k[0] == GW]
    assert gw and all(expected[k]["top"] == expected[k]["hits"] for k in gw)


def test_an_agent_without_client_stats_gets_every_trace(make, own_agent):
    own_agent.info = OLD_INFO
    own_agent.rate_by_service = {"service:cs-svc,env:cs-env": 0.01, "service:,env:": 0.01}
    h = make(own_agent, "cstats-old-agent")
    assert own_agent.wait_for(lambda a: info_requests(a), timeout=5)
    send_traffic(h)
    n = sum(cnt for cnt, _, _, _ in TRAFFIC)
    # the rate learnt from the first answer applies, but nothing is dropped here: every trace
    # that the sampler rejected still goes to the agent, which computes the stats
    assert own_agent.wait_for(lambda a: len(ours(a.traces)) >= n, timeout=5), own_agent.counts
    time.sleep(0.5)
    assert len(ours(own_agent.traces)) == n
    assert not own_agent.stats_payloads
    assert not [r for r in own_agent.other_requests if r[1] == "/v0.6/stats"]
    for p in own_agent.payloads:
        assert p.headers.get("Datadog-Client-Computed-Stats") is None
    c = counters(h)
    assert c["client_stats_active"] == 0 and c["client_stats_payloads_sent"] == 0, c
    assert c["p0_traces_dropped"] == 0, c
    # the same hits and errors as the traffic makes (and as the client-stats run counted)
    st = agent_stats(ours(own_agent.traces))
    assert sum(g["hits"] for g in st.values()) == expected_spans()
    assert sum(g["errors"] for g in st.values()) == 10


def test_unsampled_traces_are_dropped_and_counted(make, own_agent, backend):
    """rate_by_service 0.01: stats for every request, about 1 % of the traces, and the P0
    headers count the rest."""
    own_agent.info = INFO
    own_agent.stats_status = 200
    own_agent.rate_by_service = {"service:cs-svc,env:cs-env": 0.01, "service:,env:": 0.01}
    h = make(own_agent, "cstats-p0")
    wait_cstats_on(h, own_agent)
    # the first trace's answer carries the rate: until then the default (1.0) keeps them
    warm = 0
    while not own_agent.payloads and warm < 50:
        assert h.get("/index.html", headers={"User-Agent": unique_ua("cs-warm")}).status_code == 200
        warm += 1
        time.sleep(0.05)
    time.sleep(0.3)
    kept_before = len(own_agent.traces)
    burst = 800
    for _ in range(burst):
        assert h.get("/index.html", headers={"User-Agent": unique_ua("cs-burst")}).status_code == 200
    # one trace the caller decided to keep: its payload carries the last P0 counts
    assert h.get("/index.html", headers={"User-Agent": unique_ua("cs-keep"),
                                         "x-datadog-trace-id": "4242", "x-datadog-parent-id": "7",
                                         "x-datadog-sampling-priority": "1"}).status_code == 200
    assert own_agent.wait_for(lambda a: a.chunks_where(
        lambda s: s["trace_id"] == 4242), timeout=5)
    total = warm + burst + 1
    assert own_agent.wait_for(lambda a: stats_hits(a) >= total, timeout=BUCKET_WAIT), \
        f"stats for {stats_hits(own_agent)} of {total} requests"
    kept = len(own_agent.traces) - kept_before - 1
    assert kept <= burst * 0.04, f"{kept} of {burst} traces sent at rate 0.01"
    c = counters(h)
    dropped = sum(int(p.headers.get("Datadog-Client-Dropped-P0-Traces") or 0)
                  for p in own_agent.payloads)
    spans = sum(int(p.headers.get("Datadog-Client-Dropped-P0-Spans") or 0)
                for p in own_agent.payloads)
    assert dropped == c["p0_traces_dropped"] == spans == c["p0_spans_dropped"], (dropped, c)
    assert dropped >= burst - kept, (dropped, kept, burst)
    # every traced request (the harness's probe too) was either sent or counted as dropped,
    # and the stats cover all of them but a probe made before /info was answered
    assert dropped + len(own_agent.traces) == c["requests_traced"], (dropped, c)
    assert total <= stats_hits(own_agent) <= c["requests_traced"], (stats_hits(own_agent), c)
    assert c["client_stats_active"] == 1 and c["client_stats_spans_dropped"] == 0, c


@pytest.mark.parametrize("fault", ["404", "down"])
def test_a_failing_stats_endpoint_leaves_requests_alone(make, own_agent, fault):
    own_agent.info = INFO
    own_agent.stats_status = 404 if fault == "404" else 200
    h = make(own_agent, f"cstats-{fault}")
    wait_cstats_on(h, own_agent)
    if fault == "down":
        own_agent.mode = "refuse"
    for _ in range(30):
        assert h.get("/index.html", headers={"User-Agent": unique_ua("cs-fault")}).status_code == 200
    deadline = time.monotonic() + BUCKET_WAIT
    while time.monotonic() < deadline:
        c = counters(h)
        if c["client_stats_payloads_failed"] >= 1:
            break
        time.sleep(0.3)
    assert c["client_stats_payloads_failed"] >= 1 and c["client_stats_payloads_sent"] == 0, c
    assert c["client_stats_buckets"] >= 1, c
    if fault == "down":
        own_agent.mode = "ok"
    else:
        assert len(own_agent.stats_payloads) >= 1  # it was tried, and said no
