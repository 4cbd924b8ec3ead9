# SPDX-License-Identifier: Apache-2.0
"""test_800_faults.py - CONTRACT sections 6, 7 and 8 (issue 5): the agent misbehaves, requests do
not notice, the counters say what happened, and delivery resumes by itself.

Each fault is its own test with its own agent and httpd (fresh counters, a fresh once-a-minute
log budget): nothing listening, an agent that stalls past the 2 s send timeout, 500 / 413 / 429,
a garbage body, a connection closed mid-response, a unix socket path that does not exist, and
answers whose rate_by_service is unusable. Each runs three phases:

1. agent up: reference responses, reference latency (median of 50 requests), all delivered;
2. fault: the same responses (status and body), latency within noise (median + 20 ms, and no
   request anywhere near the 2 s send timeout), the counters say what happened (agent_errors;
   chunks_dropped.agent_error = exactly this phase's chunks; last_agent_error's status, message
   and time), the warn line at most once per child;
3. agent back: delivery resumes by itself, exactly once, and the counters reconcile.
"""

import os
import re
import shutil
import statistics
import time

import pytest
import requests

import conftest
from helpers import (access_log_traced, counters, dump, gateway_headers, one_chunk,
                     status_location, unique_ua)
from httpd import make_shared_dir, valgrind_on

# The module's warn lines are allowed here; every test checks them itself (once per child).
ALLOW_LOG = [r"\[dd_proxy:warn\]"]
DD_WARN_RE = re.compile(r"\[dd_proxy:warn\] \[pid (\d+)[^\]]*\](?: \[client [^\]]*\])? "
                        r"(DDP\d+)?")
LATENCY_SAMPLES = 50
LATENCY_SLACK_S = 0.020
SLOW_REQUEST_S = 1.0  # the send timeout is 2 s: a request that waited on the agent shows here

pytestmark = pytest.mark.skipif(valgrind_on(), reason="latency is meaningless under valgrind")


# --- fixtures ------------------------------------------------------------------------------

@pytest.fixture
def tcp_agent():
    with conftest.running_agent() as a:
        yield a


@pytest.fixture
def unix_agent():
    d = make_shared_dir("ddtest-ua-")
    try:
        with conftest.running_agent(unix_path=os.path.join(d, "agent.sock")) as a:
            yield a
    finally:
        shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def make_httpd(httpd_factory, backend):
    """make(name, agent) -> a started httpd for one test; it stops at the end of the test,
    before the test's agent goes away."""
    made = []

    def make(name, agent):
        h = httpd_factory(name, config="\n".join([
            f"ProxyPass /api/ {backend.url}/",
            f"DDAgentURL {agent.url}",
            "DDFlushInterval 100",
            "DDInferredProxy On",
            status_location(),
        ]))
        made.append(h)
        return h

    yield make
    for h in made:
        if h.proc is not None:
            httpd_factory.finish(h)


# --- requests ------------------------------------------------------------------------------

def gw(path="/index.html"):
    return gateway_headers("aws-apigateway", path=path, domain="faults.example", stage="prod",
                           region="eu-west-1", api_id="f1")


# (method, path, gateway headers?, body): static, not found, proxied, proxied error, HEAD, POST
EXCHANGES = [
    ("GET", "/index.html", True, None),
    ("GET", "/missing.html", True, None),
    ("GET", "/api/ok", True, None),
    ("GET", "/api/status/503", True, None),
    ("HEAD", "/index.html", False, None),
    ("POST", "/api/post", True, b"x=1"),
]


def responses(h):
    """(method, path, status, body) of each of EXCHANGES, on fresh connections."""
    out = []
    for method, path, with_gw, body in EXCHANGES:
        hdrs = dict(gw(path) if with_gw else {}, **{"User-Agent": unique_ua("fault-x"),
                                                    "Connection": "close"})
        r = requests.request(method, h.url(path), headers=hdrs, data=body, timeout=10,
                             allow_redirects=False)
        out.append((method, path, r.status_code, r.content))
    return out


def latency(h, n=LATENCY_SAMPLES):
    """(median, max) seconds of n gateway requests on one keep-alive connection."""
    s = requests.Session()
    took = []
    try:
        for _ in range(n):
            t0 = time.monotonic()
            r = s.get(h.url("/index.html"), headers=dict(gw(), **{"User-Agent": "ddtest-lat"}),
                      timeout=10)
            took.append(time.monotonic() - t0)
            assert r.status_code == 200
    finally:
        s.close()
    return statistics.median(took), max(took)


# --- counters and logs ---------------------------------------------------------------------

def settled(h, timeout=15.0):
    """Counters once every request answered so far is counted (a response goes out before the
    request is logged and counted) and every queued chunk was sent or dropped."""
    deadline = time.monotonic() + timeout
    while True:
        c = counters(h)
        d = c["chunks_dropped"]
        if c["chunks_queued"] == c["chunks_sent"] + d["agent_error"] + d["encode_error"] and \
                c["requests_traced"] == access_log_traced(h):
            return c
        if time.monotonic() > deadline:
            pytest.fail(f"chunks still queued after {timeout}s: {dump(c)}", pytrace=False)
        time.sleep(0.1)


def wait_counter(h, pred, timeout=10.0):
    deadline = time.monotonic() + timeout
    while True:
        c = counters(h)
        if pred(c) or time.monotonic() > deadline:
            return c
        time.sleep(0.1)


def reconcile(c):
    d = c["chunks_dropped"]
    assert d["queue_full"] == 0 and d["encode_error"] == 0, dump(c)
    assert c["requests_traced"] == c["chunks_queued"], dump(c)
    assert c["chunks_queued"] == c["chunks_sent"] + d["agent_error"], dump(c)


def warn_lines(h):
    """{(pid, DDP code): [lines]} of the module's warn lines so far."""
    out = {}
    for line in h.error_log_text().splitlines():
        m = DD_WARN_RE.search(line)
        if m:
            out.setdefault((m.group(1), m.group(2)), []).append(line)
    return out


def assert_once_per_child(h):
    lines = warn_lines(h)
    repeated = {f"{k[0]} {k[1]}": v for k, v in lines.items() if len(v) > 1}
    assert not repeated, "logged more than once a minute per child:\n" + dump(repeated)
    return lines


def resumes(h, agent, timeout=10.0):
    """After the agent came back: a request's trace arrives by itself; then 20 more requests
    arrive exactly once."""
    deadline = time.monotonic() + timeout
    ua = unique_ua("back")
    while time.monotonic() < deadline:
        h.get("/index.html", headers={"User-Agent": ua})
        if agent.wait_for_chunks_with_meta("http.useragent", ua, 1, timeout=0.3):
            break
    assert agent.chunks_with_meta("http.useragent", ua), \
        f"delivery did not resume within {timeout}s; agent saw {agent.counts}: {dump(counters(h))}"
    uas = [unique_ua("back-n") for _ in range(20)]
    for u in uas:
        assert h.get("/index.html", headers=dict(gw(), **{"User-Agent": u})).status_code == 200
    for u in uas:
        one_chunk(agent, u, timeout=5, settle=0)
    time.sleep(0.3)
    for u in uas:
        assert len(agent.chunks_with_meta("http.useragent", u)) == 1, u


def delivery_failed(expect_status, expect_message):
    """The checks for a fault that makes sends fail."""
    def check(h, base, c, t_fault):
        fault_traced = c["requests_traced"] - base["requests_traced"]
        d = c["chunks_dropped"]
        assert c["agent_errors"] > 0, dump(c)
        # exactly this phase's chunks were dropped because of the agent; none counts as sent
        assert d["agent_error"] - base["chunks_dropped"]["agent_error"] == fault_traced, dump(c)
        assert c["chunks_sent"] == base["chunks_sent"], dump(c)
        last = c["last_agent_error"]
        print(f"\n{h.name}: last_agent_error {last}")
        assert last["http_status"] in expect_status, dump(last)
        assert re.search(expect_message, last["message"]), dump(last)
        assert t_fault - 1 <= last["time"] <= time.time() + 1, dump(last)
        lines = assert_once_per_child(h)
        assert lines, "the agent error was not logged"
        assert {code for _, code in lines} == {"DDP1002"}, dump(lines)
        text = "\n".join(ln for v in lines.values() for ln in v)
        assert "cannot deliver traces to the agent" in text, text
    return check


def run_fault(h, agent, start_fault, end_fault, check, wait_for_error=True):
    """The three phases; check(h, base, counters, t_fault) judges the counters of phase 2.
    Returns (median latency up, median latency with the fault)."""
    # 1. agent up
    reference = responses(h)
    up_med, up_max = latency(h)
    base = settled(h)
    assert base["agent_errors"] == 0 and base["chunks_sent"] == base["requests_traced"], \
        dump(base)
    assert not warn_lines(h)

    # 2. the fault
    t_fault = int(time.time())
    start_fault()
    during = responses(h)
    f_med, f_max = latency(h)
    assert during == reference, "the agent's fault changed responses"
    if wait_for_error:
        wait_counter(h, lambda c: c["agent_errors"] > 0)
    c = settled(h)
    assert c["requests_traced"] - base["requests_traced"] == len(EXCHANGES) + LATENCY_SAMPLES, \
        dump(c)
    check(h, base, c, t_fault)
    reconcile(c)

    print(f"\n{h.mpm} {h.name}: median latency agent up {up_med * 1000:.2f} ms, with the "
          f"fault {f_med * 1000:.2f} ms (max {up_max * 1000:.1f} / {f_max * 1000:.1f} ms)")
    assert f_med <= up_med + LATENCY_SLACK_S, (up_med, f_med)
    assert f_max < SLOW_REQUEST_S, f"a request took {f_max:.2f}s with the agent faulty"

    # 3. the agent is back
    end_fault()
    resumes(h, agent)
    end = settled(h)
    reconcile(end)
    assert end["chunks_sent"] > c["chunks_sent"], dump(end)
    assert_once_per_child(h)
    return up_med, f_med


def mode(agent, m, **kw):
    return lambda: agent.set_mode(m, **kw)


# --- the faults ----------------------------------------------------------------------------

def test_agent_not_listening(make_httpd, tcp_agent):
    """"refuse": the agent's port is closed (nothing listens); it opens again later."""
    h = make_httpd("fault-refuse", tcp_agent)
    run_fault(h, tcp_agent, mode(tcp_agent, "refuse"), mode(tcp_agent, "ok"),
              delivery_failed((0,), r"(?i)connect"))


def test_agent_stalls_past_timeout(make_httpd, tcp_agent):
    h = make_httpd("fault-stall", tcp_agent)
    run_fault(h, tcp_agent, mode(tcp_agent, "stall", stall_seconds=4), mode(tcp_agent, "ok"),
              delivery_failed((0,), r"(?i)timed? ?out"))


@pytest.mark.parametrize("code", [500, 413, 429])
def test_agent_answers_error_status(make_httpd, tcp_agent, code):
    h = make_httpd(f"fault-{code}", tcp_agent)
    run_fault(h, tcp_agent, mode(tcp_agent, "status", status_code=code), mode(tcp_agent, "ok"),
              delivery_failed((code,), rf"\b{code}\b"))


def test_agent_closes_mid_response(make_httpd, tcp_agent):
    h = make_httpd("fault-close", tcp_agent)
    # the status line (200) came, the promised body did not
    run_fault(h, tcp_agent, mode(tcp_agent, "close"), mode(tcp_agent, "ok"),
              delivery_failed((0, 200), r"(?i)closed|partial|remaining|receiv|recv|transfer"))


def test_agent_unix_socket_missing(make_httpd, unix_agent):
    h = make_httpd("fault-unix", unix_agent)
    path = unix_agent.unix_path

    def start_fault():
        unix_agent.stop()  # removes the socket file
        assert not os.path.exists(path)

    run_fault(h, unix_agent, start_fault, unix_agent.start,
              delivery_failed((0,), r"(?i)unix socket .*(no such file|not found|exist)"))
    msg = counters(h)["last_agent_error"]["message"]
    assert os.path.dirname(path) in msg or "agent.sock" in msg, msg


def test_agent_answers_garbage(make_httpd, tcp_agent):
    """A 200 whose body is not JSON: the traces got there (the agent recorded them), the answer
    is unusable; CONTRACT 8: garbage is counted (and logged at most once a minute per child)."""
    h = make_httpd("fault-garbage", tcp_agent)

    def check(h, base, c, t_fault):
        fault_traced = c["requests_traced"] - base["requests_traced"]
        sent = c["chunks_sent"] - base["chunks_sent"]
        dropped = c["chunks_dropped"]["agent_error"] - base["chunks_dropped"]["agent_error"]
        assert sent + dropped == fault_traced, dump(c)
        got = sum(len(p.chunks) for p in tcp_agent.payloads if p.mode == "garbage")
        assert got >= fault_traced, f"the agent recorded {got} traces while answering garbage"
        counted = (c["agent_rates_rejected"] - base["agent_rates_rejected"]) + \
            (c["agent_errors"] - base["agent_errors"])
        assert counted > 0, ("a garbage answer from the agent is not counted anywhere "
                             "(agent_rates_rejected and agent_errors unchanged): " + dump(c))
        assert_once_per_child(h)

    run_fault(h, tcp_agent, mode(tcp_agent, "garbage"), mode(tcp_agent, "ok"), check,
              wait_for_error=False)


BAD_RATES = {
    "service:a,env:": 1.5,
    "service:b,env:": -0.25,
    "service:c,env:": "0.5",
    "service:d,env:": None,
    "service:e,env:": [0.5],
    "service:,env:": 1.0,  # the one usable entry
}


@pytest.mark.parametrize("rates,per_answer", [(BAD_RATES, 5), ([0.5, 1.0], 1), ("all", 1)],
                         ids=["out-of-range-and-wrong-types", "a-list", "a-string"])
def test_agent_answers_bad_rates(make_httpd, tcp_agent, rates, per_answer):
    """200 with an unusable rate_by_service: delivered, and every bad entry counted in
    agent_rates_rejected (exactly: per_answer for each payload sent)."""
    h = make_httpd("fault-rates", tcp_agent)
    good = tcp_agent.rate_by_service

    def start():
        tcp_agent.rate_by_service = rates

    def end():
        tcp_agent.rate_by_service = good

    def check(h, base, c, t_fault):
        fault_traced = c["requests_traced"] - base["requests_traced"]
        assert c["chunks_sent"] - base["chunks_sent"] == fault_traced, dump(c)
        assert c["agent_errors"] == base["agent_errors"], dump(c)
        payloads = c["payloads_sent"] - base["payloads_sent"]
        rejected = c["agent_rates_rejected"] - base["agent_rates_rejected"]
        assert payloads > 0 and rejected == per_answer * payloads, \
            f"{payloads} answers rejected {rejected} rates, want {per_answer} each: {dump(c)}"
        assert_once_per_child(h)

    run_fault(h, tcp_agent, start, end, check, wait_for_error=False)
