# SPDX-License-Identifier: Apache-2.0
"""test_953_xray_config.py - issue 17: the X-Ray directives and their environment variables,
and hostile X-Amzn-Trace-Id values.

- DDXRay, DDXRayDaemonAddress, DDXRaySegmentName: bad values fail `apache2 -t` naming the
  directive and the value; DDXRayDaemonAddress is main-server only; AWS_XRAY_DAEMON_ADDRESS and
  AWS_XRAY_TRACING_NAME apply when the directive is not set (a bad value is reported once and
  ignored); the segment name defaults to the DDService name, made a valid X-Ray name.
- Hostile headers (100 fields, 8 KB, bad hex, bad epoch, repeats, joined headers, stray bytes)
  never change the response, never break a segment (the fake daemon checks every document),
  and what goes downstream is always a well-formed header.
"""

import http.client
import re
import time

import pytest

from helpers import counters, one_chunk, server_span, status_location, unique_ua
from httpd import Httpd, free_port, vhost
from xray_daemon import EVENT_ONLY, NOT_MPM, XRayDaemon, rule

ROOT = "1-5759e988-bd862e3fe1be46a994272793"
PARENT = "53995c3f42cd8ad8"
DOWN_RE = re.compile(r"^Root=1-[0-9a-f]{8}-[0-9a-f]{24};Parent=[0-9a-f]{16};Sampled=[01]"
                     r"(;[A-Za-z0-9_.-]+=[\x21-\x2b\x2d-\x3a\x3c-\x7e]*)*$")


@pytest.fixture(scope="module")
def daemon():
    d = XRayDaemon().start()
    d.rules = [rule("all", priority=1, rate=1.0)]
    yield d
    d.stop()


@pytest.fixture(autouse=True)
def _daemon_checks(request):
    yield
    if "daemon" in request.fixturenames:
        d = request.getfixturevalue("daemon")
        problems, d.failures[:] = list(d.failures), []
        assert not problems, "segment document rules broken:\n" + "\n".join(problems[:20])


def send(port, path, headers=()):
    ua = unique_ua("xc")
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.putrequest("GET", path, skip_accept_encoding=True)
        conn.putheader("User-Agent", ua)
        for k, v in headers:
            conn.putheader(k, v)
        conn.endheaders()
        resp = conn.getresponse()
        return resp.status, resp.read(), ua
    finally:
        conn.close()


def wait_segment(daemon, ua, timeout=5):
    found = daemon.wait_for(lambda d: d.segments(
        lambda s: s["http"]["request"].get("user_agent") == ua), timeout)
    assert found, f"no segment for {ua}"
    return found[0]


# --- directives -----------------------------------------------------------------------------

BAD = [
    ("DDXRay maybe", "DDXRay: 'maybe' is not On or Off"),
    ("DDXRayDaemonAddress 127.0.0.1", "DDXRayDaemonAddress: '127.0.0.1' is not a daemon address"),
    ("DDXRayDaemonAddress localhost:0", "'localhost:0' is not a daemon address"),
    ("DDXRayDaemonAddress localhost:70000", "'localhost:70000'"),
    ("DDXRayDaemonAddress ::1:2000", "'::1:2000'"),
    ("DDXRayDaemonAddress udp:127.0.0.1:2000", "'udp:127.0.0.1:2000'"),
    ("DDXRayDaemonAddress udp:h:1 udp:h:2", "'udp:h:1 udp:h:2'"),
    ('DDXRayDaemonAddress "tcp:h:1 h:2"', "'tcp:h:1 h:2'"),
    ("DDXRaySegmentName bad!name", "DDXRaySegmentName: 'bad!name' is not a valid X-Ray segment"),
    ("DDXRaySegmentName " + "n" * 201, "is not a valid X-Ray segment name"),
    ('DDXRaySegmentName ""', "DDXRaySegmentName"),  # httpd itself refuses the empty word
    (vhost(8080, "    DDXRayDaemonAddress 127.0.0.1:2000"), "DDXRayDaemonAddress"),
]


@pytest.mark.parametrize("line,message", BAD, ids=[b[0][:40] for b in BAD])
def test_bad_directive_fails_configtest(line, message):
    h = Httpd("xray-conf")
    try:
        rc, out = h.config_test(line)
        assert rc != 0 and message in out, out
    finally:
        h.cleanup()


@pytest.mark.parametrize("line", [
    "DDXRay On\nDDXRayDaemonAddress tcp:127.0.0.1:2001 udp:127.0.0.1:2002",
    'DDXRayDaemonAddress "udp:[::1]:2000 tcp:localhost:2000"',
    "DDXRayDaemonAddress xray.internal:2000",
    "DDXRaySegmentName orders/api:prod@eu-west-1",
    vhost(8080, "    DDXRay On\n    DDXRaySegmentName vhost-name"),
])
def test_good_directive_passes_configtest(line):
    h = Httpd("xray-conf")
    try:
        rc, out = h.config_test(line)
        assert rc == 0, out
    finally:
        h.cleanup()


def _start(httpd_factory, agent, backend, name, lines, env=None, ports=1, config=None):
    def cfg(h):
        return f"""
DDAgentURL {agent.url}
DDFlushInterval 100
DDXRay On
ProxyPass /api/ {backend.url}/
{status_location()}
{lines(h) if callable(lines) else lines}
"""
    return httpd_factory(name, config=cfg, env=env, ports=ports)


@EVENT_ONLY
def test_environment_address_and_name(daemon, httpd_factory, agent, backend):
    """No directive: AWS_XRAY_DAEMON_ADDRESS says where, AWS_XRAY_TRACING_NAME the name."""
    h = _start(httpd_factory, agent, backend, "xray-env", "DDService svc-from-dd",
               env={"AWS_XRAY_DAEMON_ADDRESS": daemon.address,
                    "AWS_XRAY_TRACING_NAME": "env-name"})
    _, _, ua = send(h.port, "/api/x", [("X-Amzn-Trace-Id", f"Root={ROOT};Sampled=1")])
    assert wait_segment(daemon, ua)["name"] == "env-name"


@EVENT_ONLY
def test_directives_beat_the_environment(daemon, httpd_factory, agent, backend):
    dead = f"127.0.0.1:{free_port()}"
    h = _start(httpd_factory, agent, backend, "xray-beat",
               lambda hh: f"DDXRayDaemonAddress {daemon.address}\nDDXRaySegmentName conf-name\n"
                          + vhost(hh.ports[1], "    DDService vhost-svc\n"
                                               f"    ProxyPass /api/ {backend.url}/"),
               env={"AWS_XRAY_DAEMON_ADDRESS": dead, "AWS_XRAY_TRACING_NAME": "env-name"},
               ports=2)
    _, _, ua = send(h.port, "/api/x", [("X-Amzn-Trace-Id", f"Root={ROOT};Sampled=1")])
    assert wait_segment(daemon, ua)["name"] == "conf-name"
    _, _, ua = send(h.ports[1], "/api/x", [("X-Amzn-Trace-Id", f"Root={ROOT};Sampled=1")])
    assert wait_segment(daemon, ua)["name"] == "conf-name"  # inherited by the vhost


@EVENT_ONLY
def test_segment_name_defaults_to_the_service_name_made_valid(daemon, httpd_factory, agent,
                                                              backend):
    h = _start(httpd_factory, agent, backend, "xray-svcname",
               lambda hh: f"DDXRayDaemonAddress {daemon.address}\nDDService 'main svc!'\n"
                          + vhost(hh.ports[1], "    DDService vhost-svc\n"
                                               f"    ProxyPass /api/ {backend.url}/"),
               ports=2)
    _, _, ua = send(h.port, "/api/x", [("X-Amzn-Trace-Id", f"Root={ROOT};Sampled=1")])
    assert wait_segment(daemon, ua)["name"] == "main svc"
    _, _, ua = send(h.ports[1], "/api/x", [("X-Amzn-Trace-Id", f"Root={ROOT};Sampled=1")])
    assert wait_segment(daemon, ua)["name"] == "vhost-svc"


@pytest.mark.allow_log(r"DDP3001", r"DDP3002")
@EVENT_ONLY
def test_bad_environment_is_reported_once_and_ignored(httpd_factory, agent, backend):
    """A bad AWS_XRAY_DAEMON_ADDRESS: the default (127.0.0.1:2000) applies; a name with
    characters X-Ray does not allow is cleaned. Each is said once, at startup."""
    h = _start(httpd_factory, agent, backend, "xray-badenv", "",
               env={"AWS_XRAY_DAEMON_ADDRESS": "no-port-here", "AWS_XRAY_TRACING_NAME": "a*b"})
    status, _, _ = send(h.port, "/api/x")
    assert status == 200
    log = h.error_log_text()
    assert log.count("DDP3001") == 1 and "AWS_XRAY_DAEMON_ADDRESS='no-port-here'" in log, log
    assert log.count("DDP3002") == 1 and "using 'ab'" in log, log


# --- hostile headers -------------------------------------------------------------------------

def _hostile():
    many = ";".join(f"Field{i}=value{i}" for i in range(100))
    big = "A" * 8000
    return [
        ("100-fields", f"Root={ROOT};Parent={PARENT};Sampled=1;{many}", "root"),
        ("8k-value", f"Root={ROOT};Parent={PARENT};Sampled=1;Big={big}", "root"),
        ("8k-garbage", "x" * 8000, "new"),
        ("bad-hex-root", f"Root=1-5759e98g-bd862e3fe1be46a994272793;Sampled=1", "new"),
        ("bad-hex-parent", f"Root={ROOT};Parent=53995c3f42cd8adz;Sampled=1", "new"),
        ("epoch-zero", "Root=1-00000000-bd862e3fe1be46a994272793;Sampled=1", "verbatim"),
        ("epoch-future", "Root=1-ffffffff-bd862e3fe1be46a994272793;Sampled=1", "verbatim"),
        ("zero-trace", "Root=1-00000000-000000000000000000000000;Sampled=1", "new"),
        ("repeated-root", f"Root={ROOT};Root={ROOT};Sampled=1", "new"),
        ("joined", f"Root={ROOT};Sampled=1, Root={ROOT};Sampled=0", "new"),
        ("only-separators", ";;;;====;;", "new"),
        ("non-ascii", f"Root={ROOT};Parent={PARENT};Sampled=1;K=\xe9\xe8", "root"),
        ("high-bytes-key", f"Root={ROOT};\xff\xfe=1;Sampled=1", "root"),
        ("sampled-long", f"Root={ROOT};Sampled={'1' * 500}", "root"),
        ("parent-only", f"Parent={PARENT};Sampled=1", "new"),
    ]


HOSTILE = _hostile()


@pytest.fixture(scope="module")
def hostile_h(daemon, httpd_factory, agent, backend):  # the daemon outlives the httpd
    return _start(httpd_factory, agent, backend, "xray-hostile",
                  f"DDXRayDaemonAddress {daemon.address}\nDDService hostile-svc")


@NOT_MPM
@pytest.mark.parametrize("value,expect", [c[1:] for c in HOSTILE], ids=[c[0] for c in HOSTILE])
def test_hostile_header_never_breaks_a_segment_or_a_response(hostile_h, agent, backend, daemon,
                                                              value, expect):
    raw = value.encode("latin-1")
    status, body, ua = send(hostile_h.port, "/api/hostile",
                            [("X-Amzn-Trace-Id", raw.decode("latin-1"))])
    assert (status, body) == (200, b"backend ok\n")
    seg = wait_segment(daemon, ua)
    chunk = one_chunk(agent, ua)
    srv = server_span(chunk)
    tid = srv["meta"].get("_dd.p.tid", "0" * 16)
    if expect == "root":
        assert seg["trace_id"] == ROOT
    elif expect == "verbatim":
        assert seg["trace_id"] == value.split(";")[0][5:]  # kept as the SDKs keep it
    elif expect == "new":
        assert seg["trace_id"] == f"1-{tid[:8]}-{tid[8:]}{srv['trace_id']:016x}"
        assert "parent_id" not in seg
    down = backend.by_header("User-Agent", ua).header("X-Amzn-Trace-Id")
    assert DOWN_RE.match(down) and len(down) <= 400, down
    assert "Field99" not in down and "Big=" not in down  # extras stay within 256 bytes


def test_shipped_configuration_lists_the_xray_directives_with_their_defaults():
    """conf.d/dd_proxy.conf (what the package installs): the X-Ray lines, uncommented, are the
    defaults and pass apache2 -t."""
    from httpd import REPO
    with open(f"{REPO}/conf.d/dd_proxy.conf") as f:
        text = f.read()
    lines = [ln.strip()[1:] for ln in text.splitlines() if ln.strip().startswith("#DDXRay")]
    assert sorted(ln.split()[0] for ln in lines) == ["DDXRay", "DDXRayDaemonAddress",
                                                     "DDXRaySegmentName"]
    assert "DDXRay Off" in lines and "DDXRayDaemonAddress 127.0.0.1:2000" in lines
    h = Httpd("xray-conf")
    try:
        rc, out = h.config_test("\n".join(lines))
        assert rc == 0, out
    finally:
        h.cleanup()
