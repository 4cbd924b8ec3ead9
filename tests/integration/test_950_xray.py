# SPDX-License-Identifier: Apache-2.0
"""test_950_xray.py - issue 17: httpd records its own X-Ray segment (with a subsegment per
proxied call) and sends it to the daemon over UDP; X-Amzn-Trace-Id in and out; one request
under the same ids in Datadog and X-Ray; the daemon absent; large segments split; counters.

A fake daemon (xray_daemon.py) checks every datagram against the segment document rules; any
violation fails the test that caused it. Its sampling API serves a rule that samples every
request (rate 1), so header-less requests are recorded deterministically, and one that samples
none for /api/never/*.
"""

import http.client
import os
import json
import re
import time

import pytest
import requests

from helpers import (child_pids, counters, dump, one_chunk, server_span, status_location,
                     unique_ua)
from httpd import vhost
from xray_daemon import NOT_MPM, XRayDaemon, rule

ROOT = "1-5759e988-bd862e3fe1be46a994272793"
PARENT = "53995c3f42cd8ad8"
OFF_VHOST, STYLE_VHOST = 1, 2


@pytest.fixture(scope="module")
def daemon():
    d = XRayDaemon().start()
    d.rules = [rule("never", priority=1, rate=0.0, reservoir=0, path="/api/never/*"),
               rule("all", priority=10, rate=1.0, reservoir=0)]
    yield d
    d.stop()


@pytest.fixture(autouse=True)
def _daemon_checks(request):
    yield
    if "daemon" in request.fixturenames:
        d = request.getfixturevalue("daemon")
        problems, d.failures[:] = list(d.failures), []
        assert not problems, "segment document rules broken:\n" + "\n".join(problems[:20])


def base_config(agent, backend, daemon, extra=""):
    return f"""
DDAgentURL {agent.url}
DDFlushInterval 100
DDService xray-svc
DDVersion 1.2.3
DDXRay On
DDXRayDaemonAddress {daemon.address}
ProxyPass /api/ {backend.url}/
ProxyPass /untrusted/ {backend.url}/
<Location /untrusted/>
    DDTrustInboundContext Off
</Location>
<Location /notrace/>
    DDTrace Off
</Location>
ProxyPass /notrace/ {backend.url}/
{status_location()}
<Location /server-status>
    SetHandler server-status
    DDTrace Off
</Location>
{extra}
"""


def wait_rules(h, daemon, n=1):
    """Until the children share the daemon's rules."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if counters(h)["xray"]["sampling_rules_fetched"] >= n:
            return
        time.sleep(0.05)
    pytest.fail(f"the rules were not fetched: {daemon.api_calls}")


@pytest.fixture(scope="module")
def h(daemon, httpd_factory, agent, backend):  # the daemon first: it outlives every httpd
    def config(hh):
        return base_config(agent, backend, daemon) + \
            vhost(hh.ports[OFF_VHOST], "    DDXRay Off\n" f"    ProxyPass /api/ {backend.url}/")
    hh = httpd_factory("xray", config=config, ports=2)
    wait_rules(hh, daemon)
    return hh


def send(h, path, headers=(), port=None, method="GET"):
    """One request, these headers exactly; (status, response headers, body, ua)."""
    ua = unique_ua("xray")
    conn = http.client.HTTPConnection("127.0.0.1", port or h.port, timeout=10)
    try:
        conn.putrequest(method, path, skip_accept_encoding=True)
        conn.putheader("User-Agent", ua)
        for k, v in (headers.items() if isinstance(headers, dict) else headers):
            conn.putheader(k, v)
        conn.endheaders()
        resp = conn.getresponse()
        return resp.status, dict(resp.getheaders()), resp.read(), ua
    finally:
        conn.close()


def dd_ids(chunk):
    """(32-hex trace id, server span) from a Datadog chunk."""
    srv = server_span(chunk)
    root = next(s for s in chunk if s["parent_id"] not in {x["span_id"] for x in chunk})
    tid = root["meta"].get("_dd.p.tid", "0" * 16)
    return f"{tid}{srv['trace_id']:016x}", srv


def us(t):
    return round(t * 1e6)


# --- the segment ----------------------------------------------------------------------------

def test_segment_of_a_proxied_request_field_by_field(h, agent, backend, daemon):
    """Every field the issue lists, for a request API Gateway passes on (Root, Parent,
    Sampled=1) through mod_proxy, with X-Forwarded-For and a query string."""
    status, rh, body, ua = send(h, "/api/orders/42?secret=1", {
        "X-Amzn-Trace-Id": f"Root={ROOT};Parent={PARENT};Sampled=1",
        "X-Forwarded-For": "203.0.113.7, 10.0.0.2"})
    assert (status, body) == (200, b"backend ok\n")
    assert "X-Amzn-Trace-Id" not in rh  # only Sampled=? gets an answer
    seg = daemon.segment_for(ua)
    chunk = one_chunk(agent, ua)
    trace32, srv = dd_ids(chunk)
    assert seg["name"] == "xray-svc"
    assert seg["id"] == f"{srv['span_id']:016x}", "segment id = the Datadog server span id"
    assert seg["trace_id"] == ROOT and seg["parent_id"] == PARENT
    assert us(seg["start_time"]) == srv["start"] // 1000
    assert us(seg["end_time"]) == (srv["start"] + srv["duration"]) // 1000
    assert seg["http"]["request"] == {"method": "GET", "url": f"http://127.0.0.1:{h.port}/api/"
                                      "orders/42", "user_agent": ua,
                                      "client_ip": "203.0.113.7", "x_forwarded_for": True}
    assert seg["http"]["response"] == {"status": 200, "content_length": len(body)}
    assert not {"error", "throttle", "fault", "origin"} & set(seg)
    assert seg["service"] == {"version": "1.2.3"}
    assert seg["aws"]["xray"]["sdk"] == "mod_dd_proxy"
    assert seg["aws"]["xray"].get("rule_name") is None  # decided upstream, not by a rule
    assert seg["annotations"] == {"dd_trace_id": trace32, "dd_trace_id_64": str(srv["trace_id"]),
                                  "dd_span_id": str(srv["span_id"])}
    assert seg["metadata"]["datadog"]["trace"] == {
        "trace-id": str(srv["trace_id"]), "parent-id": str(srv["span_id"]),
        "sampling-priority": str(int(chunk[0]["metrics"].get("_sampling_priority_v1", 1)))}
    # the proxied call
    (sub,) = seg["subsegments"]
    assert sub["namespace"] == "remote" and sub["name"] == "127.0.0.1"
    assert sub["http"] == {"request": {"method": "GET",
                                       "url": f"http://127.0.0.1:{backend.port}/orders/42"},
                           "response": {"status": 200, "content_length": 11}}
    assert seg["start_time"] <= sub["start_time"] <= sub["end_time"] <= seg["end_time"]
    # downstream: the Root, this hop's subsegment as Parent, the decision
    req = backend.by_header("User-Agent", ua)
    assert req.header("X-Amzn-Trace-Id") == f"Root={ROOT};Parent={sub['id']};Sampled=1"
    # the Datadog span points at the X-Ray trace
    assert srv["meta"]["aws.xray.trace_id"] == ROOT


@pytest.mark.parametrize("code,flags", [(404, {"error"}), (429, {"error", "throttle"}),
                                        (500, {"fault"}), (503, {"fault"}), (302, set())])
def test_error_throttle_fault(h, daemon, code, flags):
    status, _, _, ua = send(h, f"/api/status/{code}",
                            {"X-Amzn-Trace-Id": f"Root={ROOT};Sampled=1"})
    assert status == code
    seg = daemon.segment_for(ua)
    assert {f for f in ("error", "throttle", "fault") if seg.get(f)} == flags
    assert seg["http"]["response"]["status"] == code
    (sub,) = seg["subsegments"]
    assert {f for f in ("error", "throttle", "fault") if sub.get(f)} == flags
    assert sub["http"]["response"]["status"] == code


def test_backend_down_is_a_fault_of_the_subsegment(httpd_factory, agent, daemon):
    dead = f"http://127.0.0.1:{__import__('httpd').free_port()}"
    hh = httpd_factory("xray-dead", config=lambda x: base_config(agent, type(
        "B", (), {"url": dead})(), daemon))
    status, _, _, ua = send(hh, "/api/x", {"X-Amzn-Trace-Id": f"Root={ROOT};Sampled=1"})
    assert status == 503
    seg = daemon.segment_for(ua)
    assert seg.get("fault") is True
    (sub,) = seg["subsegments"]
    assert sub["fault"] is True and sub["http"]["response"]["status"] == 503


ALLOW_LOG = [r"AH01114", r"AH00957", r"AH00959", r"AH01102"]  # the dead backend's lines


@NOT_MPM
def test_static_file_has_no_subsegment(h, daemon):
    status, _, body, ua = send(h, "/index.html")
    assert status == 200
    seg = daemon.segment_for(ua)
    assert "subsegments" not in seg and "parent_id" not in seg
    assert seg["http"]["response"] == {"status": 200, "content_length": len(body)}
    assert seg["aws"]["xray"]["rule_name"] == "all"  # the centralized rule decided


@NOT_MPM
def test_head_request_content_length_is_the_entity_length(h, daemon):
    """HEAD: the length the response announces (as the Go SDK reads Content-Length)."""
    status, rh, body, ua = send(h, "/index.html", method="HEAD")
    assert status == 200 and body == b""
    assert daemon.segment_for(ua)["http"]["response"]["content_length"] == \
        int(rh["Content-Length"])


# --- ids: the same request in Datadog and X-Ray ------------------------------------------------

@NOT_MPM
def test_new_trace_has_the_datadog_ids_and_a_current_root(h, agent, backend, daemon):
    """No header: the X-Ray trace id is the Datadog 128-bit trace id (top 32 bits = the start
    time: a valid, current X-Ray Root), the segment id the server span's."""
    t0 = time.time()
    status, _, _, ua = send(h, "/api/new")
    assert status == 200
    seg = daemon.segment_for(ua)
    chunk = one_chunk(agent, ua)
    trace32, srv = dd_ids(chunk)
    assert seg["trace_id"] == f"1-{trace32[:8]}-{trace32[8:]}", dump(chunk)
    assert abs(int(trace32[:8], 16) - t0) <= 2, "top 32 bits = the trace's start (Unix s)"
    assert trace32[8:16] == "00000000"
    assert seg["id"] == f"{srv['span_id']:016x}" and "parent_id" not in seg
    assert seg["annotations"]["dd_trace_id"] == trace32
    assert seg["annotations"]["dd_trace_id_64"] == str(srv["trace_id"])
    assert seg["annotations"]["dd_span_id"] == str(srv["span_id"])
    assert srv["meta"]["aws.xray.trace_id"] == seg["trace_id"]
    # and the note that logs carry
    line = h.access_log_line_for(ua)
    assert line and trace32 in line[0] and str(srv["span_id"]) in line[0]
    req = backend.by_header("User-Agent", ua)
    sub = seg["subsegments"][0]
    assert req.header("X-Amzn-Trace-Id") == f"{'Root=' + seg['trace_id']};Parent={sub['id']}" \
                                             ";Sampled=1"


@NOT_MPM
def test_with_the_xray_style_the_datadog_trace_continues_the_root(httpd_factory, agent,
                                                                   backend, daemon):
    """DDPropagationStyle xray: the Datadog trace takes the Root (and Sampled=1 as priority 1,
    as before), so the trace ids agree in both products."""
    hh = httpd_factory("xray-style", config=base_config(
        agent, backend, daemon, "DDPropagationStyle datadog tracecontext xray"))
    status, _, _, ua = send(hh, "/api/style",
                            {"X-Amzn-Trace-Id": f"Root={ROOT};Parent={PARENT};Sampled=1"})
    assert status == 200
    seg = daemon.segment_for(ua)
    chunk = one_chunk(agent, ua)
    trace32, srv = dd_ids(chunk)
    assert seg["trace_id"] == ROOT == f"1-{trace32[:8]}-{trace32[8:]}"
    assert srv["parent_id"] == int(PARENT, 16)
    assert chunk[0]["metrics"]["_sampling_priority_v1"] == 1
    assert seg["id"] == f"{srv['span_id']:016x}"
    # the downstream header is the X-Ray one (the subsegment as parent), not the Datadog one
    req = backend.by_header("User-Agent", ua)
    assert req.header("X-Amzn-Trace-Id") == \
        f"Root={ROOT};Parent={seg['subsegments'][0]['id']};Sampled=1"


@NOT_MPM
def test_root_only_header_is_the_trace_without_a_parent(h, backend, daemon):
    status, _, _, ua = send(h, "/api/rootonly", {"X-Amzn-Trace-Id": f"Root={ROOT}"})
    assert status == 200
    seg = daemon.segment_for(ua)
    assert seg["trace_id"] == ROOT and "parent_id" not in seg
    req = backend.by_header("User-Agent", ua)
    assert req.header("X-Amzn-Trace-Id") == \
        f"Root={ROOT};Parent={seg['subsegments'][0]['id']};Sampled=1"


@NOT_MPM
def test_lineage_and_other_fields_go_downstream_self_does_not(h, backend, daemon):
    status, _, _, ua = send(h, "/api/lineage", {
        "X-Amzn-Trace-Id": f"Self=1-67891234-12456789abcdef012345678;Root={ROOT};"
                           f"Parent={PARENT};Sampled=1;Lineage=a87bd80c:1|68fd508a:5;"
                           "CalledFrom=app"})
    assert status == 200
    seg = daemon.segment_for(ua)
    req = backend.by_header("User-Agent", ua)
    assert req.header("X-Amzn-Trace-Id") == (
        f"Root={ROOT};Parent={seg['subsegments'][0]['id']};Sampled=1;"
        "Lineage=a87bd80c:1|68fd508a:5;CalledFrom=app")


@NOT_MPM
def test_sampled_0_records_nothing_and_says_so_downstream(h, agent, backend, daemon):
    status, rh, _, ua = send(h, "/api/s0", {"X-Amzn-Trace-Id": f"Root={ROOT};Parent={PARENT};"
                                                               "Sampled=0"})
    assert status == 200 and "X-Amzn-Trace-Id" not in rh
    chunk = one_chunk(agent, ua)  # Datadog still traces it (its own decision)
    _, srv = dd_ids(chunk)
    req = backend.by_header("User-Agent", ua)
    out = req.header("X-Amzn-Trace-Id")
    assert re.fullmatch(rf"Root={ROOT};Parent=[0-9a-f]{{16}};Sampled=0", out), out
    time.sleep(0.5)
    assert not daemon.segments(lambda s: s["http"]["request"].get("user_agent") == ua)
    assert srv["meta"]["aws.xray.trace_id"] == ROOT


@NOT_MPM
def test_sampled_ask_gets_the_decision_in_the_response(h, backend, daemon):
    """Sampled=?: httpd decides (the rules: 'all' keeps, 'never' drops) and answers with
    Root and the decision, as the SDKs' middleware does."""
    status, rh, _, ua = send(h, "/api/ask", {"X-Amzn-Trace-Id": f"Root={ROOT};Parent={PARENT};"
                                                                "Sampled=?"})
    assert status == 200
    assert rh.get("X-Amzn-Trace-Id") == f"Root={ROOT};Sampled=1"
    seg = daemon.segment_for(ua)
    assert seg["parent_id"] == PARENT and seg["aws"]["xray"]["rule_name"] == "all"
    status, rh, _, ua = send(h, "/api/never/x", {"X-Amzn-Trace-Id": f"Root={ROOT};Sampled=?"})
    assert status == 200 and rh.get("X-Amzn-Trace-Id") == f"Root={ROOT};Sampled=0"
    req = backend.by_header("User-Agent", ua)
    assert req.header("X-Amzn-Trace-Id").endswith(";Sampled=0")
    # an error response carries the answer too
    status, rh, _, ua = send(h, "/api/status/500", {"X-Amzn-Trace-Id": f"Root={ROOT};Sampled=?"})
    assert status == 500 and rh.get("X-Amzn-Trace-Id") == f"Root={ROOT};Sampled=1"


@NOT_MPM
def test_untrusted_location_ignores_the_inbound_header(h, backend, daemon):
    status, _, _, ua = send(h, "/untrusted/x", {"X-Amzn-Trace-Id": f"Root={ROOT};"
                                                                  f"Parent={PARENT};Sampled=0"})
    assert status == 200
    seg = daemon.segment_for(ua)  # Sampled=0 ignored: the rule samples it
    assert seg["trace_id"] != ROOT and "parent_id" not in seg
    req = backend.by_header("User-Agent", ua)
    assert ROOT not in req.header("X-Amzn-Trace-Id")


@NOT_MPM
def test_not_traced_location_and_xray_off_vhost_leave_the_header_alone(h, backend, daemon):
    hdr = f"Root={ROOT};Parent={PARENT};Sampled=1"
    status, _, _, ua = send(h, "/notrace/x", {"X-Amzn-Trace-Id": hdr})
    assert status == 200
    assert backend.by_header("User-Agent", ua).header("X-Amzn-Trace-Id") == hdr
    status, _, _, ua2 = send(h, "/api/x", {"X-Amzn-Trace-Id": hdr}, port=h.ports[OFF_VHOST])
    assert status == 200
    assert backend.by_header("User-Agent", ua2).header("X-Amzn-Trace-Id") == hdr
    time.sleep(0.5)
    assert not daemon.segments(lambda s: s["http"]["request"].get("user_agent") in (ua, ua2))


# --- delivery -------------------------------------------------------------------------------

def test_counters_in_json_and_mod_status(h, daemon):
    before = counters(h)["xray"]
    uas = [send(h, "/index.html")[3] for _ in range(5)]
    for ua in uas:
        daemon.segment_for(ua, settle=0)
    c = counters(h)
    after = c["xray"]
    assert after["segments_sent"] >= before["segments_sent"] + 5
    assert after["bytes_sent"] > before["bytes_sent"]
    assert after["sampled"] >= before["sampled"] + 5
    assert set(c["xray_segments_dropped"]) == {"queue_full", "send_error", "too_large",
                                               "encode_error", "subsegment_limit"}


@NOT_MPM
def test_mod_status_rows(h):
    auto = requests.get(h.url("/server-status?auto"), timeout=5).text
    for row in ("XRaySegmentsSent", "XRaySampled", "XRaySamplingErrors",
                "XRaySegmentsDropped_send_error", "XRaySegmentsTooLarge"):
        assert re.search(rf"^DDProxy{row}: \d+$", auto, re.M), auto
    html = requests.get(h.url("/server-status"), timeout=5).text
    assert "<td>XRaySegmentsSent</td>" in html


def test_a_page_of_200_proxied_includes_is_split(httpd_factory, agent, backend, daemon):
    """200 subsegments do not fit one datagram: the segment goes alone and each subsegment
    as a document of its own (type subsegment, trace_id, parent_id), none lost."""
    long = "p" * 240
    page = "".join(f'<!--#include virtual="/api/{i}/{long}" -->\n' for i in range(200))
    hh = httpd_factory("xray-split", config=base_config(agent, backend, daemon, """
LoadModule include_module /usr/lib/apache2/modules/mod_include.so
<Files "*.shtml">
    Options +Includes
    SetOutputFilter INCLUDES
</Files>
"""), files={"page.shtml": page})
    c = counters(hh)
    before, before_drops = c["xray"], c["xray_segments_dropped"]
    status, _, body, ua = send(hh, "/page.shtml", {"X-Amzn-Trace-Id": f"Root={ROOT};Sampled=1"})
    assert status == 200 and body.count(b"backend ok") == 200
    seg = daemon.segment_for(ua)
    assert "subsegments" not in seg
    subs = daemon.wait_for(lambda d: [x for x in d.docs() if x.get("type") == "subsegment" and
                                      x.get("parent_id") == seg["id"]] if len(
        [x for x in d.docs() if x.get("parent_id") == seg["id"]]) >= 200 else None, 10)
    assert subs and len(subs) == 200, f"{len(subs or [])} subsegments arrived"
    assert {s["trace_id"] for s in subs} == {ROOT}
    assert all(s["namespace"] == "remote" and len(s["http"]["request"]["url"]) <= 250
               for s in subs)
    backend_parents = {re.search(r"Parent=([0-9a-f]{16})", r.header("X-Amzn-Trace-Id")).group(1)
                       for r in backend.find(lambda r: long in r.path)}
    assert {s["id"] for s in subs} <= backend_parents
    c = counters(hh)
    after = c["xray"]
    assert after["segments_too_large"] == before["segments_too_large"] + 1
    assert c["xray_segments_dropped"]["too_large"] == before_drops["too_large"]


@NOT_MPM
@pytest.mark.allow_log(r"DDP3004", r"DDP3005")
def test_daemon_absent_costs_requests_nothing(httpd_factory, agent, backend):
    """Nothing on the daemon's ports: requests answer as fast as with it, the drops and the
    sampling API's failures are counted, and the default rule (1/s) still decides."""
    gone = XRayDaemon().start()
    addr = gone.address
    gone.stop()
    hh = httpd_factory("xray-absent", config=base_config(agent, backend, type(
        "D", (), {"address": addr})()))
    t0 = time.monotonic()
    worst = 0.0
    for _ in range(30):
        t = time.monotonic()
        status, _, body, _ = send(hh, "/api/x", {"X-Amzn-Trace-Id": f"Root={ROOT};Sampled=1"})
        worst = max(worst, time.monotonic() - t)
        assert (status, body) == (200, b"backend ok\n")
    assert worst < 0.5, f"a request took {worst:.3f}s with the daemon absent"
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        c = counters(hh)
        x, x_drops = c["xray"], c["xray_segments_dropped"]
        if x["sampling_errors"] >= 1 and x_drops["send_error"] >= 1 and \
                x["segments_sent"] + x_drops["send_error"] >= x["sampled"]:
            break
        time.sleep(0.1)
    assert x["sampling_errors"] >= 1 and x["sampling_rules_fetched"] == 0, x
    assert x_drops["send_error"] >= 1, x
    # every recorded segment is either sent or counted as dropped, none vanish
    assert x["sampled"] >= 30
    assert x["segments_sent"] + x_drops["send_error"] == x["sampled"], x
    assert time.monotonic() - t0 < 15


def _daemon_sockets(pid, ports):
    """{fd: (proto, close-on-exec)} of pid's sockets connected to one of ports."""
    inodes = {}
    for proto in ("udp", "tcp", "udp6", "tcp6"):
        try:
            with open(f"/proc/{pid}/net/{proto}") as f:
                next(f)
                for line in f:
                    cols = line.split()
                    if int(cols[2].split(":")[1], 16) in ports:
                        inodes[cols[9]] = proto
        except OSError:
            continue
    out = {}
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
            with open(f"/proc/{pid}/fdinfo/{fd}") as f:
                flags = int(next(ln for ln in f if ln.startswith("flags:")).split()[1], 8)
        except (OSError, StopIteration):
            continue
        m = re.fullmatch(r"socket:\[(\d+)\]", target)
        if m and m.group(1) in inodes:
            out[int(fd)] = (inodes[m.group(1)], bool(flags & 0o2000000))
    return out


def test_daemon_sockets_are_close_on_exec(h, daemon):
    """CGI children and piped loggers inherit nothing: the UDP socket to the daemon and the
    sampling API's TCP connection are opened with SOCK_CLOEXEC."""
    for _ in range(5):
        send(h, "/index.html")
    daemon.wait_for(lambda d: len(d.docs()) >= 5)
    found = {}
    for pid in child_pids(h):
        for fd, v in _daemon_sockets(pid, {daemon.udp_port, daemon.tcp_port}).items():
            found[(pid, fd)] = v
    protos = {v[0][:3] for v in found.values()}
    assert "udp" in protos and "tcp" in protos, f"daemon sockets found: {found}"
    assert all(cloexec for _, cloexec in found.values()), found
