# SPDX-License-Identifier: Apache-2.0
"""helpers.py - small things the test files share: unique markers, gateway headers, span lookup."""

import json
import os
import time
import uuid

import pytest

from httpd import default_mpm

SERVER_SPAN = "httpd.request"
GATEWAY_NAMES = {"aws-apigateway": "aws.apigateway", "aws-httpapi": "aws.httpapi",
                 "azure-apim": "azure.apim", "azure-gw": "azure.app-gateway",
                 "azure-fd": "azure.frontdoor"}
# gateway_headers(time_ms=NO_TIME): no x-dd-proxy-request-time-ms (azure-gw and azure-fd have
# no time to send)
NO_TIME = "no-time"


def unique_ua(tag="t"):
    """A User-Agent that identifies one request (its spans carry it in http.useragent)."""
    return f"ddtest-{tag}/{uuid.uuid4().hex}"


def now_ms():
    return int(time.time() * 1000)


def dump(obj):
    """Readable payload for assertion messages."""
    return json.dumps(obj, indent=1, sort_keys=True, default=str)


def by_name(chunk, name):
    found = [s for s in chunk if s.get("name") == name]
    assert len(found) == 1, f"expected exactly one {name} span in chunk:\n{dump(chunk)}"
    return found[0]


def one_chunk(agent, ua, timeout=5.0, settle=0.3):
    """Waits for the chunk of the request made with User-Agent ua; asserts there is exactly one
    (after waiting `settle` more seconds for duplicates) and returns it."""
    return one_chunk_where(agent, lambda s: (s.get("meta") or {}).get("http.useragent") == ua,
                           f"http.useragent={ua}", timeout, settle)


def one_chunk_where(agent, pred, what, timeout=5.0, settle=0.3):
    """Like one_chunk, for the chunk holding a span for which pred(span) is true."""
    found = agent.wait_for(lambda a: a.chunks_where(pred), timeout)
    assert found, f"no trace with {what} arrived within {timeout}s; agent saw {agent.counts}"
    time.sleep(settle)
    chunks = agent.chunks_where(pred)
    assert len(chunks) == 1, f"{len(chunks)} traces for one request:\n{dump(chunks)}"
    return chunks[0]


def collect(agent, uas, timeout=5.0, settle=0.3):
    """{ua: chunk} for requests made with these User-Agents: each must arrive exactly once."""
    uas = list(uas)

    def index(a):
        found = {ua: [] for ua in uas}
        for chunk in a.traces:
            for ua in {(s.get("meta") or {}).get("http.useragent") for s in chunk}:
                if ua in found:
                    found[ua].append(chunk)
        return found

    agent.wait_for(lambda a: all(index(a).values()), timeout)
    time.sleep(settle)
    with agent._lock:
        found = index(agent)
    missing = [ua for ua, c in found.items() if not c]
    assert not missing, f"no trace arrived for {len(missing)} requests: {missing[:5]}; " \
                        f"agent saw {agent.counts}"
    dup = {ua: c for ua, c in found.items() if len(c) != 1}
    assert not dup, f"several traces for one request:\n{dump(dup)}"
    return {ua: c[0] for ua, c in found.items()}


def server_span(chunk):
    return by_name(chunk, SERVER_SPAN)


def gateway_headers(proxy="aws-apigateway", time_ms=None, method="GET", path=None, domain=None,
                    stage=None, resource_path=None, account_id=None, api_id=None, region=None,
                    user=None):
    """x-dd-proxy* headers as a gateway sends them (None = header not sent; time_ms None = 250
    ms ago, NO_TIME = not sent)."""
    h = {
        "x-dd-proxy": proxy,
        "x-dd-proxy-request-time-ms": str(now_ms() - 250) if time_ms is None else time_ms,
        "x-dd-proxy-httpmethod": method,
        "x-dd-proxy-path": path,
        "x-dd-proxy-domain-name": domain,
        "x-dd-proxy-stage": stage,
        "x-dd-proxy-resource-path": resource_path,
        "x-dd-proxy-account-id": account_id,
        "x-dd-proxy-api-id": api_id,
        "x-dd-proxy-region": region,
        "x-dd-proxy-user": user,
    }
    if time_ms is NO_TIME:
        del h["x-dd-proxy-request-time-ms"]
    return {k: str(v) for k, v in h.items() if v is not None}


def span_end(span):
    return span["start"] + span["duration"]


# --- the module's own counters and the server's children (CONTRACT 7; load/fault tests) -------

STATUS_PATH = "/dd-status"


def status_location(path=STATUS_PATH):
    """Config for the module's JSON counters at path, itself not traced (so it does not count)."""
    return (f"<Location {path}>\n    SetHandler dd-proxy-status\n    DDTrace Off\n"
            "</Location>\n")


def counters(h, path=STATUS_PATH, port=None):
    """The module's counters (dict from `SetHandler dd-proxy-status`), on a fresh connection."""
    import requests  # local: helpers stays importable without it
    r = requests.get(f"http://127.0.0.1:{port or h.port}{path}", timeout=10,
                     headers={"User-Agent": "ddtest-status", "Connection": "close"})
    assert r.status_code == 200, f"{path}: {r.status_code} {r.text[:200]}"
    return r.json()


def child_pids(h):
    """Pids of the running httpd's children (processes whose parent is the master)."""
    import os
    master = h.proc.pid if h.proc is not None else None
    out = []
    if master is None:
        return out
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        # pid (comm) state ppid ...: comm may hold spaces, so split after the last ')'
        fields = stat[stat.rfind(")") + 2:].split()
        if len(fields) > 1 and int(fields[1]) == master:
            out.append(int(name))
    return sorted(out)


def vm_rss_kb(pid):
    """VmRSS of a process in KiB (None when it is gone)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def access_log_traced(h):
    """Access log lines of traced requests (a 32-hex %{dd.trace_id}n). mod_log_config writes a
    line after the module counted the request, so requests_traced == this count means every
    request answered so far is also counted (the response goes out before either)."""
    import re
    n = 0
    for line in h.access_log_lines():
        parts = line.rsplit(" ", 2)
        if len(parts) == 3 and re.fullmatch(r"[0-9a-f]{32}", parts[1]):
            n += 1
    return n


# --- which CI pass runs what -------------------------------------------------------------------
# CI runs the suite four times (sanitized, then worker, prefork, event). Tests that depend on
# the MPM (children, threads, reservoirs) run on every pass; the others (configuration, hostile
# input, the Node.js peers, faults of a fake service) on fewer, to keep CI's time.

def ci_pass():
    return "sanitized" if os.environ.get("DD_PROXY_SANITIZE") else default_mpm()


def only_on(*passes, why):
    return pytest.mark.skipif(ci_pass() not in passes,
                              reason=f"runs on the {'/'.join(passes)} pass only: {why}")


NOT_MPM = only_on("event", "sanitized", why="does not depend on the MPM")
PLAIN_MPMS = only_on("event", "worker", "prefork",
                     why="timing across the MPM's children (the sanitized pass is too slow)")
EVENT_ONLY = only_on("event", why="neither MPM- nor memory-specific; seconds of waiting")
