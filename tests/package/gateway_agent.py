# SPDX-License-Identifier: Apache-2.0
"""gateway_agent.py - the packaging test's Datadog agent stand-in.

Starts the integration suite's capture agent (tests/integration/capture_agent.py) on
127.0.0.1 and a free port, writes that port to --port-file once it listens, then waits (at most
--timeout seconds) for a trace holding a gateway span named --name whose service is --domain,
with httpd's server span as its child. Prints what it found and exits 0 when the trace is
there and every payload passed the agent's checks, 1 otherwise.

    /usr/bin/python3 tests/package/gateway_agent.py --port-file F --domain D [--timeout 60]
"""

import argparse
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "integration"))
from capture_agent import CaptureAgent  # noqa: E402


def find_gateway_trace(agent, name, domain):
    """(gateway span, server span) of the first chunk with both, else None."""
    for chunk in agent.chunks_where(lambda s: s.get("name") == name):
        for gw in chunk:
            if not isinstance(gw, dict) or gw.get("name") != name or gw.get("service") != domain:
                continue
            for srv in chunk:
                if (isinstance(srv, dict) and srv.get("name") == "httpd.request"
                        and srv.get("parent_id") == gw.get("span_id")):
                    return gw, srv
    return None


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--port-file", required=True)
    ap.add_argument("--domain", required=True)
    ap.add_argument("--name", default="aws.apigateway")
    ap.add_argument("--timeout", type=float, default=60.0)
    args = ap.parse_args()

    agent = CaptureAgent().start()
    tmp = args.port_file + ".tmp"
    with open(tmp, "w") as f:
        f.write(f"{agent.port}\n")
    os.replace(tmp, args.port_file)
    print(f"agent: listening on {agent.url}", flush=True)

    found = agent.wait_for(lambda a: find_gateway_trace(a, args.name, args.domain),
                           timeout=args.timeout)
    counts = agent.counts
    failures = list(agent.failures)
    agent.stop()

    print(f"agent: received {counts}", flush=True)
    problems = [f"payload check: {f}" for f in failures]
    if not found:
        names = sorted({(s.get("name"), s.get("service")) for s in agent.spans()})
        problems.append(f"no {args.name} span with service {args.domain} and an httpd.request "
                        f"child within {args.timeout:.0f}s; (name, service) seen: {names}")
    else:
        gw, srv = found
        meta, metrics = gw.get("meta") or {}, gw.get("metrics") or {}
        print(f"agent: {gw['name']} service={gw['service']} resource={gw.get('resource')!r} "
              f"component={meta.get('component')} -> {srv['name']} service={srv.get('service')} "
              f"resource={srv.get('resource')!r} status={srv.get('meta', {}).get('http.status_code')}",
              flush=True)
        if meta.get("component") != args.name.replace(".", "-"):
            problems.append(f"gateway span component={meta.get('component')!r}")
        if metrics.get("_dd.inferred_span") != 1:
            problems.append(f"gateway span _dd.inferred_span={metrics.get('_dd.inferred_span')!r}")
        if gw.get("trace_id") != srv.get("trace_id"):
            problems.append("gateway and server spans have different trace ids")
    for p in problems:
        print(f"agent: FAIL {p}", flush=True)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
