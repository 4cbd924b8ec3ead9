# SPDX-License-Identifier: Apache-2.0
"""test_215_clock_steps.py - a wall-clock step never stops sampling or bends durations
(issue 16 item 1; CONTRACT sections 3 and 5).

httpd runs with clock_step.c preloaded: the test moves the process's wall clock (CLOCK_REALTIME,
gettimeofday, time) by an hour either way while it runs, as NTP or an operator would, and
leaves the monotonic clock alone. Spans keep epoch start times; their durations and the rate
limiter must follow the monotonic clock:
- after a step back, rule-kept traces still pass DDRateLimit (they all failed it until the
  wall clock caught up again);
- a request in flight while the clock steps lasts what it really lasted (not 0, not an hour)."""

import os
import struct
import subprocess
import tempfile
import threading
import time

import pytest

from helpers import NOT_MPM, dump, one_chunk, server_span, unique_ua
from httpd import sanitizer_env

pytestmark = NOT_MPM  # runs on the event and sanitized passes: it does not depend on the MPM

HOUR_NS = 3600 * 10**9
HERE = os.path.dirname(os.path.abspath(__file__))


@pytest.fixture(scope="module")
def shim():
    d = tempfile.mkdtemp(prefix="ddtest-clock-")
    os.chmod(d, 0o755)
    so = os.path.join(d, "clock_step.so")
    p = subprocess.run(["gcc", "-shared", "-fPIC", "-O1", "-o", so,
                        os.path.join(HERE, "clock_step.c"), "-ldl"],
                       capture_output=True, text=True)
    if p.returncode != 0:
        pytest.fail(f"cannot build the clock shim:\n{p.stderr}")
    step = os.path.join(d, "offset")
    with open(step, "wb") as f:
        f.write(struct.pack("=q", 0))
    os.chmod(step, 0o644)
    return so, step


def set_offset(step_file, ns):
    with open(step_file, "r+b") as f:
        f.write(struct.pack("=q", ns))


@pytest.fixture(scope="module")
def h(httpd_factory, agent, backend, shim):
    so, step = shim
    san, _ = sanitizer_env()
    preload = ":".join(x for x in (san.get("LD_PRELOAD"), so) if x)
    env = {"LD_PRELOAD": preload, "DD_TEST_CLOCK_STEP_FILE": step}
    config = f"""
DDAgentURL {agent.url}
DDFlushInterval 100
DDSamplingRules '[{{"sample_rate": 1}}]'
DDRateLimit 100
ProxyPass /api/ {backend.url}/
"""
    h = httpd_factory("clock-steps", config=config, env=env)
    yield h
    set_offset(step, 0)


def test_limiter_keeps_working_after_a_step_back(h, agent, shim):
    _, step = shim
    uas = []
    try:
        for _ in range(5):  # the limiter of the child behind this connection has seen traffic
            ua = unique_ua("before")
            assert h.get("/index.html", headers={"User-Agent": ua}).status_code == 200
            uas.append(ua)
        set_offset(step, -HOUR_NS)
        after = []
        for _ in range(20):  # 10 a second, far under DDRateLimit 100
            ua = unique_ua("after")
            assert h.get("/index.html", headers={"User-Agent": ua}).status_code == 200
            after.append(ua)
            time.sleep(0.1)
        prios = {ua: server_span(one_chunk(agent, ua, settle=0))["metrics"]
                 .get("_sampling_priority_v1") for ua in uas + after}
    finally:
        set_offset(step, 0)
    dropped = [ua for ua in after if prios[ua] != 2]
    assert not dropped, f"{len(dropped)} of {len(after)} rule-kept traces failed the limiter " \
                        f"after the clock stepped back: {prios}"


@pytest.mark.parametrize("step_ns", [-HOUR_NS, HOUR_NS], ids=["back", "forward"])
def test_duration_of_a_request_across_a_step(h, agent, shim, step_ns):
    _, step = shim
    ua = unique_ua("across")
    result = {}

    def call():
        import requests
        result["r"] = requests.get(h.url("/api/delay/800"), timeout=10,
                                   headers={"User-Agent": ua, "Connection": "close"})

    t = threading.Thread(target=call)
    t0 = time.monotonic()
    try:
        t.start()
        time.sleep(0.3)
        set_offset(step, step_ns)
        t.join(10)
        took = time.monotonic() - t0
        assert result["r"].status_code == 200
    finally:
        set_offset(step, 0)
    s = server_span(one_chunk(agent, ua))
    assert 0.7e9 <= s["duration"] <= took * 1e9 + 0.2e9, \
        f"duration {s['duration'] / 1e9:.3f} s for a request of {took:.3f} s:\n{dump(s)}"
    # the start stays on the epoch: it was read before the step
    assert abs(s["start"] - time.time_ns()) < 60 * 10**9, dump(s)
