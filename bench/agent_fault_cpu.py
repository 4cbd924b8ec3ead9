#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""agent_fault_cpu.py - CPU of httpd's children while the agent fails (issue 18.6).

Runs the test harness's httpd (tests/integration/httpd.py, the module built in this tree, the
event MPM unless DD_TEST_MPM says otherwise) with DDFlushInterval 200 and light steady
traffic (20 requests/s on fresh connections) for --seconds, against an agent that fails in
one of these ways:

  tls      an https:// listener whose self-signed certificate does not verify
  refused  a port nothing listens on

and prints the children's utime+stime (from /proc/<pid>/stat) and the dd-flusher threads'
share (from /proc/<pid>/task/<tid>/stat), in % of one core, and the connections the TLS
listener accepted. Usage: bench/agent_fault_cpu.py [--seconds 10] [tls|refused ...]
"""

import argparse
import os
import shutil
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "integration"))

import httpd as httpd_mod  # noqa: E402
from helpers import child_pids  # noqa: E402
from test_805_tls_agent_backoff import TlsAgent  # noqa: E402

TICK = os.sysconf("SC_CLK_TCK")


def stat_ticks(path):
    with open(path) as f:
        s = f.read()
    fields = s[s.rfind(")") + 2:].split()
    return int(fields[11]) + int(fields[12])  # utime, stime


def cpu(pids):
    """(children's ticks, dd-flusher threads' ticks)."""
    total = flusher = 0
    for pid in pids:
        try:
            total += stat_ticks(f"/proc/{pid}/stat")
            for tid in os.listdir(f"/proc/{pid}/task"):
                with open(f"/proc/{pid}/task/{tid}/comm") as f:
                    if f.read().strip() == "dd-flusher":
                        flusher += stat_ticks(f"/proc/{pid}/task/{tid}/stat")
        except OSError:
            pass
    return total, flusher


def run(kind, seconds):
    tmp = tempfile.mkdtemp(prefix="ddbench-fault-")
    agent = None
    if kind == "tls":
        agent = TlsAgent(tmp)
        url = agent.url
    else:
        url = f"http://127.0.0.1:{httpd_mod.free_port()}"
    h = httpd_mod.Httpd(f"fault-cpu-{kind}")
    try:
        h.write_config(f"DDAgentURL {url}\nDDFlushInterval 200\n")
        h.start()
        pids = child_pids(h)
        for _ in range(20):  # warm up: first failures, the flusher's GET /info
            h.get("/index.html", headers={"Connection": "close"})
            time.sleep(0.05)
        t0, (c0, f0) = time.monotonic(), cpu(pids)
        n = 0
        while time.monotonic() - t0 < seconds:
            h.get("/index.html", headers={"Connection": "close"})
            n += 1
            time.sleep(0.05)
        took = time.monotonic() - t0
        c1, f1 = cpu(pids)
        conns = agent.count(t0) if agent else None
        pct = 100.0 * (c1 - c0) / TICK / took
        fpct = 100.0 * (f1 - f0) / TICK / took
        print(f"{kind:8s} {httpd_mod.default_mpm()}: {len(pids)} children, {n} requests in "
              f"{took:.1f}s: children {pct:.2f} % of a core, dd-flusher threads {fpct:.2f} %"
              + (f", {conns} TLS connections" if agent else ""), flush=True)
    finally:
        h.stop()
        h.cleanup()
        if agent:
            agent.stop()
        shutil.rmtree(tmp, ignore_errors=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("kinds", nargs="*", default=["tls", "refused"])
    args = ap.parse_args()
    for k in args.kinds:
        run(k, args.seconds)


if __name__ == "__main__":
    main()
