# SPDX-License-Identifier: Apache-2.0
"""test_400_correlation.py - CONTRACT section 3.3: what a request leaves behind. The access log's
%{dd.trace_id}n / %{dd.span_id}n (and DD_TRACE_ID / DD_SPAN_ID in the subprocess environment)
name the trace and server span the agent received; the backend gets the context with the server
span as parent."""

import os
import re

import pytest

from helpers import SERVER_SPAN, by_name, dump, gateway_headers, one_chunk, unique_ua
from httpd import vhost

GW = 1


@pytest.fixture(scope="module")
def h(httpd_factory, agent, backend):
    def config(h):
        env_log = os.path.join(h.logs_dir, "env_log")
        return f"""
DDAgentURL {agent.url}
DDFlushInterval 100
ProxyPass /api/ {backend.url}/
CustomLog "{env_log}" "%{{User-Agent}}i %{{DD_TRACE_ID}}e %{{DD_SPAN_ID}}e"
""" + vhost(h.ports[GW], "    DDInferredProxy On")
    return httpd_factory("correlation", config=config, ports=2)


def log_ids(h, ua, log=None):
    """(dd.trace_id, dd.span_id) from the access log line of the request made with ua."""
    if log is None:
        lines = h.access_log_line_for(f'"{ua}"')
    else:
        path = os.path.join(h.logs_dir, log)
        lines = [ln for ln in open(path).read().splitlines() if ln.startswith(ua + " ")]
    assert len(lines) == 1, f"access log lines for {ua}: {lines}"
    fields = lines[0].split()
    return fields[-2], fields[-1]


def full_trace_id(chunk):
    """32 lowercase hex: _dd.p.tid of the chunk root + the 64-bit trace_id."""
    roots = [s for s in chunk if s["parent_id"] == 0 or
             s["parent_id"] not in {x["span_id"] for x in chunk}]
    assert len(roots) == 1, dump(chunk)
    tid = roots[0]["meta"].get("_dd.p.tid")
    assert tid and re.fullmatch(r"[0-9a-f]{16}", tid), dump(roots[0])
    return tid + f"{chunk[0]['trace_id']:016x}"


def request(h, agent, path, port=None, headers=None, status=200):
    ua = unique_ua("corr")
    r = h.get(path, port=port, headers=dict(headers or {}, **{"User-Agent": ua}))
    assert r.status_code == status
    return ua, one_chunk(agent, ua, settle=0.1)


@pytest.mark.parametrize("path,status", [("/index.html", 200), ("/no-such-file", 404),
                                         ("/api/status/500", 500)])
def test_log_names_the_trace_and_server_span(h, agent, path, status):
    ua, chunk = request(h, agent, path, status=status)
    trace_id, span_id = log_ids(h, ua)
    assert re.fullmatch(r"[0-9a-f]{32}", trace_id), trace_id
    assert trace_id == full_trace_id(chunk), dump(chunk)
    assert span_id == str(by_name(chunk, SERVER_SPAN)["span_id"]), dump(chunk)


def test_gateway_request_logs_server_span_not_inferred(h, agent):
    gw = gateway_headers("aws-apigateway", method="GET", path="/api/corr", domain="c.example")
    ua, chunk = request(h, agent, "/api/corr", port=h.ports[GW], headers=gw)
    inf = by_name(chunk, "aws.apigateway")
    srv = by_name(chunk, SERVER_SPAN)
    trace_id, span_id = log_ids(h, ua)
    assert trace_id == inf["meta"]["_dd.p.tid"] + f"{inf['trace_id']:016x}", dump(chunk)
    assert span_id == str(srv["span_id"]) and span_id != str(inf["span_id"])


def test_subprocess_env_matches_notes(h, agent):
    ua, chunk = request(h, agent, "/index.html")
    assert log_ids(h, ua, "env_log") == log_ids(h, ua)


def test_inbound_64_bit_trace_is_logged_in_decimal(h, agent):
    ctx = {"x-datadog-trace-id": "12345", "x-datadog-parent-id": "67890",
           "x-datadog-sampling-priority": "1"}
    ua, chunk = request(h, agent, "/index.html", headers=ctx)
    srv = by_name(chunk, SERVER_SPAN)
    assert (srv["trace_id"], srv["parent_id"]) == (12345, 67890), dump(chunk)
    assert "_dd.p.tid" not in srv["meta"], dump(srv)
    trace_id, span_id = log_ids(h, ua)
    assert trace_id == "12345"
    assert span_id == str(srv["span_id"])


@pytest.mark.parametrize("ctx", [
    {"x-datadog-trace-id": "42", "x-datadog-parent-id": "187",
     "x-datadog-sampling-priority": "1", "x-datadog-tags": "_dd.p.tid=640cfd8d00000000"},
    {"traceparent": "00-640cfd8d00000000000000000000002a-00000000000000bb-01"},
], ids=["datadog", "tracecontext"])
def test_inbound_128_bit_trace_continues(h, agent, ctx):
    ua, chunk = request(h, agent, "/index.html", headers=ctx)
    srv = by_name(chunk, SERVER_SPAN)
    assert (srv["trace_id"], srv["parent_id"]) == (42, 187), dump(chunk)
    assert srv["meta"].get("_dd.p.tid") == "640cfd8d00000000", dump(srv)
    assert log_ids(h, ua) == ("640cfd8d00000000000000000000002a", str(srv["span_id"]))


def test_backend_gets_context_with_server_span_as_parent(h, agent, backend):
    ua, chunk = request(h, agent, "/api/downstream")
    srv = by_name(chunk, SERVER_SPAN)
    req = backend.by_header("User-Agent", ua)
    assert req.header("x-datadog-trace-id") == str(srv["trace_id"]), req.header_items
    assert req.header("x-datadog-parent-id") == str(srv["span_id"]), req.header_items
    tp = req.header("traceparent")
    full = full_trace_id(chunk)
    assert tp and re.fullmatch(rf"00-{full}-{srv['span_id']:016x}-0[01]", tp), \
        (tp, full, req.header_items)
