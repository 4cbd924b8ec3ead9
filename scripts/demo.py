#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""demo.py - mod_dd_proxy on a real apache2, end to end, in one command.

Starts a capture agent (a fake Datadog agent that decodes the msgpack payloads), a small
backend that reports its own span to the agent using the trace context httpd forwards, and
Debian's apache2 with the freshly built module and mod_proxy in front of the backend. Then it
sends the requests API Gateway (REST v1 and HTTP v2) and Azure API Management would send, and
prints each trace as a tree: gateway -> httpd -> backend, with durations.
"""
import os
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import msgpack
import requests

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "integration"))
from capture_agent import CaptureAgent  # noqa: E402
from httpd import Httpd  # noqa: E402


class TracedBackend(ThreadingHTTPServer):
    """A backend that continues the trace: it reads x-datadog-trace-id / x-datadog-parent-id
    (what httpd injects) and reports a span named backend.request as their child."""

    def __init__(self, agent_url):
        super().__init__(("127.0.0.1", 0), _BackendHandler)
        self.agent_url = agent_url
        threading.Thread(target=self.serve_forever, daemon=True).start()


class _BackendHandler(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def do_GET(self):
        start = time.time_ns()
        time.sleep(0.003)  # pretend to work
        body = b"hello from the backend\n"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
        trace_id = self.headers.get("x-datadog-trace-id")
        parent_id = self.headers.get("x-datadog-parent-id")
        if not trace_id or not parent_id:
            return  # httpd forwarded no context: nothing to continue
        span = {"trace_id": int(trace_id), "span_id": int.from_bytes(os.urandom(7), "big"),
                "parent_id": int(parent_id), "name": "backend.request", "service": "backend",
                "resource": "GET " + self.path, "type": "web", "start": start,
                "duration": time.time_ns() - start, "error": 0,
                "meta": {"span.kind": "server"}, "metrics": {}}
        requests.put(self.server.agent_url + "/v0.4/traces", data=msgpack.packb([[span]]),
                     headers={"Content-Type": "application/msgpack",
                              "X-Datadog-Trace-Count": "1",
                              "Datadog-Meta-Tracer-Version": "demo"}, timeout=2)


def print_tree(spans):
    by_parent = {}
    ids = {s["span_id"] for s in spans}
    for s in spans:
        by_parent.setdefault(s["parent_id"] if s["parent_id"] in ids else None, []).append(s)

    def show(span, depth):
        ms = span["duration"] / 1e6
        extra = ""
        if span["name"] != "backend.request":
            extra = f"  status={span['meta'].get('http.status_code', '?')}"
        print(f"  {'    ' * depth}{'└─ ' if depth else ''}{span['name']}  "
              f"service={span['service']}  resource={span['resource']!r}  {ms:.2f} ms{extra}")
        for child in sorted(by_parent.get(span["span_id"], []), key=lambda s: s["start"]):
            show(child, depth + 1)

    for root in by_parent.get(None, []):
        show(root, 0)


def main():
    agent = CaptureAgent().start()
    backend = TracedBackend(agent.url)
    httpd = Httpd("demo")
    httpd.write_config(f"""
DDAgentURL {agent.url}
DDFlushInterval 200
DDService demo-httpd
DDEnv demo
DDInferredProxy On
ProxyPass /api/ http://127.0.0.1:{backend.server_address[1]}/
""")
    httpd.start()
    time.sleep(0.5)
    agent.clear()  # forget the harness's readiness probe
    now_ms = int(time.time() * 1000)
    samples = [
        ("API Gateway REST (v1)", "/api/orders/42", {
            "x-dd-proxy": "'aws-apigateway'", "x-dd-proxy-request-time-ms": str(now_ms - 12),
            "x-dd-proxy-domain-name": "abc123.execute-api.eu-west-3.amazonaws.com",
            "x-dd-proxy-httpmethod": "GET", "x-dd-proxy-path": "/prod/orders/42",
            "x-dd-proxy-resource-path": "/orders/{id}", "x-dd-proxy-stage": "prod",
            "x-dd-proxy-region": "eu-west-3", "x-dd-proxy-api-id": "abc123",
            "x-dd-proxy-account-id": "123456789012"}),
        ("API Gateway HTTP API (v2)", "/api/users", {
            "x-dd-proxy": "aws-httpapi",
            "x-dd-proxy-request-time-ms": str(now_ms // 1000 * 1000),
            "x-dd-proxy-domain-name": "xyz789.execute-api.us-east-1.amazonaws.com",
            "x-dd-proxy-httpmethod": "GET", "x-dd-proxy-path": "/users",
            "x-dd-proxy-stage": "$default", "x-dd-proxy-region": "us-east-1",
            "x-dd-proxy-api-id": "xyz789"}),
        ("Azure API Management", "/api/catalog", {
            "x-dd-proxy": "azure-apim", "x-dd-proxy-request-time-ms": str(now_ms - 7),
            "x-dd-proxy-domain-name": "shop.azure-api.net", "x-dd-proxy-httpmethod": "GET",
            "x-dd-proxy-path": "/catalog", "x-dd-proxy-region": "West Europe"}),
        ("no gateway", "/index.html", {}),
    ]
    try:
        for title, path, headers in samples:
            r = httpd.get(path, headers=headers)
            print(f"{title:28s} GET {path} -> {r.status_code}")
        agent.wait_for_traces(len(samples), timeout=10)
        time.sleep(0.5)  # let the backends' own spans arrive too
        chunks = {}
        for payload in agent.payloads:
            for chunk in payload.chunks:
                for span in chunk:
                    chunks.setdefault(span["trace_id"], []).append(span)
        print(f"\nThe agent received {len(chunks)} traces:\n")
        for trace_id, spans in chunks.items():
            print(f"trace {trace_id}")
            print_tree(spans)
            print()
        problems = [p for payload in agent.payloads for p in payload.problems]
        print("payload checks:", "all passed" if not problems else problems)
        return 1 if problems or len(chunks) < len(samples) else 0
    finally:
        httpd.stop()
        httpd.cleanup()
        backend.shutdown()
        agent.stop()


if __name__ == "__main__":
    sys.exit(main())
