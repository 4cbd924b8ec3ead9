# SPDX-License-Identifier: Apache-2.0
"""conftest.py - fixtures shared by the integration tests.

- `--mpm event|worker|prefork` (or env DD_TEST_MPM) picks the MPM every httpd loads.
- `agent` / `backend`: a capture agent and an origin server per test module;
  `running_agent(...)`: a test's own agent, in a `with` block.
- `httpd_factory(name, config=..., **kw)`: a started Httpd, stopped at the end of the module.
- Every test is checked afterwards (autouse): no agent check failed, and no unexpected
  warn/error line (or crash / sanitizer report) appeared in any running httpd's error log.
  Allow lines with `@pytest.mark.allow_log(r"regex", ...)` on a test or `ALLOW_LOG = [...]` in a
  test module.
"""

import contextlib
import re
import os

import pytest

import httpd as httpd_mod
from backend import Backend
from capture_agent import CaptureAgent

_HTTPDS = []  # running Httpd objects, checked after each test
_AGENTS = []  # capture agents, checked after each test


def pytest_addoption(parser):
    parser.addoption("--mpm", choices=httpd_mod.MPMS, default=None,
                     help="MPM for every httpd the tests start (default: $DD_TEST_MPM or event)")


def pytest_configure(config):
    mpm = config.getoption("--mpm")
    if mpm:
        os.environ["DD_TEST_MPM"] = mpm
    config.addinivalue_line("markers", "allow_log(*regex): error_log lines this test may cause")


def pytest_report_header(config):
    built = "built" if httpd_mod.module_built() else "NOT BUILT"
    return [f"mod_dd_proxy: {httpd_mod.module_path()} ({built}); MPM {httpd_mod.default_mpm()}; "
            f"sanitize: {os.environ.get('DD_PROXY_SANITIZE') or 'none'}"]


def _allow_list(request):
    allow = list(getattr(request.module, "ALLOW_LOG", []))
    node = getattr(request, "node", None)
    if node is not None and hasattr(node, "iter_markers"):
        for m in node.iter_markers("allow_log"):
            allow.extend(m.args)
    return allow


def register_agent(agent):
    _AGENTS.append(agent)
    return agent


def unregister_agent(agent):
    if agent in _AGENTS:
        _AGENTS.remove(agent)


@contextlib.contextmanager
def running_agent(check=True, **kw):
    """A started CaptureAgent(**kw), registered for the after-test checks while it runs, then
    stopped; with check, its own failed checks fail the test once the block is done."""
    a = register_agent(CaptureAgent(**kw).start())
    try:
        yield a
    finally:
        unregister_agent(a)
        a.stop()
    if check:
        assert not a.failures, "agent checks failed:\n" + "\n".join(a.failures[:20])


@pytest.fixture(scope="module")
def agent():
    with running_agent() as a:
        yield a


@pytest.fixture(scope="module")
def backend():
    b = Backend().start()
    yield b
    b.stop()


@pytest.fixture(scope="module")
def httpd_factory(request, agent, backend):
    """make(name, config="", files=None, ports=1, module=True, env=None, start=True) -> Httpd.
    config may be a function of the Httpd (for its ports); files = {docroot path: text}.
    Every httpd is stopped (and its log checked) at the end of the module, while the module's
    agent and backend still run; a fixture whose httpd uses something shorter-lived (its own
    agent) calls make.finish(h) in its own teardown."""
    made = []

    def make(name, config="", start=True, files=None, **kw):
        try:
            h = httpd_mod.Httpd(name, **kw)
        except httpd_mod.HttpdError as e:
            pytest.fail(str(e), pytrace=False)
        made.append(h)
        for rel, text in (files or {}).items():
            h.write_file(rel, text)
        h.write_config(config(h) if callable(config) else config)
        if start:
            try:
                h.start()
            except httpd_mod.HttpdError as e:
                pytest.fail(f"{name}: {e}\nconfig:\n{h.last_config}", pytrace=False)
            h.checked_mark = (0, 0)
            _HTTPDS.append(h)
        return h

    def finish(h):
        """Stops h; returns problems (unexpected log lines at stop, a stop that hung)."""
        if h in made:
            made.remove(h)
        running = h in _HTTPDS
        if running:
            _HTTPDS.remove(h)
        problems = []
        try:
            h.stop()
        except httpd_mod.HttpdError as e:
            problems.append(f"{h.name}: {e}")
        if running:
            bad = h.bad_log_lines(getattr(h, "checked_mark", (0, 0)), _allow_list(request))
            problems += [f"{h.name} (at stop): {ln}" for ln in bad]
        h.cleanup()
        return problems

    def finish_or_fail(h):
        problems = finish(h)
        if problems:
            pytest.fail("httpd problems at stop:\n" + "\n".join(problems), pytrace=False)

    make.finish = finish_or_fail
    yield make

    problems = []
    for h in list(made):
        problems += finish(h)
    if problems:
        pytest.fail("httpd problems at module end:\n" + "\n".join(problems), pytrace=False)


def track_httpd(h):
    """For tests that start their own Httpd: check its log like the fixtures' ones."""
    h.checked_mark = (0, 0)
    _HTTPDS.append(h)
    return h


def untrack_httpd(h):
    if h in _HTTPDS:
        _HTTPDS.remove(h)


@pytest.fixture(autouse=True)
def _check_logs_and_agents(request):
    marks = {id(h): h.log_mark() for h in _HTTPDS}
    yield
    allow = _allow_list(request)
    problems = []
    for h in list(_HTTPDS):
        mark = marks.get(id(h), getattr(h, "checked_mark", (0, 0)))
        problems += [f"{h.name} error_log: {ln}" for ln in h.bad_log_lines(mark, allow)]
        h.checked_mark = h.log_mark()
    for a in _AGENTS:
        if a.failures:
            problems += [f"agent check: {f}" for f in a.failures]
            a.failures.clear()
    if problems:
        pytest.fail("after the test:\n" + "\n".join(problems), pytrace=False)


# --- peers that must be there ------------------------------------------------------------------
# A peer test whose real peer (Datadog's Node.js tracer, the AWS X-Ray SDK) cannot be set up
# skips with the reason. With DD_TEST_REQUIRE_PEERS=1 (what CI sets: .ci/run installs them) such
# a skip fails the run instead, so a broken install can never pass CI silently. Datadog's test
# agent (test_980) is among them: a copy is in tests/peers/dd-apm-test-agent.
_PEER_SKIP_RE = re.compile(r"Node peer unavailable|X-Ray SDK peer is missing|"
                           r"test agent is missing|the test agent in .* (cannot be imported|did not start)")
_PEER_SKIPS = []


def pytest_runtest_logreport(report):
    if report.skipped and os.environ.get("DD_TEST_REQUIRE_PEERS") == "1":
        reason = str(report.longrepr[2] if isinstance(report.longrepr, tuple) else report.longrepr)
        if _PEER_SKIP_RE.search(reason):
            _PEER_SKIPS.append(f"{report.nodeid}: {reason}")


def pytest_sessionfinish(session, exitstatus):
    if _PEER_SKIPS:
        print("\nDD_TEST_REQUIRE_PEERS=1 but peer tests were skipped:\n  " +
              "\n  ".join(_PEER_SKIPS[:10]))
        session.exitstatus = 1
