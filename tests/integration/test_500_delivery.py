# SPDX-License-Identifier: Apache-2.0
"""test_500_delivery.py - CONTRACT section 6: getting chunks to the agent, over TCP and a unix
socket, exactly once, with the agent's headers; requests never wait on (or fail because of)
the agent; what is queued is sent when httpd stops."""

import contextlib
import os
import shutil
import threading
import time

import pytest

import conftest
from helpers import SERVER_SPAN, one_chunk, unique_ua
from httpd import Httpd, HttpdError, free_port, make_shared_dir

AGENT_TROUBLE = r"\[dd_proxy:(warn|error)\]"  # the module's (rate-limited) agent error lines


@pytest.fixture(scope="module")
def unix_agent():
    d = make_shared_dir("ddtest-agent-")
    try:
        with conftest.running_agent(check=False, unix_path=os.path.join(d, "agent.sock")) as a:
            yield a
    finally:
        shutil.rmtree(d, ignore_errors=True)


def basic_config(agent_url, flush=100, extra=""):
    return f"DDAgentURL {agent_url}\nDDFlushInterval {flush}\n{extra}"


@pytest.fixture(scope="module")
def h_tcp(httpd_factory, agent):
    return httpd_factory("delivery-tcp", config=basic_config(agent.url))


@pytest.fixture(scope="module")
def h_unix(unix_agent, httpd_factory):
    h = httpd_factory("delivery-unix", config=basic_config(unix_agent.url))
    yield h
    httpd_factory.finish(h)  # before its agent goes away


@contextlib.contextmanager
def own_httpd(name, config, allow=()):
    """An httpd for one test; its whole error log is checked (with allow) after it stopped."""
    try:
        h = Httpd(name)
    except HttpdError as e:
        pytest.fail(str(e), pytrace=False)
    h.write_config(config)
    try:
        h.start()
        yield h
    finally:
        try:
            h.stop_took = h.stop()
            bad = h.bad_log_lines(allow=allow)
        finally:
            h.cleanup()
    assert not bad, "error_log:\n" + "\n".join(bad)


def test_unix_socket_agent(h_unix, unix_agent):
    ua = unique_ua("unix")
    assert h_unix.get("/index.html", headers={"User-Agent": ua}).status_code == 200
    chunk = one_chunk(unix_agent, ua)
    assert [s["name"] for s in chunk] == [SERVER_SPAN]


@pytest.mark.parametrize("which", ["tcp", "unix"])
def test_payload_headers(request, which):
    h = request.getfixturevalue("h_" + which)
    a = request.getfixturevalue("agent" if which == "tcp" else "unix_agent")
    ua = unique_ua("hdr")
    h.get("/index.html", headers={"User-Agent": ua})
    one_chunk(a, ua, settle=0)
    p = [p for p in a.payloads if any(
        s.get("meta", {}).get("http.useragent") == ua for c in p.chunks for s in c)][0]
    assert p.method in ("PUT", "POST") and p.path == "/v0.4/traces"
    for name in ("Content-Type", "X-Datadog-Trace-Count", "Datadog-Meta-Lang",
                 "Datadog-Meta-Lang-Version", "Datadog-Meta-Tracer-Version", "Content-Length"):
        assert p.headers.get(name), f"{name} missing: {dict(p.headers)}"
    assert p.headers["Content-Type"] == "application/msgpack"
    assert int(p.headers["X-Datadog-Trace-Count"]) == len(p.chunks)


def blast(h, n, threads=8, prefix="many"):
    """n GETs from `threads` threads; returns (user agents, statuses, slowest seconds)."""
    uas = [unique_ua(prefix) for _ in range(n)]
    statuses, slowest = [], [0.0]
    lock = threading.Lock()

    def worker(part):
        s = __import__("requests").Session()
        for ua in part:
            t0 = time.monotonic()
            try:
                code = s.get(h.url("/index.html"), headers={"User-Agent": ua}, timeout=10) \
                    .status_code
            except Exception as e:  # noqa: BLE001 - recorded as a failed request
                code = repr(e)
            with lock:
                statuses.append(code)
                slowest[0] = max(slowest[0], time.monotonic() - t0)
        s.close()

    ts = [threading.Thread(target=worker, args=(uas[i::threads],)) for i in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(60)
    return uas, statuses, slowest[0]


@pytest.mark.parametrize("which", ["tcp", "unix"])
def test_many_requests_arrive_exactly_once(request, which):
    h = request.getfixturevalue("h_" + which)
    a = request.getfixturevalue("agent" if which == "tcp" else "unix_agent")
    n = 400
    uas, statuses, _ = blast(h, n, prefix=f"many-{which}")
    assert statuses == [200] * n

    def count(agent):
        seen = {}
        for c in agent.traces:
            for s in c:
                ua = s.get("meta", {}).get("http.useragent")
                if ua in wanted:
                    seen[ua] = seen.get(ua, 0) + 1
        return seen

    wanted = set(uas)
    a.wait_for(lambda ag: len(count(ag)) == n, timeout=15)
    time.sleep(0.5)  # duplicates would show up by now
    seen = count(a)
    missing = wanted - set(seen)
    dupes = {ua: k for ua, k in seen.items() if k != 1}
    assert not missing and not dupes, \
        f"{len(missing)} traces missing, {len(dupes)} duplicated; agent saw {a.counts}"


def test_agent_down_requests_unaffected():
    port = free_port()  # nothing listens there
    config = basic_config(f"http://127.0.0.1:{port}")
    with own_httpd("agent-down", config, allow=[AGENT_TROUBLE]) as h:
        t0 = time.monotonic()
        uas, statuses, slowest = blast(h, 100, threads=4, prefix="down")
        took = time.monotonic() - t0
        assert statuses == [200] * 100
        assert slowest < 2.0, f"a request took {slowest:.2f}s with the agent down"
        assert took < 10, took
        time.sleep(0.5)  # a few flush attempts fail meanwhile
        assert h.get("/index.html").status_code == 200
        trouble = [ln for ln in h.bad_log_lines() if ln]
    # logged (section 8), but at most once a minute per child
    assert 1 <= len(trouble) <= h.max_children, \
        "\n".join(trouble) or "the agent error was not logged"


def test_agent_comes_back(agent):
    port = free_port()
    config = basic_config(f"http://127.0.0.1:{port}")
    with own_httpd("agent-back", config, allow=[AGENT_TROUBLE]) as h:
        blast(h, 10, threads=2, prefix="before")
        time.sleep(0.3)
        with conftest.running_agent(port=port) as late:
            ua = unique_ua("after")
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                h.get("/index.html", headers={"User-Agent": ua})
                if late.wait_for_chunks_with_meta("http.useragent", ua, 1, timeout=0.5):
                    break
            assert late.chunks_with_meta("http.useragent", ua), \
                f"no trace reached the agent after it came back; it saw {late.counts}"


def test_queued_chunks_sent_at_stop(agent):
    """With a flush interval far away, stopping httpd still delivers what was queued,
    within a bounded time."""
    config = basic_config(agent.url, flush=60000)
    with own_httpd("flush-at-stop", config) as h:
        uas, statuses, _ = blast(h, 20, threads=2, prefix="atstop")
        assert statuses == [200] * 20
        time.sleep(0.5)
        early = [ua for ua in uas if agent.chunks_with_meta("http.useragent", ua)]
        # otherwise this test would not test the stop path
        assert not early, (f"{len(early)} chunks sent long before DDFlushInterval 60000 and "
                           "with the queue far from half full")
    assert h.stop_took < 10, f"stop took {h.stop_took:.1f}s"
    wanted = set(uas)
    got = agent.wait_for(lambda a: wanted <= {
        s.get("meta", {}).get("http.useragent") for c in a.traces for s in c}, timeout=5)
    seen = {s.get("meta", {}).get("http.useragent") for c in agent.traces for s in c}
    assert got, f"{len(wanted - seen)} of 20 chunks not sent at stop; agent saw {agent.counts}"
