# SPDX-License-Identifier: Apache-2.0
"""test_870_restarts.py - CONTRACT section 6 (issue 5): what children queued is sent when they go
away (graceful restart, hard restart, stop, graceful-stop), and a hung agent cannot hold a stop.

DDFlushInterval 60000 and a few dozen requests (far from half of the queue) make sure that only
the children's exit flush can deliver the traces: the tests check that nothing arrived before.
The signals go through `apache2 -k <action>` (PidFile), as an administrator sends them.
"""

import re
import subprocess
import time

import pytest
import requests

import conftest
from helpers import child_pids, counters, dump, gateway_headers, status_location, unique_ua
from httpd import APACHE2, valgrind_on

N = 40
STOP_BOUND_S = 10.0  # README: a stop completes within this even with a hung agent
AGENT_TROUBLE = r"\[dd_proxy:warn\] .*DDP1002: cannot deliver traces to the agent"
SLOW = 6 if valgrind_on() else 1
# the hung-agent tests; the others check they have none (make_httpd)
ALLOW_LOG = [AGENT_TROUBLE]


@pytest.fixture
def own_agent():
    with conftest.running_agent() as a:
        yield a


@pytest.fixture
def make_httpd(httpd_factory):
    """make(name, agent, flush) -> a started httpd that stops before the test's agent goes."""
    made = []

    def make(name, agent, flush=60000):
        h = httpd_factory(name, config="\n".join([
            f"DDAgentURL {agent.url}",
            f"DDFlushInterval {flush}",
            "DDInferredProxy On",
            status_location(),
        ]))
        h.session.close()  # no kept-alive connection holds an old child at a restart
        h.hung_agent = agent.mode != "ok"
        made.append(h)
        return h

    yield make
    for h in made:
        httpd_factory.finish(h)  # also checks the log of one that stopped already
        if not h.hung_agent:
            assert not re.search(AGENT_TROUBLE, h.error_log_text()), \
                "an agent error with the agent up"


def apache_k(h, action):
    """`apache2 -f <conf> -k action`, as an administrator (or apachectl) runs it."""
    p = subprocess.run([APACHE2, "-f", h.conf_path, "-k", action], env=h._env(),
                       capture_output=True, text=True, timeout=30)
    assert p.returncode == 0, f"apache2 -k {action}: {p.returncode}\n{p.stdout}{p.stderr}"


def send(h, n, tag):
    """n gateway requests on fresh connections (spread over the children); their UAs."""
    uas = [unique_ua(tag) for _ in range(n)]
    for ua in uas:
        hdrs = dict(gateway_headers(domain="restarts.example"), **{"User-Agent": ua,
                                                                 "Connection": "close"})
        r = requests.get(h.url("/index.html"), headers=hdrs, timeout=10)
        assert r.status_code == 200
    return uas


def arrived(agent, uas):
    """{ua: number of chunks carrying it}."""
    wanted = set(uas)
    seen = {}
    for c in agent.traces:
        for s in c:
            ua = (s.get("meta") or {}).get("http.useragent")
            if ua in wanted and s.get("name") == "httpd.request":
                seen[ua] = seen.get(ua, 0) + 1
    return seen


def assert_none_sent_yet(agent, uas):
    time.sleep(0.5)
    early = arrived(agent, uas)
    assert not early, (f"{len(early)} traces sent before the restart although DDFlushInterval is "
                       "60000 and the queue is far from half full: the test would not test "
                       "the exit flush")


def assert_all_arrive_once(agent, uas, timeout):
    agent.wait_for(lambda a: len(arrived(a, uas)) == len(uas), timeout)
    time.sleep(0.3)
    seen = arrived(agent, uas)
    missing = [ua for ua in uas if ua not in seen]
    dupes = {ua: k for ua, k in seen.items() if k != 1}
    assert not missing and not dupes, (f"{len(missing)} of {len(uas)} traces lost, "
                                       f"{len(dupes)} duplicated; agent saw {agent.counts}")


def wait_gone(h, pids, timeout):
    """Seconds until none of pids exists (None when some still do after timeout)."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        alive = [p for p in pids if _alive(p)]
        if not alive:
            return time.monotonic() - t0
        time.sleep(0.05)
    return None


def _alive(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ", 1)[1][0] != "Z"
    except (OSError, IndexError):
        return False


def wait_master_exit(h, timeout):
    """After -k stop / graceful-stop: seconds until the master and all children are gone."""
    t0 = time.monotonic()
    try:
        h.proc.wait(timeout)
    except subprocess.TimeoutExpired:
        return None
    while h._group_alive() and time.monotonic() - t0 < timeout:
        time.sleep(0.05)
    return None if h._group_alive() else time.monotonic() - t0


# --- traces queued before a restart or stop reach the agent ---------------------------------

@pytest.mark.parametrize("action", ["graceful", "restart"])
def test_restart_delivers_what_was_queued(make_httpd, own_agent, action):
    h = make_httpd(f"restart-{action}", own_agent)
    before = counters(h)
    old = child_pids(h)
    uas = send(h, N, action)
    assert_none_sent_yet(own_agent, uas)

    apache_k(h, action)
    gone = wait_gone(h, old, STOP_BOUND_S * SLOW)
    assert gone is not None, f"old children still there {STOP_BOUND_S}s after -k {action}"
    assert_all_arrive_once(own_agent, uas, timeout=5 * SLOW)

    # the new generation serves and traces; the counters survived (shared, retained)
    deadline = time.monotonic() + 10 * SLOW
    while time.monotonic() < deadline:
        try:
            if requests.get(h.url("/index.html"), timeout=2).status_code == 200:
                break
        except requests.RequestException:
            pass
        time.sleep(0.1)
    c = counters(h)
    assert c["requests_traced"] - before["requests_traced"] >= N, dump(c)
    assert c["chunks_sent"] - before["chunks_sent"] >= N, dump(c)
    assert c["chunks_dropped"] == {"queue_full": 0, "encode_error": 0, "agent_error": 0}, dump(c)
    later = send(h, 5, action + "-after")
    h.stop()
    assert_all_arrive_once(own_agent, later, timeout=5 * SLOW)
    print(f"\n{h.mpm}: old children gone {gone:.2f}s after -k {action}")


@pytest.mark.parametrize("action", ["stop", "graceful-stop"])
def test_stop_delivers_what_was_queued(make_httpd, own_agent, action):
    h = make_httpd(f"stop-{action}", own_agent)
    uas = send(h, N, action)
    assert_none_sent_yet(own_agent, uas)

    apache_k(h, action)
    took = wait_master_exit(h, STOP_BOUND_S * SLOW)
    assert took is not None, f"-k {action} did not finish within {STOP_BOUND_S}s"
    assert_all_arrive_once(own_agent, uas, timeout=2)
    print(f"\n{h.mpm}: -k {action} took {took:.2f}s")


# --- a hung agent cannot hold a stop -------------------------------------------------------

@pytest.mark.parametrize("flush", [100, 60000], ids=["sending", "exit-flush"])
@pytest.mark.parametrize("action", ["stop", "graceful-stop"])
def test_stop_with_hung_agent_is_bounded(make_httpd, own_agent, action, flush):
    """The agent accepts and never answers. With flush 100 the flusher is stuck in a send when
    the stop comes; with 60000 the exit flush meets the hung agent. Either way the stop ends
    within STOP_BOUND_S, and no child needs the master's SIGTERM/SIGKILL escalation (that
    would be a warn/error line in the log)."""
    own_agent.set_mode("stall", stall_seconds=60)
    h = make_httpd(f"hung-{action}-{flush}", own_agent, flush=flush)
    send(h, N, "hung")
    if flush == 100:
        own_agent.wait_for(lambda a: a.payloads, timeout=3)
        assert own_agent.payloads, "no send started"
    t0 = time.monotonic()
    apache_k(h, action)
    took = wait_master_exit(h, 30)
    assert took is not None, "the stop hung for 30s"
    print(f"\n{h.mpm}: -k {action} with a hung agent took {time.monotonic() - t0:.2f}s")
    assert took < STOP_BOUND_S, f"-k {action} took {took:.1f}s with a hung agent"
    bad = [ln for ln in h.bad_log_lines(allow=[AGENT_TROUBLE])]
    assert not bad, "\n".join(bad)


def test_graceful_with_hung_agent(make_httpd, own_agent):
    """A graceful restart while the agent hangs: the new generation serves at once, the old
    children go away within the bound, and delivery resumes when the agent does."""
    own_agent.set_mode("stall", stall_seconds=60)
    h = make_httpd("hung-graceful", own_agent, flush=100)
    send(h, N, "hung-g")
    own_agent.wait_for(lambda a: a.payloads, timeout=3)
    old = child_pids(h)
    apache_k(h, "graceful")
    t0 = time.monotonic()
    while True:
        try:
            r = requests.get(h.url("/index.html"), headers={"Connection": "close"}, timeout=5)
            if r.status_code == 200:
                break
        except requests.RequestException:
            pass
        # bounded by the exit flush's 2 s (the MPMs start the new generation as old children
        # exit, or at their once-a-second maintenance)
        assert time.monotonic() - t0 < 3 * SLOW, "not serving 3s after the graceful restart"
        time.sleep(0.05)
    gone = wait_gone(h, old, STOP_BOUND_S * SLOW)
    assert gone is not None, f"old children still there {STOP_BOUND_S}s after -k graceful"
    print(f"\n{h.mpm}: served {time.monotonic() - t0:.2f}s after -k graceful with a hung agent; "
          f"old children gone after {gone:.2f}s")
    own_agent.set_mode("ok")
    uas = send(h, 5, "hung-g-back")
    h.stop()
    assert_all_arrive_once(own_agent, uas, timeout=5)
    bad = [ln for ln in h.bad_log_lines(allow=[AGENT_TROUBLE])]
    assert not bad, "\n".join(bad)
    assert len(re.findall(AGENT_TROUBLE, h.error_log_text())) <= 2 * h.max_children
