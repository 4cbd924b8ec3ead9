# SPDX-License-Identifier: Apache-2.0
"""test_530_remote_config.py - issue 13.3: remote configuration for APM tracing.

A fake agent announces /v0.7/config in /info and answers the polls as the real agent does
(datadog-agent pkg/config/remote: targets as base64 JSON signed with each file's sha256 and
length, the files not cached yet in target_files as base64, client_configs the paths that
apply). What it sets for the service (sampling rules and rate, tags, tracing enabled) applies on
every child within one poll, the traces show the remote mechanism (_dd.p.dm -11), its removal
restores httpd's own configuration, and the next poll reports what was applied. Faults of the
endpoint (404, garbage, slow, bad hash, bad base64, huge) leave requests and the configuration
in force as they were and are counted; DDRemoteConfig Off (or an agent that does not announce
the endpoint) makes no polls.
"""

import base64
import hashlib
import json
import threading
import time

import pytest

import conftest
from helpers import NOT_MPM, child_pids, ci_pass, counters, status_location, unique_ua
from test_510_agent_info import INFO

SERVICE, ENV = "rc-svc", "rc-env"
POLL_S = 0.2
# The fault tests make the module log (rate-limited) that the agent's answer is malformed.
ALLOW_LOG = [r"\[dd_proxy:warn\] .*DDP4103: remote configuration"]
INFO_NO_RC = dict(INFO, endpoints=[e for e in INFO["endpoints"] if e != "/v0.7/config"])


def b64(data):
    return base64.b64encode(data).decode()


class FakeRemoteConfig:
    """The agent's side of POST /v0.7/config for APM_TRACING."""

    def __init__(self):
        self.files = {}  # path -> (content bytes, version)
        self.version = 1
        self.mode = "ok"
        self.requests = []
        self.lock = threading.Lock()

    # --- what the UI sets ----------------------------------------------------------------
    def set(self, cfg_id, lib_config, service=SERVICE, env=ENV):
        content = json.dumps({"id": cfg_id, "revision": 1, "schema_version": "v1.0.0",
                              "action": "enable", "lib_config": lib_config,
                              "service_target": {"service": service, "env": env}}).encode()
        with self.lock:
            path = f"datadog/2/APM_TRACING/{cfg_id}/config"
            old = self.files.get(path)
            self.version += 1
            self.files[path] = (content, old[1] + 1 if old else 1)
        return path

    def remove(self, cfg_id):
        with self.lock:
            self.files.pop(f"datadog/2/APM_TRACING/{cfg_id}/config", None)
            self.version += 1

    # --- the answer ----------------------------------------------------------------------
    def __call__(self, body):
        req = json.loads(body)
        with self.lock:
            self.requests.append(req)
            mode, files, version = self.mode, dict(self.files), self.version
        if mode == "404":
            return 404, b"404 page not found\n"
        if mode == "garbage":
            return 200, b"\x00\xff{{not json" + b"\xc1" * 32
        if mode == "slow":
            time.sleep(1.5)  # over the module's 1 s: it gives up
        if mode == "huge":
            return 200, b'{"targets": "' + b"A" * (2 * 1024 * 1024) + b'"}'
        if mode == "bad_base64":
            return 200, json.dumps({"targets": "not*base64!", "client_configs": []}).encode()
        state = req["client"]["state"]
        if state["targets_version"] == version and mode == "ok":
            return 200, b"{}"  # nothing new since the client's version
        cached = {c["path"]: c["hashes"][0]["hash"] for c in req.get("cached_target_files", [])}
        targets, target_files = {}, []
        for path, (content, v) in sorted(files.items()):
            digest = hashlib.sha256(content).hexdigest()
            signed = digest if mode != "bad_hash" else hashlib.sha256(b"x" + content).hexdigest()
            targets[path] = {"custom": {"v": v}, "hashes": {"sha256": signed},
                             "length": len(content)}
            if cached.get(path) != signed:
                target_files.append({"path": path, "raw": b64(content)})
        signed_targets = {"signatures": [{"keyid": "k", "sig": "00"}],
                          "signed": {"_type": "targets", "spec_version": "1.0",
                                     "expires": "2030-01-01T00:00:00Z", "version": version,
                                     "custom": {"opaque_backend_state": b64(b"state-%d" % version)},
                                     "targets": targets}}
        resp = {"roots": [], "targets": b64(json.dumps(signed_targets).encode()),
                "target_files": target_files}
        if files:
            resp["client_configs"] = sorted(files)
        return 200, json.dumps(resp).encode()

    # --- what the clients said -----------------------------------------------------------
    def clients(self, since=0):
        """client id -> its last request (of the requests after index since)."""
        with self.lock:
            reqs = self.requests[since:]
        return {r["client"]["id"]: r for r in reqs}

    def count(self):
        with self.lock:
            return len(self.requests)


@pytest.fixture
def rc_agent():
    with conftest.running_agent() as a:
        a.info = INFO
        a.remote_config = FakeRemoteConfig()
        yield a


def start(httpd_factory, agent, name, extra=""):
    return httpd_factory(name, config="\n".join([
        f"DDAgentURL {agent.url}", "DDFlushInterval 100", f"DDRemoteConfigPollInterval {POLL_S}",
        f"DDService {SERVICE}", f"DDEnv {ENV}", "DDSampleRate 0", "DDRateLimit 100000",
        status_location(), extra]))


def nchildren(h):
    n = len(child_pids(h))
    assert n >= 2, f"the test needs several children, there are {n}"
    return n


def wait_all_report(rc, n, pred, since, timeout=5.0):
    """Waits until n clients' latest polls (after since) satisfy pred(request)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        cl = rc.clients(since)
        if len(cl) >= n and all(pred(r) for r in cl.values()):
            return cl
        time.sleep(0.05)
    return None


def acked(ids):
    def pred(req):
        states = {s["id"]: s for s in req["client"]["state"].get("config_states", [])}
        return set(states) == set(ids) and all(s["apply_state"] == 2 for s in states.values())
    return pred


def traces_for(h, agent, n, tag):
    """n requests on fresh connections (spread over the children); their server spans."""
    uas = [unique_ua(tag) for _ in range(n)]
    for ua in uas:
        r = h.get("/index.html", headers={"User-Agent": ua, "Connection": "close"})
        assert r.status_code == 200 and b"dd_proxy test" in r.content
    want = set(uas)
    agent.wait_for(lambda a: want <= {s.get("meta", {}).get("http.useragent")
                                      for s in a.spans()}, timeout=5)
    spans = [s for s in agent.spans() if s.get("meta", {}).get("http.useragent") in want]
    assert len(spans) == n, f"{len(spans)} of {n} traces arrived"
    return spans


def apply_everywhere(h, agent, ids, since=None):
    rc = agent.remote_config
    n = nchildren(h)
    t0 = time.time()
    got = wait_all_report(rc, n, acked(ids), rc.count() if since is None else since)
    assert got, f"not every child ({n}) reported {ids} applied: {rc.clients(0)}"
    return time.time() - t0


def test_a_sampling_rule_applies_on_every_child_and_its_removal_restores_the_local_rule(
        httpd_factory, rc_agent):
    """On every pass: each MPM's children poll alike."""
    rc = rc_agent.remote_config
    h = start(httpd_factory, rc_agent, "rc-rule")
    n = nchildren(h)
    assert wait_all_report(rc, n, lambda r: True, 0), "not every child polls"
    first = rc.clients(0)
    req = next(iter(first.values()))["client"]
    assert req["products"] == ["APM_TRACING"] and req["is_tracer"] is True
    assert req["client_tracer"]["service"] == SERVICE and req["client_tracer"]["env"] == ENV
    assert req["client_tracer"]["runtime_id"] and req["client_tracer"]["tracer_version"]
    caps = int.from_bytes(base64.b64decode(req["capabilities"]), "big")
    assert caps & (1 << 12) and caps & (1 << 15) and caps & (1 << 19) and caps & (1 << 29)

    # the local rule (DDSampleRate 0) drops
    for s in traces_for(h, rc_agent, 10, "rc-local"):
        assert s["metrics"]["_sampling_priority_v1"] == -1 and "_dd.p.dm" not in s["meta"]

    since = rc.count()
    t_set = time.time()
    rc.set("rule-1", {"tracing_sampling_rules": [
        {"service": SERVICE, "resource": "*", "sample_rate": 1, "provenance": "customer"}]})
    apply_everywhere(h, rc_agent, ["rule-1"], since)
    # one poll interval, plus a flusher tick (0.1 s) and the next poll that reports it; the
    # sanitized build is slower
    took = time.time() - t_set
    print(f"remote rule applied on every child in {took:.3f} s")
    assert took <= (3.0 if ci_pass() == "sanitized" else 2 * POLL_S + 0.1 + 0.5), \
        f"took {took:.2f} s"
    for s in traces_for(h, rc_agent, 30, "rc-rule"):
        assert s["metrics"]["_sampling_priority_v1"] == 2, s
        assert s["meta"]["_dd.p.dm"] == "-11" and s["metrics"]["_dd.rule_psr"] == 1, s

    # the next polls report the applied state and the targets' version
    for r in rc.clients(since).values():
        st = r["client"]["state"]
        assert st["targets_version"] == rc.version and st["has_error"] is False
        assert st["backend_client_state"] == b64(b"state-%d" % rc.version)
        cs = st["config_states"][0]
        assert cs == {"id": "rule-1", "version": 1, "product": "APM_TRACING", "apply_state": 2}
        cached = r["cached_target_files"][0]
        content = rc.files["datadog/2/APM_TRACING/rule-1/config"][0]
        assert cached["path"] == "datadog/2/APM_TRACING/rule-1/config"
        assert cached["length"] == len(content)
        assert cached["hashes"] == [{"algorithm": "sha256",
                                     "hash": hashlib.sha256(content).hexdigest()}]

    # a sampling rate replaces DDSampleRate (a rule, -3, as dd-trace-cpp)
    since = rc.count()
    rc.set("rule-1", {"tracing_sampling_rate": 1.0})
    got = wait_all_report(rc, n, lambda r: r["client"]["state"]["config_states"][0]["version"]
                          == 2, since)
    assert got, rc.clients(since)
    for s in traces_for(h, rc_agent, 10, "rc-rate"):
        assert s["metrics"]["_sampling_priority_v1"] == 2 and s["meta"]["_dd.p.dm"] == "-3"

    since = rc.count()
    rc.remove("rule-1")
    assert wait_all_report(rc, n, acked([]), since), rc.clients(since)
    for s in traces_for(h, rc_agent, 20, "rc-removed"):
        assert s["metrics"]["_sampling_priority_v1"] == -1 and "_dd.p.dm" not in s["meta"]
    c = counters(h)["remote_config"]
    httpd_factory.finish(h)
    assert c["configs_applied"] >= 2 * n and c["apply_errors"] == 0 and c["malformed"] == 0, c
    assert c["active_sampling_rules"] == 0 and c["active_sample_rate"] == 0, c


@NOT_MPM
def test_tags_tracing_enabled_and_an_error_reported(httpd_factory, rc_agent):
    rc = rc_agent.remote_config
    h = start(httpd_factory, rc_agent, "rc-tags")
    n = nchildren(h)
    rc.set("tags", {"tracing_tags": ["team:rc-edge", "tier:gold"]})
    apply_everywhere(h, rc_agent, ["tags"])
    for s in traces_for(h, rc_agent, 10, "rc-tags"):
        assert s["meta"]["team"] == "rc-edge" and s["meta"]["tier"] == "gold"
    assert counters(h)["remote_config"]["active_tags"] == 1

    since = rc.count()
    rc.remove("tags")
    rc.set("off", {"tracing_enabled": False})
    apply_everywhere(h, rc_agent, ["off"], since)
    sent = len(rc_agent.spans())
    uas = [unique_ua("rc-off") for _ in range(20)]
    for ua in uas:
        r = h.get("/index.html", headers={"User-Agent": ua, "Connection": "close"})
        assert r.status_code == 200 and b"dd_proxy test" in r.content
    time.sleep(0.5)
    assert len(rc_agent.spans()) == sent, "traces were sent while tracing_enabled is false"
    c = counters(h)["remote_config"]
    assert c["traces_not_sent"] >= 20 and c["active_tracing_disabled"] == 1, c

    since = rc.count()
    rc.remove("off")
    assert wait_all_report(rc, n, acked([]), since)
    traces_for(h, rc_agent, 10, "rc-on-again")

    # a configuration that cannot be applied: apply_state 3 and why, in the next poll
    since = rc.count()
    rc.set("broken", {"tracing_sampling_rate": "often"})
    got = wait_all_report(rc, n, lambda r: any(
        s["apply_state"] == 3 and "tracing_sampling_rate" in s.get("apply_error", "")
        for s in r["client"]["state"].get("config_states", [])), since)
    assert got, rc.clients(since)
    for s in traces_for(h, rc_agent, 5, "rc-broken"):
        assert s["metrics"]["_sampling_priority_v1"] == -1
    c = counters(h)["remote_config"]
    httpd_factory.finish(h)
    assert c["apply_errors"] >= n, c


@NOT_MPM
@pytest.mark.parametrize("mode", ["404", "garbage", "slow", "bad_hash", "bad_base64", "huge"])
def test_a_faulty_endpoint_leaves_requests_and_the_configuration_in_force(httpd_factory, rc_agent,
                                                                          mode):
    rc = rc_agent.remote_config
    h = start(httpd_factory, rc_agent, f"rc-{mode}")
    n = nchildren(h)
    rc.set("good", {"tracing_sampling_rules": [
        {"service": SERVICE, "resource": "*", "sample_rate": 1, "provenance": "dynamic"}]})
    apply_everywhere(h, rc_agent, ["good"])
    before = counters(h)["remote_config"]
    rc.mode = mode
    rc.set("good", {"tracing_sampling_rate": 0.0})  # a change the fault must not deliver
    since = rc.count()
    rc_agent.wait_for(lambda a: rc.count() >= since + 2 * n, timeout=8)
    for s in traces_for(h, rc_agent, 20, f"rc-{mode}"):
        assert s["metrics"]["_sampling_priority_v1"] == 2 and s["meta"]["_dd.p.dm"] == "-12", s
    c = counters(h)["remote_config"]
    if mode in ("404", "slow", "huge"):
        assert c["poll_errors"] > before["poll_errors"], c
    else:
        assert c["malformed"] > before["malformed"], c
        bad = [r for r in rc.clients(since).values() if r["client"]["state"]["has_error"]]
        assert bad and bad[0]["client"]["state"]["error"], rc.clients(since)
    rc.mode = "ok"  # the agent heals: the change arrives
    since = rc.count()
    assert wait_all_report(rc, n, lambda r: r["client"]["state"]["config_states"][0]["version"]
                           == 2 and not r["client"]["state"]["has_error"], since), \
        rc.clients(since)
    for s in traces_for(h, rc_agent, 5, f"rc-{mode}-healed"):
        assert s["metrics"]["_sampling_priority_v1"] == -1, s
    httpd_factory.finish(h)


@NOT_MPM
@pytest.mark.parametrize("how", ["directive", "env", "not-announced"])
def test_no_polls_when_off_or_not_announced(httpd_factory, rc_agent, how):
    rc = rc_agent.remote_config
    rc.set("rule", {"tracing_sampling_rate": 1.0})
    extra, env = "", None
    if how == "directive":
        extra = "DDRemoteConfig Off"
    elif how == "env":
        env = {"DD_REMOTE_CONFIGURATION_ENABLED": "false"}
    else:
        rc_agent.info = INFO_NO_RC
    h = httpd_factory(f"rc-{how}", env=env, config="\n".join([
        f"DDAgentURL {rc_agent.url}", "DDFlushInterval 100",
        f"DDRemoteConfigPollInterval {POLL_S}", f"DDService {SERVICE}", f"DDEnv {ENV}",
        "DDSampleRate 0", status_location(), extra]))
    rc_agent.wait_for(lambda a: any(r[1] == "/info" for r in a.other_requests), timeout=5)
    time.sleep(4 * POLL_S)
    for s in traces_for(h, rc_agent, 5, f"rc-{how}"):
        assert s["metrics"]["_sampling_priority_v1"] == -1
    c = counters(h)["remote_config"]
    httpd_factory.finish(h)
    assert rc.count() == 0 and c["polls"] == 0, (rc.count(), c)


@NOT_MPM
@pytest.mark.parametrize("line, words", [
    ("DDRemoteConfig maybe", ["DDRemoteConfig", "maybe"]),
    ("DDRemoteConfigPollInterval 0", ["DDRemoteConfigPollInterval", "0"]),
    ("DDRemoteConfigPollInterval soon", ["DDRemoteConfigPollInterval", "soon"]),
])
def test_bad_values_fail_the_config_test(httpd_factory, line, words):
    h = httpd_factory("rc-config", start=False)
    rc_, out = h.config_test(line)
    assert rc_ != 0
    for w in words:
        assert w in out, out
