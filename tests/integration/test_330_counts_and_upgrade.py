# SPDX-License-Identifier: Apache-2.0
"""test_330_counts_and_upgrade.py - what is counted is what is made, and an HTTP/1.1 request
upgraded to HTTP/2 (Upgrade: h2c) is traced once (issue 18 item 7).

- inferred_spans counts gateway spans sent, not gateway requests seen: none for a request in a
  DDTrace Off location;
- with `Protocols h2c http/1.1`, `curl --http2` sends its first request as HTTP/1.1 with
  Upgrade: h2c; httpd answers 101 and serves that same request again as HTTP/2 stream 1. One
  trace: the gateway span and one server span with the real status, the backend's parent."""

import shutil
import subprocess

import pytest

from helpers import (GATEWAY_NAMES, SERVER_SPAN, by_name, counters, dump, gateway_headers,
                     one_chunk, status_location, unique_ua)
from httpd import default_mpm

# mod_http2 says it cannot work under prefork, once, at startup.
ALLOW_LOG = [r"AH10034"]


@pytest.fixture(scope="module")
def h(httpd_factory, agent, backend):
    def config(h):
        return f"""
LoadModule http2_module /usr/lib/apache2/modules/mod_http2.so
Protocols h2c http/1.1
DDAgentURL {agent.url}
DDFlushInterval 100
DDInferredProxy On
ProxyPass /api/ {backend.url}/
ProxyPass /off/ {backend.url}/off/
<Location /off/>
    DDTrace Off
</Location>
{status_location()}
"""
    return httpd_factory("counts-upgrade", config=config)


def test_no_inferred_span_counted_where_tracing_is_off(h, agent, backend):
    before = counters(h)
    ua = unique_ua("off")
    r = h.get("/off/x", headers=dict(gateway_headers(), **{"User-Agent": ua}))
    assert r.status_code == 200
    got = backend.by_header("User-Agent", ua)
    assert got is not None and not got.headers_starting("x-dd-proxy"), got.header_items
    # a traced gateway request after it: once its trace arrived, the counters include both
    ua2 = unique_ua("on")
    assert h.get("/api/x", headers=dict(gateway_headers(), **{"User-Agent": ua2})).ok
    one_chunk(agent, ua2)
    after = counters(h)
    assert after["inferred_spans"] - before["inferred_spans"] == 1, (before, after)
    assert after["requests_traced"] - before["requests_traced"] == 1, (before, after)


def curl_h2c(h, path, headers):
    if not shutil.which("curl"):
        pytest.skip("curl is not installed")
    cmd = ["curl", "-sS", "--http2", "-o", "/dev/null", "-w", "%{http_code} %{http_version}",
           "--max-time", "10"]
    for k, v in headers.items():
        cmd += ["-H", f"{k}: {v}"]
    cmd.append(h.url(path))
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=20)
    assert p.returncode == 0, p.stderr
    return p.stdout.split()


def test_h2c_upgrade_is_traced_once(h, agent, backend):
    if default_mpm() == "prefork":
        pytest.skip("mod_http2 does not serve HTTP/2 under the prefork MPM")
    before = counters(h)
    ua = unique_ua("h2c")
    gw = gateway_headers(domain="h2c.example.com", path="/h2/x")
    code, version = curl_h2c(h, "/api/status/201", dict(gw, **{"User-Agent": ua}))
    assert (code, version) == ("201", "2"), "the request was not upgraded to HTTP/2"
    chunk = one_chunk(agent, ua, settle=0.5)
    names = sorted(s["name"] for s in chunk)
    assert names == sorted([GATEWAY_NAMES["aws-apigateway"], SERVER_SPAN]), dump(chunk)
    inf, srv = by_name(chunk, "aws.apigateway"), by_name(chunk, SERVER_SPAN)
    assert srv["parent_id"] == inf["span_id"], dump(chunk)
    assert srv["meta"]["http.status_code"] == "201", dump(srv)
    assert inf["meta"]["http.status_code"] == "201", dump(inf)
    got = backend.by_header("User-Agent", ua)
    assert got is not None and not got.headers_starting("x-dd-proxy"), got.header_items
    assert got.header("x-datadog-parent-id") == str(srv["span_id"]), got.header_items
    after = counters(h)
    assert after["inferred_spans"] - before["inferred_spans"] == 1, (before, after)
    assert after["requests_traced"] - before["requests_traced"] == 1, (before, after)
