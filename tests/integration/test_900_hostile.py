# SPDX-License-Identifier: Apache-2.0
"""test_900_hostile.py - CONTRACT sections 3.2 and 8 (issue 6): anyone can send x-dd-proxy*
headers; nothing they send hurts httpd.

Every hostile request goes, as raw bytes on a socket (so nothing on the client side cleans it),
to an httpd with the module and to the same httpd without it; then:
- the same status, headers (but Date/Server/Keep-Alive/Connection) and body from both;
- the trace (when httpd got far enough to make one) has every meta value capped (1 KiB;
  http.url / http.route / resource 4 KiB), `_dd.proxy.truncated = 1` where something was cut,
  and valid UTF-8 everywhere (the capture agent decodes with raw=False: a bad string is a
  recorded failure, which fails the test);
- at most one inferred span, and exactly one / none where the contract says so;
- nothing in the module's error log above debug that the module-less httpd does not log too.

Then: 1,000 different domain names (service explosion), and DDInferredProxyTrustedNetworks
(127.0.0.1 untrusted under 10.0.0.0/8, trusted under 127.0.0.0/8).
"""

import re
import socket
import threading
import time
import uuid

import pytest
import requests

from helpers import (SERVER_SPAN, STATUS_PATH, counters, dump, now_ms, status_location)
from httpd import if_module, vhost

MTIME = 1_700_000_000
VOLATILE = {b"date", b"server", b"keep-alive", b"connection"}
CAP_VALUE, CAP_PATH = 1024, 4096
PATH_KEYS = {"http.url", "http.route"}
GATEWAY_SPANS = {"aws.apigateway", "aws.httpapi", "azure.apim", "azure.app-gateway",
                 "azure.frontdoor"}
BIG = 9000  # > 8 KB
# httpd's own answer to a bad %-escape or a path above the root, with or without the module
# (exchange() checks that the module's httpd logs nothing the module-less one does not)
ALLOW_LOG = [r"\[core:error\] .*AH10244: invalid URI path"]
_LEVEL_RE = re.compile(r"\[(?:([\w.-]*):)?(\w+)\] \[pid \d+(?::tid \d+)?\] ")


def config(agent, backend):
    def make(h):
        untrusted, trusted = h.ports[1], h.ports[2]
        return "\n".join([
            "LimitRequestFieldSize 65536",
            "LimitRequestLine 65536",
            "LimitRequestFields 300",
            f"ProxyPass /api/ {backend.url}/",
            if_module("\n".join([
                f"DDAgentURL {agent.url}",
                "DDFlushInterval 100",
                "DDInferredProxy On",
                status_location(),
            ])),
            vhost(untrusted, if_module("    DDInferredProxyTrustedNetworks 10.0.0.0/8")),
            vhost(trusted, if_module("    DDInferredProxyTrustedNetworks 127.0.0.0/8 ::1/128")),
        ])
    return make


@pytest.fixture(scope="module")
def servers(httpd_factory, agent, backend):
    with_mod = httpd_factory("hostile", config=config(agent, backend), ports=3)
    without = httpd_factory("hostile-nomod", config=config(agent, backend), ports=3,
                            module=False)
    for h in (with_mod, without):
        h.write_file("index.html", "<html><body>dd_proxy test</body></html>\n", mtime=MTIME)
    return with_mod, without


# --- raw requests --------------------------------------------------------------------------

def b(v):
    return v if isinstance(v, bytes) else str(v).encode()


def build(method, path, headers):
    lines = [b(method) + b" " + b(path) + b" HTTP/1.1", b"Host: 127.0.0.1",
             b"Connection: close"]
    lines += [b(k) + b": " + b(v) for k, v in headers]
    return b"\r\n".join(lines) + b"\r\n\r\n"


def raw_exchange(port, data, timeout=10):
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(data)
        parts = []
        while True:
            try:
                got = s.recv(65536)
            except ConnectionResetError:
                break
            if not got:
                break
            parts.append(got)
    return b"".join(parts)


def parse(resp, port):
    """(status, sorted headers without the volatile ones, body), the port made neutral."""
    resp = resp.replace(str(port).encode(), b"PORT")
    head, _, body = resp.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    assert lines and lines[0].startswith(b"HTTP/1."), f"not an HTTP response: {resp[:200]!r}"
    status = int(lines[0].split()[1])
    headers = []
    for ln in lines[1:]:
        k, _, v = ln.partition(b":")
        k = k.strip().lower()
        if k in VOLATILE:
            continue
        v = v.strip()
        if k == b"allow":  # built from a hash: its order differs per process
            v = b",".join(sorted(x.strip() for x in v.split(b",")))
        headers.append((k, v))
    return status, sorted(headers), body


def log_lines(h, mark):
    """Error log lines above debug since mark, without time/pid/client port."""
    out = []
    for line in h.error_log_text(mark).splitlines():
        m = _LEVEL_RE.search(line)
        if not m:
            continue
        level = m.group(2)
        if level == "debug" or level.startswith("trace"):
            continue
        rest = re.sub(r"\[client [\d.:]+\] ", "", line[m.end():]).replace(h.dir, "DIR")
        out.append(f"[{m.group(1)}:{level}] {rest}")
    return out


def exchange(servers, method, path, headers, port_index=0):
    """Sends the same raw request to both; asserts the same response and no extra log lines.
    Returns (status, body) of the module's httpd."""
    with_mod, no_mod = servers
    marks = (with_mod.log_mark(), no_mod.log_mark())
    data = build(method, path, headers)
    p1, p0 = with_mod.ports[port_index], no_mod.ports[port_index]
    r1 = parse(raw_exchange(p1, data), p1)
    r0 = parse(raw_exchange(p0, data), p0)
    assert r1 == r0, \
        f"the module changed the response:\nwith:    {r1!r:.2000}\nwithout: {r0!r:.2000}"
    time.sleep(0.05)  # log lines are written after the response
    dd = [ln for ln in log_lines(with_mod, marks[0]) if ln.startswith("[dd_proxy:")]
    assert not dd, "the module logged above debug:\n" + "\n".join(dd)
    extra = set(log_lines(with_mod, marks[0])) - set(log_lines(no_mod, marks[1]))
    assert not extra, "logged only with the module:\n" + "\n".join(sorted(extra))
    return r1[0], r1[2]


# --- the payload ---------------------------------------------------------------------------

def marker_chunk(agent, marker, timeout=5.0, required=True):
    """The one chunk whose server span's User-Agent starts with marker."""
    def pred(s):
        return (s.get("meta") or {}).get("http.useragent", "").startswith(marker)
    found = agent.wait_for(lambda a: a.chunks_where(pred), timeout if required else 0.5)
    if not found:
        assert not required, f"no trace for {marker} within {timeout}s; agent saw {agent.counts}"
        return None
    time.sleep(0.1)
    chunks = agent.chunks_where(pred)
    assert len(chunks) == 1, f"{len(chunks)} traces for one request:\n{dump(chunks)[:4000]}"
    return chunks[0]


def check_chunk(chunk, truncated=()):
    """Caps and UTF-8 on every span (decoding the payload at all proved the UTF-8); the spans
    named in truncated must say they were capped. Every violation at once."""
    problems = []
    for s in chunk:
        where = f"{s['name']} span"
        for k, v in s["meta"].items():
            cap = CAP_PATH if k in PATH_KEYS else CAP_VALUE
            n = len(v.encode("utf-8"))
            if n > cap:
                problems.append(f"{where}: meta {k} is {n} bytes (cap {cap})")
            if len(k.encode()) > CAP_VALUE:
                problems.append(f"{where}: meta key of {len(k)} bytes")
        for f in ("name", "service"):
            if len(s[f].encode()) > CAP_VALUE:
                problems.append(f"{where}: {f} is {len(s[f].encode())} bytes")
        if len(s["resource"].encode()) > CAP_PATH:
            problems.append(f"{where}: resource is {len(s['resource'].encode())} bytes")
        if s["name"] in truncated and s["metrics"].get("_dd.proxy.truncated") != 1:
            problems.append(f"{where} was capped but has no _dd.proxy.truncated = 1")
    assert not problems, "\n".join(problems)
    inferred = [s for s in chunk if s["name"] in GATEWAY_SPANS]
    assert len(inferred) <= 1, f"{len(inferred)} gateway spans in one trace"
    assert [s["name"] for s in chunk].count(SERVER_SPAN) == 1
    return inferred[0] if inferred else None


def gw_headers(proxy="aws-apigateway", time_ms=None, **over):
    h = {
        "x-dd-proxy": proxy,
        "x-dd-proxy-request-time-ms": str(now_ms() - 200) if time_ms is None else time_ms,
        "x-dd-proxy-httpmethod": "GET",
        "x-dd-proxy-path": "/api/hostile",
        "x-dd-proxy-domain-name": "hostile.example",
        "x-dd-proxy-stage": "prod",
        "x-dd-proxy-region": "us-east-1",
        "x-dd-proxy-api-id": "h0st1le",
    }
    h.update(over)
    return [(k, v) for k, v in h.items() if v is not None]


def marker():
    return f"ddhostile-{uuid.uuid4().hex}"


def run_case(servers, agent, path, headers, ua_suffix=b"", expect="any", truncated=(),
             method="GET", traced=True):
    """One hostile request; returns (status, inferred span or None, server span or None)."""
    m = marker()
    hdrs = [("User-Agent", m.encode() + ua_suffix)] + list(headers)
    status, _ = exchange(servers, method, path, hdrs)
    chunk = marker_chunk(agent, m, required=traced)
    if chunk is None:
        return status, None, None
    inferred = check_chunk(chunk, truncated)
    if expect == "span":
        assert inferred is not None, f"no gateway span:\n{dump(chunk)[:3000]}"
    elif expect == "none":
        assert inferred is None, f"a gateway span from bad headers:\n{dump(inferred)[:3000]}"
    return status, inferred, [s for s in chunk if s["name"] == SERVER_SPAN][0]


# --- 8 KB+ values --------------------------------------------------------------------------

def test_values_over_8k_are_capped(servers, agent):
    long_path = "/api/" + "p" * BIG
    hdrs = gw_headers(**{"x-dd-proxy-domain-name": "d" * BIG + ".example",
                         "x-dd-proxy-path": long_path, "x-dd-proxy-resource-path": long_path,
                         "x-dd-proxy-stage": "s" * BIG, "x-dd-proxy-region": "r" * BIG,
                         "x-dd-proxy-api-id": "i" * BIG, "x-dd-proxy-account-id": "a" * BIG,
                         "x-dd-proxy-user": "u" * BIG, "x-dd-proxy-httpmethod": "G" * BIG})
    status, inf, srv = run_case(servers, agent, "/api/" + "q" * BIG, hdrs,
                                ua_suffix=b"u" * BIG, expect="span",
                                truncated=("aws.apigateway", SERVER_SPAN))
    assert status == 200
    assert inf["service"].startswith("ddd") and inf["meta"]["stage"].startswith("sss")
    assert srv["resource"].startswith("GET /api/qqq")
    assert srv["meta"]["http.useragent"].startswith("ddhostile-")


def test_header_over_the_servers_limit(servers, agent):
    """Past LimitRequestFieldSize httpd itself answers 400, with or without the module."""
    hdrs = gw_headers(**{"x-dd-proxy-stage": "s" * 70000})
    status, _, _ = run_case(servers, agent, "/index.html", hdrs, traced=False)
    assert status == 400


def test_multibyte_value_cut_on_a_character_boundary(servers, agent):
    # 2-, 3- and 4-byte characters, each value > 1 KiB (and paths > 4 KiB)
    hdrs = gw_headers(**{"x-dd-proxy-stage": "\u00e9" * 700, "x-dd-proxy-region": "\u20ac" * 500,
                         "x-dd-proxy-api-id": "\U0001f600" * 300,
                         "x-dd-proxy-path": "/api/" + "\u00e9" * 2100,
                         "x-dd-proxy-resource-path": "/" + "\u20ac" * 1400})
    hdrs = [(k, v.encode("utf-8")) for k, v in hdrs]
    _, inf, _ = run_case(servers, agent, "/api/mb", hdrs, expect="span",
                         truncated=("aws.apigateway",))
    for key, ch in (("stage", "\u00e9"), ("region", "\u20ac"), ("apiid", "\U0001f600")):
        v = inf["meta"][key]
        assert v and set(v) == {ch}, f"{key}: cut inside a character or changed: {v[-5:]!r}"
    assert set(inf["meta"]["http.route"]) == {"/", "\u20ac"}


# --- repeated headers ----------------------------------------------------------------------

@pytest.mark.parametrize("copies", [2, 20])
def test_repeated_gateway_headers(servers, agent, copies):
    hdrs = gw_headers() * copies
    status, _, _ = run_case(servers, agent, "/api/rep", hdrs, expect="any")
    assert status == 200


def test_repeated_gateway_headers_different_values(servers, agent):
    hdrs = gw_headers() + gw_headers("azure-apim", time_ms="1") + gw_headers("'aws-httpapi'")
    run_case(servers, agent, "/api/rep2", hdrs, expect="any")


def test_too_many_headers(servers, agent):
    """More header lines than LimitRequestFields: httpd's own 400 either way."""
    status, _, _ = run_case(servers, agent, "/index.html", gw_headers() * 40, traced=False)
    assert status == 400


# --- bytes >= 0x80 and invalid UTF-8 --------------------------------------------------------

def test_invalid_utf8_everywhere(servers, agent):
    hdrs = [(k, v.encode()) for k, v in gw_headers()]
    hdrs = [(k, v) for k, v in hdrs if k not in ("x-dd-proxy-stage", "x-dd-proxy-domain-name",
                                                   "x-dd-proxy-path", "x-dd-proxy-region")]
    hdrs += [("x-dd-proxy-stage", b"caf\xe9-\xff\xfe-\xc3"),
             ("x-dd-proxy-domain-name", b"d\xe9\xff\xc3\x28.example"),
             ("x-dd-proxy-path", b"/api/\xff\xfe\xed\xa0\x80"),
             ("x-dd-proxy-resource-path", b"/{p\xc0\xaf}"),
             ("x-dd-proxy-region", "\u00fcber-1".encode()),
             ("x-dd-proxy-account-id", b"\xf4\x90\x80\x80\xf8\x88\x80\x80\x80")]
    status, inf, srv = run_case(servers, agent, b"/api/%ff%fe%c3%28", hdrs,
                                ua_suffix=b"-\xff\xfe\xe9", expect="span")
    assert status == 200
    assert inf["meta"]["stage"].startswith("caf") and "\ufffd" in inf["meta"]["stage"]
    assert inf["service"].startswith("d") and "\ufffd" in inf["service"], inf["service"]
    assert inf["meta"]["region"] == "\u00fcber-1"  # valid UTF-8 stays as it is
    assert "\ufffd" in srv["meta"]["http.useragent"]


@pytest.mark.parametrize("path", [b"/index.html\xff", b"/caf\xc3\xa9/x", b"/\x80\x81/index.html"],
                         ids=["ff", "utf8", "continuation"])
def test_raw_high_bytes_in_request_line(servers, agent, path):
    run_case(servers, agent, path, gw_headers(), expect="any", traced=False)


def test_control_characters(servers, agent):
    hdrs = gw_headers(**{"x-dd-proxy-stage": "a\tb", "x-dd-proxy-region": "\x1b[31mred"})
    hdrs = [(k, v.encode()) for k, v in hdrs]
    run_case(servers, agent, "/api/ctl", hdrs, expect="any", traced=False)


# --- times ---------------------------------------------------------------------------------

TIMES = {
    "2^64": str(2**64),
    "2^64-1": str(2**64 - 1),
    "2^63": str(2**63),
    "2^63-1": str(2**63 - 1),
    "below-i64": str(-(2**63) - 1),
    "i64-min": str(-(2**63)),
    "40-digits": "9" * 40,
    "ms*1e6-overflows": str(2**63 // 10**6 + 1),
    "now-with-leading-zeros-and-huge": "0" * 30 + "9" * 25,
    "minus-one": "-1",
    "minus-zero": "-0",
    "negative-now": None,
    "fraction": None,
    "fraction-zero": None,
    "exponent": "1.7e12",
    "plus-now": None,
    "hex": "0x1a2b3c",
    "quoted-negative": None,
}


def time_value(name):
    v = TIMES[name]
    if v is not None:
        return v
    n = now_ms()
    return {"negative-now": f"-{n}", "fraction": f"{n}.5", "fraction-zero": f"{n}.0",
            "plus-now": f"+{n}", "quoted-negative": f"'-{n}'"}[name]


@pytest.mark.parametrize("name", sorted(TIMES))
def test_hostile_times(servers, agent, name):
    with_mod, _ = servers
    before = counters(with_mod)["gateway_headers_rejected"]
    status, _, srv = run_case(servers, agent, "/api/time",
                              gw_headers(time_ms=time_value(name)), expect="none")
    assert status == 200 and srv["parent_id"] == 0
    after = counters(with_mod)["gateway_headers_rejected"]
    changed = {k: after[k] - before[k] for k in after if after[k] != before[k]}
    assert sum(changed.values()) == 1 and set(changed) <= {"bad_time", "time_too_old",
                                                           "time_in_future"}, changed


# --- proxy values --------------------------------------------------------------------------

@pytest.mark.parametrize("value,name", [
    ("aws-apigateway   ", "aws.apigateway"),
    ("aws-apigateway\t", "aws.apigateway"),
    ("AWS-APIGateway", "aws.apigateway"),
    ("'AWS-APIGATEWAY'", "aws.apigateway"),
    ("Aws-HttpApi", "aws.httpapi"),
    ("AZURE-apim", "azure.apim"),
    ("Azure-GW", "azure.app-gateway"),
    ("'azure-fd' ", "azure.frontdoor"),
    ("azure-frontdoor", None),
    ("aws-apigateway x", None),
    ("aws-api gateway", None),
], ids=["trailing-spaces", "trailing-tab", "mixed-case", "quoted-upper", "httpapi-mixed",
        "apim-mixed", "gw-mixed", "fd-quoted", "fd-long-name", "suffix-word", "inner-space"])
def test_proxy_value_spelling(servers, agent, value, name):
    _, inf, _ = run_case(servers, agent, "/api/proxy", gw_headers(value),
                         expect="span" if name else "none")
    if name:
        assert inf["name"] == name, dump(inf)


# --- paths ---------------------------------------------------------------------------------

PATHS = [
    b"/api/%2e%2e/%2e%2e/etc/passwd",
    b"/../../etc/passwd",
    b"/index.html/../index.html",
    b"/api/a/../b",
    b"/%2e%2e/%2e%2e/",
    b"/api/%00x",
    b"/api/%zz",
    b"/api/%ff%fe%fd",
    b"/api/a%2fb",
    b"/api/" + b"%41" * 3000,
    b"/api/a;b=%2e%2e?x=%ff&y=../..#frag",
    b"//api//double//",
    b"/index.html%",
]


@pytest.mark.parametrize("path", PATHS, ids=[p[:30].decode() for p in PATHS])
def test_hostile_paths(servers, agent, path):
    hdrs = gw_headers(**{"x-dd-proxy-path": "/../%2e%2e/" + "x/.." * 50,
                         "x-dd-proxy-resource-path": "/{proxy+}/../%2e%2e"})
    _, inf, srv = run_case(servers, agent, path, hdrs, expect="any", traced=False)
    if srv is not None:
        assert "?" not in srv["resource"] and "?" not in srv["meta"]["http.url"], dump(srv)


# --- service explosion ---------------------------------------------------------------------

def test_a_thousand_domain_names(servers, agent):
    """1,000 domains = 1,000 services: every gateway span arrives, httpd stays healthy."""
    with_mod, _ = servers
    run = uuid.uuid4().hex[:10]
    domains = [f"svc{i}-{run}.example.com" for i in range(1000)]
    before = counters(with_mod)
    statuses = []
    lock = threading.Lock()

    def worker(part):
        s = requests.Session()
        for d in part:
            hdrs = dict(gw_headers(**{"x-dd-proxy-domain-name": d}), **{"User-Agent": run})
            code = s.get(with_mod.url("/index.html"), headers=hdrs, timeout=10).status_code
            with lock:
                statuses.append(code)
        s.close()

    threads = [threading.Thread(target=worker, args=(domains[i::8],)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert statuses == [200] * 1000

    wanted = set(domains)

    def services(a):
        return [s["service"] for s in a.spans() if s.get("service") in wanted]

    agent.wait_for(lambda a: len(set(services(a))) == 1000, timeout=15)
    time.sleep(0.3)
    got = services(agent)
    assert len(got) == 1000 and set(got) == wanted, \
        f"{len(wanted - set(got))} missing, {len(got) - len(set(got))} duplicated"
    for c in agent.chunks_where(lambda s: s.get("service") in wanted):
        inf = check_chunk(c)
        assert inf is not None and inf["name"] == "aws.apigateway"
        assert inf["meta"]["http.url"].startswith(f"https://{inf['service']}/")
    after = counters(with_mod)
    assert after["inferred_spans"] - before["inferred_spans"] == 1000, dump(after)
    assert after["chunks_dropped"] == before["chunks_dropped"], dump(after)
    assert after["agent_errors"] == before["agent_errors"], dump(after)
    # still healthy: a plain request is served and traced
    r = with_mod.get("/index.html", headers={"User-Agent": run + "-after"})
    assert r.status_code == 200
    assert agent.wait_for_chunks_with_meta("http.useragent", run + "-after")


# --- trusted networks ----------------------------------------------------------------------

def test_untrusted_peer_no_span_counted_and_stripped(servers, agent, backend):
    with_mod, _ = servers
    before = counters(with_mod)["gateway_headers_rejected"]["untrusted_peer"]
    m = marker()
    hdrs = [("User-Agent", m)] + gw_headers()
    status, body = exchange(servers, "GET", "/api/untrusted", hdrs, port_index=1)
    assert status == 200 and body == b"backend ok\n"
    chunk = marker_chunk(agent, m)
    assert check_chunk(chunk) is None, "a gateway span for an untrusted peer"
    srv = chunk[0]
    assert srv["parent_id"] == 0 and "http.route" not in srv["meta"], dump(srv)
    assert counters(with_mod)["gateway_headers_rejected"]["untrusted_peer"] == before + 1
    # the headers are stripped anyway (DDInferredProxy is On): the backend never sees them
    seen = backend.by_header("User-Agent", m)
    assert seen is not None
    # (the request to the module-less httpd reached the backend too, with the headers)
    with_mod_req = [r for r in backend.find(lambda r: r.header("User-Agent") == m)
                    if r.header("x-datadog-trace-id") or r.header("traceparent")]
    assert with_mod_req and not with_mod_req[0].headers_starting("x-dd-proxy"), \
        with_mod_req[0].header_items if with_mod_req else "no traced request at the backend"


def test_trusted_peer_makes_the_span(servers, agent):
    with_mod, _ = servers
    before = counters(with_mod)
    m = marker()
    exchange(servers, "GET", "/api/trusted", [("User-Agent", m)] + gw_headers(), port_index=2)
    inf = check_chunk(marker_chunk(agent, m))
    assert inf is not None and inf["name"] == "aws.apigateway"
    after = counters(with_mod)
    assert after["inferred_spans"] == before["inferred_spans"] + 1
    assert after["gateway_headers_rejected"] == before["gateway_headers_rejected"]


def test_forwarded_for_does_not_make_a_peer_trusted(servers, agent):
    """Only the TCP peer counts: X-Forwarded-For / Forwarded naming a trusted address do not."""
    m = marker()
    hdrs = [("User-Agent", m), ("X-Forwarded-For", "10.1.2.3"), ("Forwarded", "for=10.1.2.3"),
            ("X-Real-IP", "10.1.2.3")] + gw_headers()
    exchange(servers, "GET", "/api/xff", hdrs, port_index=1)
    assert check_chunk(marker_chunk(agent, m)) is None


def test_status_page_after_all_that(servers):
    with_mod, _ = servers
    c = counters(with_mod)
    assert c["requests_traced"] > 0
    assert requests.get(with_mod.url(STATUS_PATH), timeout=5).headers["Content-Type"] \
        .startswith("application/json")
