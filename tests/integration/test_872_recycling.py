# SPDX-License-Identifier: Apache-2.0
"""test_872_recycling.py - issue 14.2 and 14.3: children that the MPM recycles and replaces
lose no trace and send none twice; counters reconcile; shared memory does not grow across
100 graceful restarts; two httpds on one host share one agent but never their counters.

Every trace is counted by trace id against the access log (which logs %{dd.trace_id}n).
"""

import re
import threading
import time

import pytest
import requests

import conftest
from helpers import child_pids, counters, status_location, unique_ua
from test_400_correlation import full_trace_id
from test_870_restarts import apache_k

N_PER_PHASE = 150
THREADS = 4


@pytest.fixture
def own_agent():
    with conftest.running_agent() as a:
        yield a


def config(agent, extra=""):
    return "\n".join([f"DDAgentURL {agent.url}", "DDFlushInterval 200", status_location(),
                      extra])


def blast(h, n, tag):
    """n requests on fresh connections from THREADS threads; their User-Agents."""
    uas = [unique_ua(tag) for _ in range(n)]
    errors = []

    def run(part):
        s = requests.Session()
        for ua in part:
            try:
                r = s.get(h.url("/index.html"), timeout=10,
                          headers={"User-Agent": ua, "Connection": "close"})
                if r.status_code != 200:
                    errors.append(f"{ua}: {r.status_code}")
            except requests.RequestException as e:
                errors.append(f"{ua}: {e}")

    threads = [threading.Thread(target=run, args=(uas[i::THREADS],)) for i in range(THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors[:5]
    return uas


def log_trace_ids(h, uas):
    """{ua: 32-hex trace id} from the access log."""
    wanted, out = set(uas), {}
    for ln in h.access_log_lines():
        m = re.search(r'"(ddtest-[^"]+)" (\S+) (\S+)$', ln)
        if m and m.group(1) in wanted:
            assert m.group(1) not in out, f"two access log lines for {m.group(1)}"
            out[m.group(1)] = m.group(2)
    return out


def agent_trace_ids(agent, uas):
    """{ua: [32-hex trace ids of the chunks carrying its server span]}."""
    wanted, out = set(uas), {}
    for chunk in list(agent.traces):
        for s in chunk:
            ua = (s.get("meta") or {}).get("http.useragent")
            if ua in wanted and s.get("name") == "httpd.request":
                out.setdefault(ua, []).append(full_trace_id(chunk))
    return out


def test_recycled_children_lose_and_repeat_nothing(httpd_factory, own_agent):
    """MaxConnectionsPerChild 40 (a child every 40 connections), a graceful restart that
    changes MaxRequestWorkers, bursts that make the MPM start children, then graceful-stop."""
    h = httpd_factory("recycle", config=config(own_agent, "MaxConnectionsPerChild 40"))
    h.session.close()
    uas = blast(h, N_PER_PHASE, "recycle-a")
    pids_before = set(child_pids(h))
    h.write_config(config(own_agent, "MaxConnectionsPerChild 40\nMaxRequestWorkers 8"
                          if h.mpm == "prefork" else
                          "MaxConnectionsPerChild 40\nMaxRequestWorkers 32"))
    apache_k(h, "graceful")
    uas += blast(h, N_PER_PHASE, "recycle-b")
    uas += blast(h, N_PER_PHASE, "recycle-c")
    assert pids_before - set(child_pids(h)), "no child was replaced: the test would test nothing"
    time.sleep(1.0)  # every child flushes (DDFlushInterval 200 ms)
    c = counters(h)
    dropped = sum(c["chunks_dropped"].values())
    # one status request is queued meanwhile at most (DDTrace Off: it is not traced at all)
    assert c["chunks_queued"] == c["chunks_sent"] + dropped, c
    assert dropped == 0, c
    h.stop()  # graceful-stop
    logged = log_trace_ids(h, uas)
    httpd_factory.finish(h)  # its log checked
    assert len(logged) == len(uas), f"{len(uas) - len(logged)} requests not in the access log"
    own_agent.wait_for(lambda a: len(agent_trace_ids(a, uas)) == len(uas), timeout=10)
    time.sleep(0.5)
    seen = agent_trace_ids(own_agent, uas)
    missing = [ua for ua in uas if ua not in seen]
    twice = {ua: ids for ua, ids in seen.items() if len(ids) != 1}
    wrong = {ua: (ids, logged[ua]) for ua, ids in seen.items() if ids[0] != logged[ua]}
    assert not missing and not twice and not wrong, (
        f"{len(missing)} of {len(uas)} traces lost, {len(twice)} sent twice, {len(wrong)} with "
        f"another trace id than the access log's: {list(twice.items())[:2]} "
        f"{list(wrong.items())[:2]}")


def shm_maps(pid):
    """The master's shared mappings (anonymous shared memory and /dev/zero, SysV, files)."""
    with open(f"/proc/{pid}/maps") as f:
        return [ln for ln in f if " rw-s " in ln]


def test_shared_memory_does_not_grow_across_100_graceful_restarts(httpd_factory, own_agent):
    h = httpd_factory("graceful-100", config=config(own_agent))
    h.session.close()
    before = shm_maps(h.proc.pid)
    for i in range(100):
        apache_k(h, "graceful")
    r = requests.get(h.url("/index.html"), headers={"Connection": "close"}, timeout=10)
    assert r.status_code == 200
    after = shm_maps(h.proc.pid)
    size = lambda maps: sum(int(b, 16) - int(a, 16) for a, b in
                            (ln.split()[0].split("-") for ln in maps))
    print(f"\n{h.mpm}: shared mappings {len(before)} ({size(before)} B) -> {len(after)} "
          f"({size(after)} B) after 100 graceful restarts")
    httpd_factory.finish(h)  # before the test's own agent goes
    assert len(after) == len(before) and size(after) == size(before), \
        f"shared memory grew:\nbefore {before}\nafter {after}"


def test_two_httpds_one_agent_never_mix_counters(httpd_factory, own_agent):
    """Two instances on one host, one agent: each one's counters are its own requests, and
    each one's traces carry its own service."""
    a = httpd_factory("twin-a", config=config(own_agent, "DDService twin-a"))
    b = httpd_factory("twin-b", config=config(own_agent, "DDService twin-b"))
    ua_a = [unique_ua("twin-a") for _ in range(7)]
    ua_b = [unique_ua("twin-b") for _ in range(13)]
    time.sleep(0.3)  # the start-up probes' log_transaction (after their answer) is over
    for h, uas in ((a, ua_a), (b, ua_b)):
        before = {x.name: counters(x)["requests_traced"] for x in (a, b)}
        for ua in uas:
            assert requests.get(h.url("/index.html"), timeout=10,
                                headers={"User-Agent": ua}).status_code == 200
        after = {x.name: counters(x)["requests_traced"] for x in (a, b)}
        want = {x.name: before[x.name] + (len(uas) if x is h else 0) for x in (a, b)}
        assert after == want, f"requests to {h.name} counted as {after}, not {want}"
    own_agent.wait_for(lambda ag: len(agent_trace_ids(ag, ua_a + ua_b)) == 20, timeout=10)
    for chunk in list(own_agent.traces):
        for s in chunk:
            ua = (s.get("meta") or {}).get("http.useragent")
            if ua in ua_a or ua in ua_b:
                assert s["service"] == ("twin-a" if ua in ua_a else "twin-b"), s
    httpd_factory.finish(a)
    httpd_factory.finish(b)
