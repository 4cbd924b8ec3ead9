# SPDX-License-Identifier: Apache-2.0
"""test_980_peers_test_agent.py - issue 15 item 2: Datadog's APM test agent
(DataDog/dd-apm-test-agent, the validator the tracers' own CI uses) as the module's agent.

The test agent is not packaged for Debian and PyPI is out of reach here, so a copy of it is in
the tree (tests/peers/dd-apm-test-agent, its README says which commit), with stubs for the
Python modules it imports that Debian lacks and its trace checks do not use. Another checkout
can be given instead:

    DD_TEST_AGENT_SRC=/path/to/dd-apm-test-agent   # the directory holding ddapm_test_agent/
    DD_TEST_AGENT_PYTHONPATH=/path/a:/path/b      # where the modules Debian lacks come from

It runs on Debian's Python (/usr/bin/python3 with python3-aiohttp, -yarl, -multidict, -jinja2,
-protobuf, -grpcio, -msgpack, -requests, -yaml; scripts/deps.sh installs them). Without
the agent's source, or when it cannot be imported or started, every test here skips and says
why (and CI, with DD_TEST_REQUIRE_PEERS=1, fails): it never passes without the real agent.

With every one of its checks enabled (the list is read from the agent itself), httpd sends it
a trace of each gateway, a plain request and one with span links; for each the agent compares
the trace with the snapshot committed in tests/integration/snapshots/test_agent/ (our own
output, reviewed: names, services, resources, every meta and metric but the per-run values
listed in IGNORED) and must report no failed check. DD_TEST_AGENT_SNAPSHOT_UPDATE=1 rewrites
the snapshots instead of comparing them (then review the diff)."""

import json
import os
import subprocess
import sys
import tempfile
import time

import pytest
import requests

from helpers import counters, gateway_headers, status_location
from httpd import free_port

VENDORED = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "peers",
                        "dd-apm-test-agent")
SRC = os.environ.get("DD_TEST_AGENT_SRC") or (
    os.path.normpath(VENDORED) if os.path.isdir(os.path.join(VENDORED, "ddapm_test_agent"))
    else "")
EXTRA_PATH = os.environ.get("DD_TEST_AGENT_PYTHONPATH") or (
    os.path.normpath(os.path.join(VENDORED, "stubs")) if SRC == os.path.normpath(VENDORED)
    else "")
UPDATE = os.environ.get("DD_TEST_AGENT_SNAPSHOT_UPDATE", "") not in ("", "0")
PYTHON = "/usr/bin/python3"
SNAP_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "snapshots", "test_agent")
# Per run: ids, times, the 128-bit id's time-based high half, the process's runtime tags.
IGNORED = ("span_id,trace_id,parent_id,duration,start,meta._dd.p.tid,meta.runtime-id,"
           "metrics.process_id")
UA = "ddtest-snapshot/1.0"
HOST = "snapshot.example"  # fixed host (and default port) in http.url

pytestmark = pytest.mark.skipif(not SRC, reason="Datadog's test agent is missing: no "
                                "tests/peers/dd-apm-test-agent and no DD_TEST_AGENT_SRC")


def _env():
    env = {k: v for k, v in os.environ.items() if not k.startswith("DD_")}
    env["PYTHONPATH"] = ":".join(p for p in (SRC, EXTRA_PATH) if p)
    return env


def _all_checks():
    """The names of every check the test agent has (from its own registry)."""
    code = ("import json, ddapm_test_agent.trace_checks as t, ddapm_test_agent.checks as c\n"
            "print(json.dumps(sorted({k.name for k in vars(t).values()\n"
            "    if isinstance(k, type) and issubclass(k, c.Check) and k is not c.Check})))")
    p = subprocess.run([PYTHON, "-c", code], env=_env(), capture_output=True, text=True,
                       timeout=60)
    if p.returncode != 0:
        pytest.skip(f"the test agent in {SRC} cannot be imported with {PYTHON} "
                    f"(DD_TEST_AGENT_PYTHONPATH={EXTRA_PATH!r}):\n{p.stderr[-1500:]}")
    return json.loads(p.stdout)


class DDTestAgent:
    def __init__(self, checks):
        self.checks = checks
        self.port = free_port()
        os.makedirs(SNAP_DIR, exist_ok=True)
        cmd = [PYTHON, "-m", "ddapm_test_agent.agent", f"--port={self.port}",
               "--host=127.0.0.1", f"--otlp-http-port={free_port()}",
               f"--otlp-grpc-port={free_port()}", f"--snapshot-dir={SNAP_DIR}",
               f"--snapshot-ci-mode={0 if UPDATE else 1}", "--log-level=WARNING"]
        # list-valued settings through the environment (its command line cannot parse them)
        env = _env()
        env.update({"ENABLED_CHECKS": ",".join(checks), "SNAPSHOT_IGNORED_ATTRS": IGNORED,
                    "DD_POOL_TRACE_CHECK_FAILURES": "true"})
        fd, self.log_path = tempfile.mkstemp(prefix="ddtest-test-agent-", suffix=".log")
        self.log = os.fdopen(fd, "wb")
        self.proc = subprocess.Popen(cmd, env=env, stdin=subprocess.DEVNULL,
                                     stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                break
            try:
                if requests.get(self.url + "/info", timeout=1).status_code == 200:
                    return
            except requests.RequestException:
                time.sleep(0.1)
        out = self.output()
        self.stop()
        pytest.skip(f"the test agent in {SRC} did not start:\n{out[-2000:]}")

    @property
    def url(self):
        return f"http://127.0.0.1:{self.port}"

    def output(self):
        with open(self.log_path, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def get(self, path, **params):
        return requests.get(self.url + path, params=params, timeout=10)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.log.close()
        try:
            os.unlink(self.log_path)
        except OSError:
            pass


@pytest.fixture(scope="module")
def test_agent():
    a = DDTestAgent(_all_checks())
    yield a
    a.stop()


@pytest.fixture(scope="module")
def h(httpd_factory, test_agent, backend):
    made = httpd_factory("peer-test-agent", config=f"""
DDAgentURL {test_agent.url}
DDFlushInterval 100
DDService snapshot-httpd
DDEnv snapshot
DDVersion 1.0.0
DDInferredProxy On
DDPropagationStyle datadog tracecontext b3multi
UseCanonicalName Off
ProxyPass /api/ {backend.url}/
{status_location()}
""")
    # the harness's readiness request makes a trace: let it arrive before the first session
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not test_agent.get("/test/traces").json():
        time.sleep(0.1)
    return made


T = "1736973768000"  # the gateway's time is ignored (start), but keeps the headers fixed
SCENARIOS = {
    "gateway_aws_apigateway": ("/api/users/123", gateway_headers(
        "aws-apigateway", time_ms=T, method="GET", path="/api/users/123",
        resource_path="/api/users/{id}", domain="abc123.execute-api.eu-west-3.amazonaws.com",
        stage="prod", account_id="123456789012", api_id="abc123", region="eu-west-3")),
    "gateway_aws_httpapi": ("/api/orders", gateway_headers(
        "aws-httpapi", time_ms=T, method="GET", path="/api/orders",
        resource_path="/api/{proxy+}", domain="q1w2e3.execute-api.us-east-1.amazonaws.com",
        stage="$default", account_id="123456789012", api_id="q1w2e3", region="us-east-1")),
    "gateway_azure_apim": ("/api/carts/7/items", gateway_headers(
        "azure-apim", time_ms=T, method="GET", path="carts/{id}/items",
        domain="shop.azure-api.net", region="west europe")),
    "gateway_error_500": ("/api/status/500", gateway_headers(
        "aws-apigateway", time_ms=T, method="GET", path="/status/500",
        domain="err.execute-api.eu-west-3.amazonaws.com", stage="prod")),
    "server_inbound_w3c_and_links": ("/api/plain", {
        "x-datadog-trace-id": "7", "x-datadog-parent-id": "8",
        "x-datadog-sampling-priority": "1",
        "traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        "tracestate": "dd=s:2;p:00000000000000bb,congo=t61rcWkgMzE",
        "x-b3-traceid": "0000000000000009", "x-b3-spanid": "000000000000000a"}),
}


def _fresh_now(headers):
    """The gateway's time must be recent for the module to believe it; start is ignored."""
    out = dict(headers)
    if "x-dd-proxy-request-time-ms" in out:
        out["x-dd-proxy-request-time-ms"] = str(int(time.time() * 1000) - 50)
    return out


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_snapshot(h, test_agent, name):
    path, headers = SCENARIOS[name]
    token = f"mod_dd_proxy.{name}"
    assert test_agent.get("/test/session/start", test_session_token=token).status_code == 200
    r = h.get(path, headers={**_fresh_now(headers), "User-Agent": UA, "Host": HOST})
    assert r.status_code in (200, 500)
    deadline = time.monotonic() + 10
    traces = []
    while time.monotonic() < deadline and not traces:
        traces = test_agent.get("/test/session/traces", test_session_token=token).json()
        if not traces:
            time.sleep(0.1)
    assert len(traces) == 1, f"{len(traces)} traces in the session: {traces}"
    snap = test_agent.get("/test/session/snapshot", test_session_token=token)
    assert snap.status_code == 200, f"snapshot {name}: {snap.status_code}\n{snap.text[-4000:]}"
    failures = test_agent.get("/test/trace_check/failures", test_session_token=token)
    assert failures.status_code == 200, failures.text[-4000:]


def test_every_check_enabled_and_none_failed(h, test_agent):
    """Runs last in this file: what the agent says about everything it got."""
    failures = test_agent.get("/test/trace_check/failures", return_all="true")
    assert failures.status_code == 200, f"trace check failures:\n{failures.text[-4000:]}"
    summary = test_agent.get("/test/trace_check/summary", return_all="true").json()
    failed = {k: v for k, v in summary.items() if v.get("Failed_Checks")}
    assert not failed, f"failed checks: {failed}"
    ran = {k for k, v in summary.items() if v.get("Passed_Checks")}
    # the header and payload checks apply to every request the module sends
    for check in ("trace_count_header", "meta_tracer_version_header", "trace_content_length"):
        assert check in test_agent.checks and check in ran, (check, summary)
    print(f"\ntest agent checks enabled: {test_agent.checks}\nsummary: {json.dumps(summary)}",
          file=sys.stderr)
    c = counters(h)
    assert c.get("agent_errors", 0) == 0, c
