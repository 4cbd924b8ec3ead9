# SPDX-License-Identifier: Apache-2.0
"""xray_daemon.py - a fake AWS X-Ray daemon for the integration tests (issue 17).

UDP (127.0.0.1, random port): every datagram is checked as the daemon and X-Ray check it, plus
every field rule of X-Ray's segment document reference (shared/reference/xray.md section 2):
the daemon header line, a JSON object body, required fields and their formats, value types and
lengths, the http block, error/throttle/fault against the status, annotations' keys and value
types, metadata namespaces, subsegments (embedded and sent on their own). Each datagram is kept
in `documents` (decoded), every violated rule in `failures` (tests assert it stays empty).

TCP (random port): X-Ray's sampling API as the daemon proxies it, POST /GetSamplingRules and
POST /SamplingTargets, answering with `rules` (a list of SamplingRule dicts, see rule()) and
`targets` (a list of SamplingTargetDocument dicts, or a function of the request's statistics
documents), recording every call in `api_calls`. Modes (`set_mode`):
  "ok"       answer as configured
  "garbage"  200 with a body that is not JSON
  "status"   answer `status_code` (500 ...)
  "stall"    sleep `stall_seconds`, then answer as "ok"
  "refuse"   close the TCP listener (connections are refused); another mode reopens it

`address` is the DDXRayDaemonAddress for both ("tcp:127.0.0.1:T udp:127.0.0.1:U").
"""

import json
import re
import socket
import threading
import time
import unicodedata
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from helpers import EVENT_ONLY, NOT_MPM, PLAIN_MPMS, ci_pass, only_on  # noqa: F401 (the CI pass markers)

MAX_DATAGRAM = 65536  # the daemon's and the OpenTelemetry receiver's read buffer
ID_RE = re.compile(r"^[0-9a-f]{16}$")
TRACE_RE = re.compile(r"^1-[0-9a-f]{8}-[0-9a-f]{24}$")
ANNOTATION_KEY_RE = re.compile(r"^[a-zA-Z0-9_]{1,500}$")
NAME_SYMBOLS = set("_.:/%&#=+-@")
ORIGINS = {"AWS::EC2::Instance", "AWS::ECS::Container", "AWS::ElasticBeanstalk::Environment",
           "AWS::ECS::EC2", "AWS::ECS::Fargate", "AWS::EKS::Container",
           "AWS::AppRunner::Service"}
SEGMENT_KEYS = {"name", "id", "trace_id", "start_time", "end_time", "in_progress", "parent_id",
                "service", "user", "origin", "http", "aws", "error", "throttle", "fault",
                "cause", "annotations", "metadata", "subsegments"}
SUBSEGMENT_KEYS = {"id", "name", "start_time", "end_time", "in_progress", "trace_id", "parent_id",
                   "type", "namespace", "traced", "http", "aws", "error", "throttle", "fault",
                   "cause", "annotations", "metadata", "subsegments", "precursor_ids", "sql"}
REQUEST_KEYS = {"method", "url", "user_agent", "client_ip", "x_forwarded_for", "traced"}
RESPONSE_KEYS = {"status", "content_length"}


def _reject_constant(c):
    raise ValueError(f"JSON constant {c} is not JSON")


def strict_json(text):
    return json.loads(text, parse_constant=_reject_constant)


def is_num(v):
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def name_ok(name):
    """X-Ray's name rule: letters, numbers, space separators and _ . : / % & # = + - @."""
    for ch in name:
        cat = unicodedata.category(ch)
        if not (cat[0] in "LN" or cat[0] == "Z" or ch in NAME_SYMBOLS):
            return False
    return True


def check_strings(v, where, errs, limit=250):
    """Every string value at most `limit` characters (X-Ray: 250 unless noted otherwise)."""
    if isinstance(v, str):
        if len(v) > limit:
            errs.append(f"{where}: a string of {len(v)} characters (max {limit})")
    elif isinstance(v, dict):
        for k, x in v.items():
            check_strings(x, f"{where}.{k}", errs, limit)
    elif isinstance(v, list):
        for i, x in enumerate(v):
            check_strings(x, f"{where}[{i}]", errs, limit)


def check_http(http, where, errs, sub):
    if not isinstance(http, dict):
        return errs.append(f"{where}.http is not an object")
    for k in http:
        if k not in ("request", "response"):
            errs.append(f"{where}.http.{k}: unknown")
    req = http.get("request", {})
    if not isinstance(req, dict):
        errs.append(f"{where}.http.request is not an object")
        req = {}
    for k, v in req.items():
        if k not in REQUEST_KEYS:
            errs.append(f"{where}.http.request.{k}: unknown")
        elif k in ("x_forwarded_for", "traced"):
            if v is not True and v is not False:
                errs.append(f"{where}.http.request.{k}={v!r} is not a boolean")
        elif not isinstance(v, str):
            errs.append(f"{where}.http.request.{k}={v!r} is not a string")
    if "x_forwarded_for" in req and sub:
        errs.append(f"{where}: x_forwarded_for is for segments only")
    if "traced" in req and not sub:
        errs.append(f"{where}: traced is for subsegments only")
    resp = http.get("response", {})
    if not isinstance(resp, dict):
        errs.append(f"{where}.http.response is not an object")
        resp = {}
    for k, v in resp.items():
        if k not in RESPONSE_KEYS:
            errs.append(f"{where}.http.response.{k}: unknown")
        elif not isinstance(v, int) or isinstance(v, bool) or v < 0:
            errs.append(f"{where}.http.response.{k}={v!r} is not a non-negative integer")
    return resp.get("status")


def check_common(d, where, errs, sub, now):
    keys = SUBSEGMENT_KEYS if sub else SEGMENT_KEYS
    for k in d:
        if k not in keys:
            errs.append(f"{where}: unknown field {k!r}")
    for f in ("name", "id", "start_time"):
        if f not in d:
            errs.append(f"{where}: lacks {f}")
    if ("end_time" in d) == ("in_progress" in d):
        errs.append(f"{where}: needs exactly one of end_time and in_progress")
    name = d.get("name")
    if not isinstance(name, str) or not 1 <= len(name) <= 200 or not name_ok(name):
        errs.append(f"{where}: name {name!r} breaks X-Ray's name rule")
    if not isinstance(d.get("id"), str) or not ID_RE.match(d.get("id", "")):
        errs.append(f"{where}: id {d.get('id')!r} is not 16 lowercase hex")
    if "parent_id" in d and (not isinstance(d["parent_id"], str) or
                             not ID_RE.match(d["parent_id"])):
        errs.append(f"{where}: parent_id {d['parent_id']!r} is not 16 lowercase hex")
    st, et = d.get("start_time"), d.get("end_time")
    if not is_num(st):
        errs.append(f"{where}: start_time {st!r} is not a number")
    elif abs(st - now) > 86400:
        errs.append(f"{where}: start_time {st} is not epoch seconds of today")
    if "end_time" in d and (not is_num(et) or (is_num(st) and et < st)):
        errs.append(f"{where}: end_time {et!r} is not a number at or after start_time")
    if "in_progress" in d and d["in_progress"] is not True:
        errs.append(f"{where}: in_progress must be true")
    for f in ("error", "throttle", "fault"):
        if f in d and d[f] is not True and d[f] is not False:
            errs.append(f"{where}: {f}={d[f]!r} is not a boolean")
    status = None
    if "http" in d:
        status = check_http(d["http"], where, errs, sub)
    if isinstance(status, int):
        want = {"error": 400 <= status <= 499, "throttle": status == 429,
                "fault": 500 <= status <= 599}
        for f, w in want.items():
            if w and d.get(f) is not True:
                errs.append(f"{where}: status {status} but no {f}")
            if not w and d.get(f) is True and not (f == "fault" and sub):
                errs.append(f"{where}: {f} with status {status}")
    if "annotations" in d:
        ann = d["annotations"]
        if not isinstance(ann, dict):
            errs.append(f"{where}: annotations is not an object")
        else:
            if len(ann) > 50:
                errs.append(f"{where}: more than 50 annotations")
            for k, v in ann.items():
                if not ANNOTATION_KEY_RE.match(k):
                    errs.append(f"{where}: annotation key {k!r} is not [a-zA-Z0-9_]")
                if not (isinstance(v, (str, bool)) or is_num(v)):
                    errs.append(f"{where}: annotation {k}={v!r} is not a string/number/boolean")
                if isinstance(v, str) and len(v) > 1000:
                    errs.append(f"{where}: annotation {k} longer than 1000")
                if is_num(v) and not isinstance(v, bool) and abs(v) > 2**53:
                    errs.append(f"{where}: annotation {k}={v} is not exact as a JSON number")
    if "metadata" in d:
        md = d["metadata"]
        if not isinstance(md, dict) or not all(isinstance(v, dict) for v in md.values()):
            errs.append(f"{where}: metadata must map namespaces to objects")
        elif any(k.startswith("AWS.") for k in md):
            errs.append(f"{where}: metadata namespace AWS.* is reserved")
    if "aws" in d and not isinstance(d["aws"], dict):
        errs.append(f"{where}: aws is not an object")
    if "service" in d and (not isinstance(d["service"], dict) or
                           not isinstance(d["service"].get("version", ""), str)):
        errs.append(f"{where}: service is not an object with a string version")
    for k, v in d.items():
        if k not in ("annotations", "metadata", "subsegments"):
            check_strings(v, f"{where}.{k}", errs)
    if "subsegments" in d:
        subs = d["subsegments"]
        if not isinstance(subs, list) or not subs:
            errs.append(f"{where}: subsegments is not a non-empty list")
        else:
            for i, s in enumerate(subs):
                if not isinstance(s, dict):
                    errs.append(f"{where}.subsegments[{i}] is not an object")
                    continue
                for f in ("trace_id", "parent_id", "type"):
                    if f in s:
                        errs.append(f"{where}.subsegments[{i}]: {f} only when sent alone")
                check_sub(s, f"{where}.subsegments[{i}]", errs, now)


def check_sub(s, where, errs, now):
    check_common(s, where, errs, True, now)
    if "namespace" in s and s["namespace"] not in ("aws", "remote"):
        errs.append(f"{where}: namespace {s['namespace']!r} is not aws or remote")
    if "traced" in s and s["traced"] is not True and s["traced"] is not False:
        errs.append(f"{where}: traced is not a boolean")


def check_document(raw, now=None):
    """(decoded document or None, problems) for one datagram, as the daemon and X-Ray see it."""
    now = now or time.time()
    errs = []
    if len(raw) > MAX_DATAGRAM:
        errs.append(f"datagram of {len(raw)} bytes, over the daemon's {MAX_DATAGRAM}")
    nl = raw.find(b"\n")
    if nl < 0:
        return None, errs + ["no daemon header line (Missing header or segment)"]
    try:
        header = strict_json(raw[:nl].decode("utf-8"))
        if not (isinstance(header, dict) and str(header.get("format", "")).lower() == "json"
                and header.get("version") == 1 and not isinstance(header.get("version"), bool)):
            errs.append(f"invalid daemon header {raw[:nl]!r}")
    except (ValueError, UnicodeDecodeError) as e:
        errs.append(f"daemon header is not JSON: {e}")
    body = raw[nl + 1:]
    if not body:
        return None, errs + ["empty body (Missing header or segment)"]
    try:
        doc = strict_json(body.decode("utf-8"))
    except (ValueError, UnicodeDecodeError) as e:
        return None, errs + [f"the document is not JSON: {e}"]
    if not isinstance(doc, dict):
        return None, errs + ["the document is not an object"]
    if doc.get("type") == "subsegment":
        where = f"subsegment {doc.get('id')}"
        for f in ("trace_id", "parent_id"):
            if f not in doc:
                errs.append(f"{where}: a subsegment sent alone lacks {f}")
        check_sub(doc, where, errs, now)
    else:
        where = f"segment {doc.get('id')}"
        if "type" in doc:
            errs.append(f"{where}: type {doc['type']!r} on a segment")
        if "trace_id" not in doc:
            errs.append(f"{where}: lacks trace_id")
        check_common(doc, where, errs, False, now)
    if "trace_id" in doc and (not isinstance(doc["trace_id"], str) or
                              not TRACE_RE.match(doc["trace_id"])):
        errs.append(f"trace_id {doc.get('trace_id')!r} is not 1-<8 hex>-<24 hex>")
    return doc, errs


def trace_id_age(trace_id):
    """Seconds since the time in a trace id (X-Ray rejects ids older than 30 days)."""
    return time.time() - int(trace_id.split("-")[1], 16)


def rule(name, priority=1, rate=0.0, reservoir=0, service="*", service_type="*", host="*",
         method="*", path="*", version=1, arn="*", attributes=None):
    """A SamplingRuleRecord as GetSamplingRules returns it."""
    return {"SamplingRule": {
        "RuleName": name, "RuleARN": f"arn:aws:xray:us-east-1:123456789012:sampling-rule/{name}",
        "ResourceARN": arn, "Priority": priority, "FixedRate": rate, "ReservoirSize": reservoir,
        "ServiceName": service, "ServiceType": service_type, "Host": host, "HTTPMethod": method,
        "URLPath": path, "Version": version, "Attributes": attributes or {}},
        "CreatedAt": 1.7e9, "ModifiedAt": 1.7e9}


class _Api(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args):
        pass

    def do_POST(self):
        d = self.server.daemon
        n = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(n) if n else b""
        try:
            body = strict_json(raw.decode()) if raw else None
        except ValueError:
            body = raw
        with d._lock:
            d.api_calls.append((self.path, body, dict(self.headers), time.time()))
            d._lock.notify_all()
            mode = d.mode
        if mode == "stall":
            time.sleep(d.stall_seconds)
        if mode == "garbage":
            return self._send(200, b"<html>not json", "text/html")
        if mode == "status":
            return self._send(d.status_code, b'{"message": "error"}')
        if self.path == "/GetSamplingRules":
            out = {"SamplingRuleRecords": d.rules}
        elif self.path == "/SamplingTargets":
            docs = (body or {}).get("SamplingStatisticsDocuments", []) \
                if isinstance(body, dict) else []
            targets = d.targets(docs) if callable(d.targets) else d.targets
            out = {"SamplingTargetDocuments": targets,
                   "LastRuleModification": d.last_rule_modification,
                   "UnprocessedStatistics": d.unprocessed}
        else:
            return self._send(404, b'{"message": "no such API"}')
        self._send(200, json.dumps(out).encode())

    def _send(self, status, body, ctype="application/json"):
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


class _ApiServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True


class XRayDaemon:
    def __init__(self):
        self._lock = threading.Condition()
        self.documents = []  # (time, decoded document or None, raw bytes)
        self.failures = []
        self.api_calls = []
        self.rules = []
        self.targets = []
        self.last_rule_modification = 1.7e9
        self.unprocessed = []
        self.mode = "ok"
        self.status_code = 500
        self.stall_seconds = 3.0
        self._udp = None
        self._api = None
        self.udp_port = self.tcp_port = None

    # --- life cycle --------------------------------------------------------------------------
    def start(self):
        self._udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._udp.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 * 1024 * 1024)
        self._udp.bind(("127.0.0.1", 0))
        self._udp.settimeout(0.1)
        self.udp_port = self._udp.getsockname()[1]
        self._running = True
        self._udp_thread = threading.Thread(target=self._recv_loop, daemon=True)
        self._udp_thread.start()
        self._listen()
        return self

    def _listen(self, port=0):
        self._api = _ApiServer(("127.0.0.1", port or self.tcp_port or 0), _Api)
        self._api.daemon = self
        self.tcp_port = self._api.server_address[1]
        self._api_thread = threading.Thread(target=self._api.serve_forever,
                                            kwargs={"poll_interval": 0.05}, daemon=True)
        self._api_thread.start()

    def _close_api(self):
        if self._api is not None:
            self._api.shutdown()
            self._api.server_close()
            self._api = None

    def stop(self):
        self._running = False
        self._close_api()
        if self._udp is not None:
            self._udp_thread.join(2)
            self._udp.close()
            self._udp = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    @property
    def address(self):
        return f"tcp:127.0.0.1:{self.tcp_port} udp:127.0.0.1:{self.udp_port}"

    def set_mode(self, mode, **kw):
        for k, v in kw.items():
            setattr(self, k, v)
        if mode == "refuse":
            self._close_api()
        elif self._api is None:
            self._listen(self.tcp_port)
        self.mode = mode

    # --- UDP ---------------------------------------------------------------------------------
    def _recv_loop(self):
        while self._running:
            try:
                raw = self._udp.recv(MAX_DATAGRAM + 1024)
            except socket.timeout:
                continue
            except OSError:
                return
            doc, errs = check_document(raw)
            with self._lock:
                self.documents.append((time.time(), doc, raw))
                self.failures.extend(errs)
                self._lock.notify_all()

    # --- lookups -----------------------------------------------------------------------------
    def docs(self):
        with self._lock:
            return [d for _, d, _ in self.documents if d is not None]

    def segments(self, pred=lambda d: True):
        return [d for d in self.docs() if d.get("type") != "subsegment" and pred(d)]

    def wait_for(self, fn, timeout=5.0):
        """Waits until fn(self) is truthy; returns its last value."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while True:
                self._lock.release()
                try:
                    v = fn(self)
                finally:
                    self._lock.acquire()
                left = deadline - time.monotonic()
                if v or left <= 0:
                    return v
                self._lock.wait(min(left, 0.05))

    def segment_for(self, ua, timeout=5.0, settle=0.3):
        """The one segment whose http.request.user_agent is ua (asserts exactly one)."""
        def find(d):
            return d.segments(lambda s: s.get("http", {}).get("request", {})
                              .get("user_agent") == ua)
        found = self.wait_for(find, timeout)
        assert found, f"no segment for {ua} within {timeout}s; {len(self.docs())} documents"
        time.sleep(settle)
        found = find(self)
        assert len(found) == 1, f"{len(found)} segments for one request: {found}"
        return found[0]

    def calls(self, path):
        with self._lock:
            return [c for c in self.api_calls if c[0] == path]

    def clear(self):
        with self._lock:
            self.documents.clear()
            self.api_calls.clear()
