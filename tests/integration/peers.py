# SPDX-License-Identifier: Apache-2.0
"""peers.py - Datadog's own tracers as peers of the module in the integration tests (issue 15).

`NodePeer` runs tests/peers/dd-trace-js/app.js: a small Node.js web app traced by the real
dd-trace (the version pinned in that directory's package-lock.json, installed by
scripts/peers.sh with `npm ci`). It sends its spans to the test's capture agent, so a test can
put the tracer's spans next to the module's: the same gateway headers sent to both (the
inferred spans compared field by field), or the app behind httpd's mod_proxy (the tracer
continues httpd's trace).

    node = NodePeer(agent.url, service="node-svc", env={...}).start()
    node.get("/x", headers={...})     # -> requests.Response (JSON body: the headers it got)
    node.url                          # http://127.0.0.1:<port>, for ProxyPass
    node.stop()

One process serves a whole test module (start takes about a second). When Node or the
installed tracer is missing, `node_unavailable()` says why, and the tests skip with that reason
(CI installs both: scripts/deps.sh, scripts/peers.sh). A module's fixture is usually just

    with running_node(agent.url, "node-svc", env={...}) as node:
        yield node
"""

import contextlib
import json
import os
import subprocess
import threading
import time

import pytest
import requests

NODE = "/usr/bin/node"
HERE = os.path.dirname(os.path.abspath(__file__))
APP_DIR = os.path.abspath(os.path.join(HERE, "..", "peers", "dd-trace-js"))
APP = os.path.join(APP_DIR, "app.js")


def pinned_version():
    """The dd-trace version the lockfile pins (what `npm ci` installs)."""
    with open(os.path.join(APP_DIR, "package-lock.json")) as f:
        return json.load(f)["packages"]["node_modules/dd-trace"]["version"]


def installed_version():
    try:
        with open(os.path.join(APP_DIR, "node_modules", "dd-trace", "package.json")) as f:
            return json.load(f)["version"]
    except (OSError, ValueError, KeyError):
        return None


def node_unavailable():
    """None when the Node peer can run, else the reason it cannot."""
    if not os.access(NODE, os.X_OK):
        return f"{NODE} is not installed (scripts/deps.sh installs Debian's nodejs)"
    got, want = installed_version(), pinned_version()
    if got is None:
        return f"dd-trace is not installed in {APP_DIR} (run scripts/peers.sh)"
    if got != want:
        return f"dd-trace {got} installed in {APP_DIR}, the lockfile pins {want} " \
               "(run scripts/peers.sh)"
    return None


# The tracer's own background traffic the tests do not look at, and the spans a plain Node app
# makes of its own plumbing (DNS lookups, sockets), are switched off.
QUIET_ENV = {
    "DD_INSTRUMENTATION_TELEMETRY_ENABLED": "false",
    "DD_REMOTE_CONFIGURATION_ENABLED": "false",
    "DD_TRACE_STARTUP_LOGS": "false",
    "DD_RUNTIME_METRICS_ENABLED": "false",
    "DD_TRACE_DNS_ENABLED": "false",
    "DD_TRACE_NET_ENABLED": "false",
    "DD_DATA_STREAMS_ENABLED": "false",
    "DD_TRACE_STATS_COMPUTATION_ENABLED": "false",
    "DD_PROFILING_ENABLED": "false",
    "DD_APPSEC_ENABLED": "false",
}


class NodePeerError(Exception):
    pass


class NodePeer:
    def __init__(self, agent_url, service="node-peer", env=None, inferred=True):
        self.agent_url = agent_url
        self.service = service
        self.env = dict(env or {})
        self.inferred = inferred
        self.proc = None
        self.port = None
        self.session = requests.Session()
        self._out = []

    def _environment(self):
        env = {k: v for k, v in os.environ.items() if not k.startswith("DD_")}
        env.update(QUIET_ENV)
        env.update({
            "DD_TRACE_AGENT_URL": self.agent_url,
            "DD_SERVICE": self.service,
            "DD_TRACE_FLUSH_INTERVAL": "100",
            "DD_TRACE_INFERRED_PROXY_SERVICES_ENABLED": "true" if self.inferred else "false",
            "PORT": "0",
        })
        env.update(self.env)
        return env

    def start(self, timeout=20.0):
        why = node_unavailable()
        if why:
            raise NodePeerError(why)
        self.proc = subprocess.Popen([NODE, APP], cwd=APP_DIR, env=self._environment(),
                                     stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True)
        first = []
        t = threading.Thread(target=self._read, args=(first,), daemon=True)
        t.start()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not first and self.proc.poll() is None:
            time.sleep(0.02)
        if not first:
            self.stop()
            raise NodePeerError("the Node peer did not start:\n" + "".join(self._out[-40:]))
        self.port = int(first[0].split()[1])
        return self

    def _read(self, first):
        for line in self.proc.stdout:
            self._out.append(line)
            if not first and line.startswith("listening "):
                first.append(line)

    @property
    def output(self):
        return "".join(self._out)

    @property
    def url(self):
        return f"http://127.0.0.1:{self.port}"

    def get(self, path, headers=None, **kw):
        kw.setdefault("timeout", 10)
        return self.session.get(self.url + path, headers=headers or {}, **kw)

    def stop(self):
        self.session.close()
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None


@contextlib.contextmanager
def running_node(agent_url, service, env=None, inferred=True):
    """A started NodePeer for the block, stopped after it. Skips the test when Node or the
    tracer is missing (the reason names what; CI turns such a skip into a failure), fails it
    when the app would not start."""
    why = node_unavailable()
    if why:
        pytest.skip(f"Node peer unavailable: {why}")
    n = NodePeer(agent_url, service=service, env=env, inferred=inferred)
    try:
        n.start()
    except NodePeerError as e:
        pytest.fail(str(e), pytrace=False)
    try:
        yield n
    finally:
        n.stop()
