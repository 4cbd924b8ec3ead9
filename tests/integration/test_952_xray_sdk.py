# SPDX-License-Identifier: Apache-2.0
"""test_952_xray_sdk.py - issue 17 item 5: the official AWS X-Ray SDK for Node.js (npm
aws-xray-sdk-core + aws-xray-sdk-express 3.12.0, pinned in tests/peers/xray-sdk/package-lock.json,
installed by scripts/peers.sh) as the reference.

1. The same requests go to httpd (proxying to the Python backend) and to the SDK's Express app;
   both send their segments to one fake daemon, and the segments are compared field by field:
   equal where the SDK and X-Ray's reference agree, and the documented differences asserted
   exactly (so a change on either side fails here).
2. The SDK app behind httpd's mod_proxy: its segment names httpd's subsegment as its parent and
   continues httpd's trace, as an instrumented backend's must.

Skips, naming the install step, when Node or the installed peer is missing.
"""

import http.client
import os
import shutil
import subprocess
import time

import pytest

from helpers import counters, status_location, unique_ua
from httpd import REPO
from xray_daemon import EVENT_ONLY, XRayDaemon, rule

pytestmark = EVENT_ONLY

PEER = os.path.join(REPO, "tests", "peers", "xray-sdk")
ROOT = "1-5759e988-bd862e3fe1be46a994272793"
PARENT = "53995c3f42cd8ad8"
NAME = "cmp-svc"


def _peer_missing():
    if not shutil.which("node"):
        return "node is not installed"
    for mod in ("aws-xray-sdk-core", "aws-xray-sdk-express", "express"):
        if not os.path.isdir(os.path.join(PEER, "node_modules", mod)):
            return f"{mod} is not installed: run scripts/peers.sh (npm ci)"
    return None


@pytest.fixture(scope="module")
def daemon():
    d = XRayDaemon().start()
    d.rules = [rule("all", priority=1, rate=1.0)]
    yield d
    d.stop()
    assert not d.failures, "segment document rules broken:\n" + "\n".join(d.failures[:20])


@pytest.fixture(scope="module")
def node(daemon):
    why = _peer_missing()
    if why:
        pytest.skip(f"the X-Ray SDK peer is missing: {why}")
    env = dict(os.environ, PORT="0", SEGMENT_NAME=NAME,
               AWS_XRAY_DAEMON_ADDRESS=f"127.0.0.1:{daemon.udp_port}")
    p = subprocess.Popen(["node", os.path.join(PEER, "app.js")], env=env, cwd=PEER,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = p.stdout.readline()
    if not line.startswith("listening "):
        p.kill()
        pytest.fail(f"the SDK app did not start: {line!r} {p.stderr.read()[:2000]}")
    port = int(line.split()[1])
    yield port
    p.terminate()
    try:
        p.wait(5)
    except subprocess.TimeoutExpired:
        p.kill()


@pytest.fixture(scope="module")
def h(daemon, node, httpd_factory, agent, backend):  # the daemon outlives the httpd
    hh = httpd_factory("xray-sdk", config=f"""
DDAgentURL {agent.url}
DDFlushInterval 100
DDService not-the-segment-name
DDXRay On
DDXRaySegmentName {NAME}
DDXRayDaemonAddress {daemon.address}
ProxyPass /status/ {backend.url}/status/
ProxyPass /node/ http://127.0.0.1:{node}/
{status_location()}
""")
    deadline = time.monotonic() + 10
    while counters(hh)["xray"]["sampling_rules_fetched"] < 1:
        assert time.monotonic() < deadline, "httpd never fetched the rules"
        time.sleep(0.05)
    return hh


def send(port, path, headers, ua=None):
    ua = ua or unique_ua("sdk")
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.putrequest("GET", path, skip_accept_encoding=True)
        conn.putheader("User-Agent", ua)
        for k, v in headers.items():
            conn.putheader(k, v)
        conn.endheaders()
        resp = conn.getresponse()
        return resp.status, resp.headers, resp.read(), ua  # .get: any case
    finally:
        conn.close()


CASES = [  # (id, path, headers)
    ("ok", "/status/200", {"X-Amzn-Trace-Id": f"Root={ROOT};Parent={PARENT};Sampled=1"}),
    ("not-found", "/status/404", {"X-Amzn-Trace-Id": f"Root={ROOT};Parent={PARENT};Sampled=1"}),
    ("throttled", "/status/429", {"X-Amzn-Trace-Id": f"Root={ROOT};Parent={PARENT};Sampled=1"}),
    ("server-error", "/status/500", {"X-Amzn-Trace-Id": f"Root={ROOT};Sampled=1"}),
    ("unavailable", "/status/503", {"X-Amzn-Trace-Id": f"Root={ROOT};Sampled=1"}),
    ("forwarded", "/status/200?q=secret", {
        "X-Amzn-Trace-Id": f"Root={ROOT};Parent={PARENT};Sampled=1",
        "X-Forwarded-For": "203.0.113.7, 10.0.0.2"}),
    ("ask", "/status/201", {"X-Amzn-Trace-Id": f"Root={ROOT};Parent={PARENT};Sampled=?"}),
    ("root-only", "/status/200", {"X-Amzn-Trace-Id": f"Root={ROOT}"}),
    ("lowercase-keys", "/status/200", {"X-Amzn-Trace-Id": f"root={ROOT};parent={PARENT};"
                                                          "sampled=1"}),
]


def seg_of(daemon, ua, sdk):
    """The one segment of this User-Agent written by this SDK."""
    def find(d):
        return d.segments(lambda s: s["http"]["request"].get("user_agent") == ua and
                          s["aws"]["xray"]["sdk"] == sdk)
    found = daemon.wait_for(find, 5)
    assert found, f"no segment from {sdk} for {ua}"
    time.sleep(0.2)
    found = find(daemon)
    assert len(found) == 1, found
    return found[0]


OURS, THEIRS = "mod_dd_proxy", "X-Ray for Node.js"


def flags(seg):
    return {f for f in ("error", "throttle", "fault") if seg.get(f)}


@pytest.mark.parametrize("path,headers", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_segments_match_the_sdk_field_by_field(h, node, daemon, path, headers):
    s_h, rh_h, _, ua = send(h.port, path, headers)
    s_n, rh_n, _, _ = send(node, path, headers, ua)
    assert s_h == s_n
    # Sampled=?: both answer Root and the decision, the same way
    assert rh_h.get("X-Amzn-Trace-Id") == rh_n.get("X-Amzn-Trace-Id"), (rh_h, rh_n)
    ours, theirs = seg_of(daemon, ua, OURS), seg_of(daemon, ua, THEIRS)
    if "Root=" in headers["X-Amzn-Trace-Id"] or "root=" in headers["X-Amzn-Trace-Id"]:
        assert ours["trace_id"] == theirs["trace_id"] == ROOT
    assert ours["name"] == theirs["name"] == NAME
    assert ours.get("parent_id") == theirs.get("parent_id")
    assert len(ours["id"]) == len(theirs["id"]) == 16
    for f in ("method", "user_agent", "client_ip", "x_forwarded_for"):
        assert ours["http"]["request"].get(f) == theirs["http"]["request"].get(f), f
    assert ours["http"]["response"]["status"] == theirs["http"]["response"]["status"] == s_h
    assert flags(ours) == flags(theirs)
    # Documented differences (README "AWS X-Ray"):
    # - url: the same scheme, host and path; the SDK keeps the query string, httpd (like the Go
    #   SDK and the segment reference: "protocol, hostname, and path") does not
    u_h, u_n = ours["http"]["request"]["url"], theirs["http"]["request"]["url"]
    assert u_h == f"http://127.0.0.1:{h.port}{path.split('?')[0]}"
    assert u_n == f"http://127.0.0.1:{node}{path}"
    # - content_length: the Node SDK never has it on incoming segments; httpd has the body's
    assert "content_length" not in theirs["http"]["response"]
    assert ours["http"]["response"]["content_length"] > 0
    # - who wrote it, and httpd's links to the Datadog trace
    assert "service" in theirs and "runtime" in theirs["service"]
    assert set(ours["annotations"]) == {"dd_trace_id", "dd_trace_id_64", "dd_span_id"}
    assert "annotations" not in theirs
    # - both sampled by a rule only when they decided: the same for both
    if "Sampled=?" in headers["X-Amzn-Trace-Id"]:
        assert "rule_name" in ours["aws"]["xray"]
    # times: epoch seconds, both inside the same test
    for seg in (ours, theirs):
        assert abs(seg["start_time"] - time.time()) < 30 and seg["end_time"] >= seg["start_time"]


def test_sampled_0_records_nothing_on_either(h, node, daemon):
    hdr = {"X-Amzn-Trace-Id": f"Root={ROOT};Parent={PARENT};Sampled=0"}
    _, _, _, ua = send(h.port, "/status/200", hdr)
    send(node, "/status/200", hdr, ua)
    time.sleep(1.0)
    assert not daemon.segments(lambda s: s["http"]["request"].get("user_agent") == ua)


@pytest.mark.parametrize("inbound", [f"Root={ROOT};Parent={PARENT};Sampled=1", None],
                         ids=["from-the-gateway", "new-trace"])
def test_the_sdk_behind_httpd_hangs_under_httpds_subsegment(h, node, daemon, inbound):
    headers = {"X-Amzn-Trace-Id": inbound} if inbound else {}
    status, _, body, ua = send(h.port, "/node/orders/7", headers)
    assert (status, body) == (200, b"node ok\n")
    ours, theirs = seg_of(daemon, ua, OURS), seg_of(daemon, ua, THEIRS)  # UA forwarded
    (sub,) = ours["subsegments"]
    assert sub["namespace"] == "remote" and sub["name"] == "127.0.0.1"
    assert sub["http"]["request"]["url"] == f"http://127.0.0.1:{node}/orders/7"
    assert theirs["parent_id"] == sub["id"], "the backend's parent is httpd's subsegment"
    assert theirs["trace_id"] == ours["trace_id"]
    if inbound:
        assert ours["trace_id"] == ROOT and ours["parent_id"] == PARENT
    assert ours["start_time"] <= sub["start_time"] <= theirs["start_time"]
    # The SDK ends its segment on the response's 'finish' event, which may come after httpd has
    # read the response (and ended its subsegment) on a loaded machine: a bound, not an order.
    assert theirs["end_time"] <= sub["end_time"] + 0.05 and sub["end_time"] <= ours["end_time"]
