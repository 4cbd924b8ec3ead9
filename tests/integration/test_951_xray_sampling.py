# SPDX-License-Identifier: Apache-2.0
"""test_951_xray_sampling.py - issue 17 item 3: sampling as X-Ray does it.

Each test runs its own fake daemon (xray_daemon.py) serving the rules and targets it chooses,
and its own httpd on the MPM of the run (so the reservoir tests cover event, worker and prefork
across the suite's passes). Requests come from several client threads on fresh connections, so
several children serve them; a CustomLog with %P says which child served which request.

What is checked: each inbound Sampled value; rules matching and not on host, method, URL path,
service name and service type (the origin); the reservoir per server across children (borrowing
before a quota, then X-Ray's quota); the SamplingTargets reports (one ClientID per server, the
counts); LastRuleModification refetching the rules; one poller per server; and the sampling API
absent, refusing, answering garbage, errors or stalling: requests unchanged, the local default
rule used, the failures counted.
"""

import collections
import concurrent.futures
import http.client
import math
import re
import time

import pytest

from helpers import counters, status_location, unique_ua
from httpd import valgrind_on
from xray_daemon import EVENT_ONLY, PLAIN_MPMS, XRayDaemon, rule

ROOT = "1-5759e988-bd862e3fe1be46a994272793"

pytestmark = pytest.mark.skipif(valgrind_on(), reason="timing: meaningless under valgrind")
ALLOW_LOG = [r"DDP3005"]  # the sampling API's failures are info lines; kept quiet anyway


@pytest.fixture
def daemon():
    d = XRayDaemon().start()
    yield d
    d.stop()
    assert not d.failures, "segment document rules broken:\n" + "\n".join(d.failures[:20])


@pytest.fixture
def started(daemon, httpd_factory):
    """start(...) for this test; its httpds stop at the test's end, before its daemon."""
    made = []

    def start(*args, **kw):
        h = _start(httpd_factory, *args, **kw)
        made.append(h)
        return h
    yield start
    for h in made:
        httpd_factory.finish(h)


def _start(httpd_factory, agent, backend, daemon, name, extra="", env=None, address=None):
    def config(h):
        return f"""
DDAgentURL {agent.url}
DDFlushInterval 100
DDService sampling-svc
DDXRay On
DDXRayDaemonAddress {address or daemon.address}
ProxyPass /api/ {backend.url}/
LogFormat "%P %{{User-Agent}}i" pids
CustomLog "{h.logs_dir}/pids" pids
{status_location()}
{extra}
"""
    return httpd_factory(name, config=config, env=env)


def wait_counter(h, key, n=1, timeout=10):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        x = counters(h)["xray"]
        if x[key] >= n:
            return x
        time.sleep(0.05)
    pytest.fail(f"xray.{key} did not reach {n}: {counters(h)['xray']}")


def send(h, path="/api/x", headers=()):
    ua = unique_ua("xs")
    conn = http.client.HTTPConnection("127.0.0.1", h.port, timeout=10)
    try:
        conn.putrequest("GET", path, skip_accept_encoding=True)
        conn.putheader("User-Agent", ua)
        for k, v in (headers.items() if isinstance(headers, dict) else headers):
            conn.putheader(k, v)
        conn.endheaders()
        resp = conn.getresponse()
        return resp.status, dict(resp.getheaders()), resp.read(), ua
    finally:
        conn.close()


def load(h, seconds, threads=8, path="/api/x"):
    """Requests from `threads` clients for `seconds`; returns their user agents."""
    stop = time.monotonic() + seconds

    def client():
        uas = []
        while time.monotonic() < stop:
            status, _, _, ua = send(h, path)
            assert status == 200
            uas.append(ua)
        return uas

    with concurrent.futures.ThreadPoolExecutor(threads) as ex:
        futures = [ex.submit(client) for _ in range(threads)]
        return [ua for f in futures for ua in f.result()]


def segments_of(daemon, uas, settle=1.0):
    time.sleep(settle)
    want = set(uas)
    return [s for s in daemon.segments() if s["http"]["request"].get("user_agent") in want]


def per_second(segs):
    return collections.Counter(int(s["start_time"]) for s in segs)


def pids_of(h, uas=None):
    want = set(uas) if uas is not None else None
    out = set()
    with open(f"{h.logs_dir}/pids") as f:
        for line in f:
            pid, _, ua = line.strip().partition(" ")
            if want is None or ua in want:
                out.add(pid)
    return out


# --- the inbound decision --------------------------------------------------------------------

def test_each_sampled_value(started, agent, backend, daemon):
    """Rules: /api/keep/* at rate 1, everything else (Default) at rate 0 without a reservoir.
    Sampled=1 and 0 are obeyed whatever the rules say; ?, absent and unknown values are the
    rules' to decide, and only ? gets the decision back."""
    daemon.rules = [rule("keep", priority=1, rate=1.0, path="/api/keep/*"),
                    rule("Default", priority=10000, rate=0.0, reservoir=0)]
    h = started(agent, backend, daemon, "xs-values")
    wait_counter(h, "sampling_rules_fetched")
    cases = [  # (path, Sampled field, recorded, response header)
        ("/api/drop/1", "Sampled=1", True, None),
        ("/api/keep/1", "Sampled=0", False, None),
        ("/api/keep/2", "Sampled=?", True, f"Root={ROOT};Sampled=1"),
        ("/api/drop/2", "Sampled=?", False, f"Root={ROOT};Sampled=0"),
        ("/api/keep/3", "", True, None),
        ("/api/drop/3", "", False, None),
        ("/api/keep/4", "Sampled=maybe", True, None),
        ("/api/drop/4", "Sampled=maybe", False, None),
    ]
    sent = []
    before = counters(h)["xray"]
    for path, sampled, recorded, answer in cases:
        hdr = f"Root={ROOT}" + (f";{sampled}" if sampled else "")
        status, rh, _, ua = send(h, path, {"X-Amzn-Trace-Id": hdr})
        assert status == 200
        assert rh.get("X-Amzn-Trace-Id") == answer, (path, sampled, rh)
        down = backend.by_header("User-Agent", ua).header("X-Amzn-Trace-Id")
        assert down.endswith(";Sampled=1" if recorded else ";Sampled=0"), (path, sampled, down)
        sent.append((path, sampled, recorded, ua))
    segs = {s["http"]["request"]["user_agent"]: s
            for s in segments_of(daemon, [s[3] for s in sent])}
    for path, sampled, recorded, ua in sent:
        assert (ua in segs) == recorded, (path, sampled)
        if recorded and "keep" in path and sampled != "Sampled=1":
            assert segs[ua]["aws"]["xray"]["rule_name"] == "keep"
    after = counters(h)["xray"]
    assert after["sampled"] - before["sampled"] == 4
    assert after["not_sampled"] - before["not_sampled"] == 4


def test_rules_match_on_host_method_path_service_and_type(started, agent, backend, daemon):
    """Each rule matches on one attribute (X-Ray wildcards, case-insensitive), in priority
    order; the origin (here ECS, from the environment) is the service type and appears in the
    segment; a rule for another service never matches; Default (rate 0) takes the rest."""
    daemon.rules = [
        rule("other-svc", priority=1, rate=1.0, service="other-*"),
        rule("by-host", priority=2, rate=1.0, host="*.shop.example"),
        rule("by-method", priority=3, rate=1.0, method="DELETE"),
        rule("by-path", priority=4, rate=1.0, path="/api/orders/*"),
        rule("not-ec2", priority=5, rate=1.0, service_type="AWS::EC2::Instance"),
        rule("by-service", priority=6, rate=1.0, service="SHOP-*", path="/api/svc"),
        rule("by-type", priority=7, rate=1.0, service_type="AWS::ECS::*", path="/api/type"),
        rule("Default", priority=10000, rate=0.0, reservoir=0),
        rule("attributes", priority=1, rate=1.0, attributes={"k": "v"}),  # not for us
        rule("other-arn", priority=1, rate=1.0, arn="arn:aws:ecs:x"),     # not for us
        rule("version-2", priority=1, rate=1.0, version=2),                 # not for us
    ]
    h = started(agent, backend, daemon, "xs-match", extra="DDXRaySegmentName shop-httpd",
              env={"ECS_CONTAINER_METADATA_URI_V4": "http://169.254.170.2/v4/test"})
    x = wait_counter(h, "sampling_rules_fetched")
    assert x["sampling_rules_skipped"] == 3
    cases = [  # (method, path, Host, rule or None)
        ("GET", "/api/x", "www.SHOP.example", "by-host"),
        ("DELETE", "/api/x", "127.0.0.1", "by-method"),
        ("GET", "/api/orders/7", "127.0.0.1", "by-path"),
        ("GET", "/api/svc", "127.0.0.1", "by-service"),
        ("GET", "/api/type", "127.0.0.1", "by-type"),
        ("GET", "/api/x", "127.0.0.1", None),
        ("POST", "/api/ordersx", "shop.example", None),
    ]
    sent = []
    for method, path, host, want in cases:
        ua = unique_ua("xm")
        conn = http.client.HTTPConnection("127.0.0.1", h.port, timeout=10)
        conn.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
        conn.putheader("Host", host)
        conn.putheader("User-Agent", ua)
        conn.endheaders()
        resp = conn.getresponse()
        resp.read()
        conn.close()
        assert resp.status == 200, (method, path, resp.status)
        sent.append((method, path, host, want, ua))
    segs = {s["http"]["request"]["user_agent"]: s
            for s in segments_of(daemon, [s[4] for s in sent])}
    for method, path, host, want, ua in sent:
        if want is None:
            assert ua not in segs, (method, path, host)
            continue
        assert ua in segs, (method, path, host, want)
        seg = segs[ua]
        assert seg["aws"]["xray"]["rule_name"] == want, (method, path, host, seg["aws"])
        assert seg["name"] == "shop-httpd"
        assert seg["origin"] == "AWS::ECS::Container"


# --- reservoirs per server --------------------------------------------------------------------

@PLAIN_MPMS
def test_borrowing_is_one_per_second_for_the_whole_server(started, agent, backend, daemon):
    """Before X-Ray gives a quota, a rule with a reservoir lends one request per second: per
    server, however many children serve the requests (FixedRate 0 leaves only that one)."""
    daemon.rules = [rule("borrow", priority=1, rate=0.0, reservoir=5)]
    daemon.targets = []  # X-Ray gives no quota yet
    h = started(agent, backend, daemon, "xs-borrow")
    wait_counter(h, "sampling_rules_fetched")
    t0 = time.time()
    uas = load(h, 3.5)
    segs = segments_of(daemon, uas)
    secs = per_second(segs)
    assert len(pids_of(h, uas)) >= 2, "one child served everything: the test proves nothing"
    assert secs and max(secs.values()) == 1, f"per second: {dict(secs)}"
    full = [s for s in range(math.ceil(t0), int(t0 + 3.5))]
    assert all(secs.get(s) == 1 for s in full), f"per second: {dict(secs)}, seconds {full}"
    assert all(s["aws"]["xray"]["rule_name"] == "borrow" for s in segs)


@PLAIN_MPMS
def test_quota_from_sampling_targets_is_per_server(started, agent, backend, daemon):
    """The first SamplingTargets report (2 s after the rules) has this server's ClientID and
    the borrow; X-Ray answers with a quota of 3 per second (TTL in epoch seconds): then exactly
    3 per second for the whole server."""
    daemon.rules = [rule("quota", priority=1, rate=0.0, reservoir=1)]

    def targets(docs):
        return [{"RuleName": d["RuleName"], "FixedRate": 0.0, "ReservoirQuota": 3,
                 "ReservoirQuotaTTL": time.time() + 120, "Interval": 10} for d in docs]

    daemon.targets = targets
    h = started(agent, backend, daemon, "xs-quota")
    wait_counter(h, "sampling_rules_fetched")
    for _ in range(5):
        send(h)
    x = wait_counter(h, "sampling_targets_fetched", timeout=8)
    (call,) = daemon.calls("/SamplingTargets")
    (doc,) = call[1]["SamplingStatisticsDocuments"]
    assert doc["RuleName"] == "quota" and re.fullmatch(r"[0-9a-f]{24}", doc["ClientID"]), doc
    assert doc["RequestCount"] >= 5 and doc["BorrowCount"] >= 1 and doc["SampledCount"] == 0
    assert abs(doc["Timestamp"] - time.time()) < 5
    assert x["sampling_targets_fetched"] == 1
    time.sleep(1.0 - time.time() % 1.0)  # start on a second boundary
    t0 = time.time()
    uas = load(h, 3.2)
    segs = segments_of(daemon, uas)
    secs = per_second(segs)
    assert len(pids_of(h, uas)) >= 2, "one child served everything: the test proves nothing"
    assert max(secs.values()) == 3, f"per second: {dict(secs)}"
    assert [secs.get(s) for s in range(int(t0), int(t0) + 3)] == [3, 3, 3], dict(secs)
    # one poller for the server: a single rules fetch so far, one ClientID
    assert len(daemon.calls("/GetSamplingRules")) == 1
    assert {c[1]["SamplingStatisticsDocuments"][0]["ClientID"]
            for c in daemon.calls("/SamplingTargets")} == {doc["ClientID"]}


@EVENT_ONLY
def test_last_rule_modification_refetches_the_rules(started, agent, backend, daemon):
    daemon.rules = [rule("old", priority=1, rate=0.0, reservoir=1)]
    daemon.last_rule_modification = time.time() + 3600  # "changed after your fetch"
    h = started(agent, backend, daemon, "xs-lrm")
    wait_counter(h, "sampling_rules_fetched")
    daemon.rules = [rule("new", priority=1, rate=1.0)]
    send(h)
    wait_counter(h, "sampling_targets_fetched", timeout=8)
    wait_counter(h, "sampling_rules_fetched", n=2, timeout=3)
    status, _, _, ua = send(h)
    assert daemon.segment_for(ua)["aws"]["xray"]["rule_name"] == "new"


# --- the sampling API misbehaving ----------------------------------------------------------

@EVENT_ONLY
@pytest.mark.parametrize("mode", ["refuse", "garbage", "status", "stall"])
def test_sampling_api_faults_change_nothing_for_requests(started, agent, backend, daemon,
                                                         mode):
    """The local default rule (1 per second, then 5 %) decides; requests answer as fast as
    ever; the failures are counted; segments still go out over UDP."""
    daemon.rules = [rule("never-used", priority=1, rate=1.0)]
    address = None  # (nothing listening at all: test_950's daemon-absent test)
    if mode == "status":
        daemon.set_mode("status", status_code=500)
    elif mode == "stall":
        daemon.set_mode("stall", stall_seconds=3.0)
    else:
        daemon.set_mode(mode)
    h = started(agent, backend, daemon, f"xs-{mode}", address=address)
    worst = 0.0
    uas = []
    time.sleep(1.0 - time.time() % 1.0)  # a second whose reservoir httpd's probe did not use
    for _ in range(20):
        t = time.monotonic()
        status, _, body, ua = send(h)
        worst = max(worst, time.monotonic() - t)
        assert (status, body) == (200, b"backend ok\n")
        uas.append(ua)
    assert worst < 0.5, f"a request took {worst:.3f}s"
    x = wait_counter(h, "sampling_errors", timeout=8)
    assert x["sampling_rules_fetched"] == 0
    segs = segments_of(daemon, uas)
    assert segs, "the local default rule keeps the first request of each second"
    assert all("rule_name" not in s["aws"]["xray"] for s in segs)
    assert max(per_second(segs).values()) <= 1 + 4  # 1 + at most a few of the 5 %
