#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# bench/ir_cstats.sh - instructions per request (bench/ir_httpd.sh, callgrind) with client-side
# stats (issue 13.2) against every trace sent:
#   all     a fake agent whose /info announces no stats, with the same rate_by_service 0.01:
#           every trace is encoded and sent (the agent drops the unsampled ones)
#   cstats  a fake agent that announces /v0.6/stats and client_drop_p0s and answers
#           rate_by_service 0.01 (DDClientStats On): stats records handed over and aggregated,
#           about 1 % of the traces encoded and sent
# Both with DDFlushInterval 1000 (the default), so the flusher's work (sends, aggregation,
# stats payloads) is counted with the requests'. The issue's target: the module's added
# instructions per request with cstats at most half of those with all.
#
#   bench/ir_cstats.sh [N] [MODULE.so]
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-1000}
MODULE=${2:-$(pwd)/.libs/mod_dd_proxy.so}
W=$(mktemp -d /tmp/ddcs-XXXXXX)
trap 'kill $(cat "$W"/*.pid 2>/dev/null) 2>/dev/null || true; rm -rf "$W"' EXIT
agent() { # stats(0|1) rate -> prints its port
    /usr/bin/python3 - "$1" "$2" >"$W/agent$1.port" <<'PY' &
import json, socket, sys, threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
stats, rate = sys.argv[1] == "1", float(sys.argv[2])
eps = ["/v0.4/traces", "/info"] + (["/v0.6/stats"] if stats else [])
info = json.dumps({"version": "7.52.0", "endpoints": eps, "client_drop_p0s": stats}).encode()
rates = json.dumps({"rate_by_service": {"service:,env:": rate, "service:httpd,env:": rate}}).encode()
class H(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def answer(self, body):
        self.send_response(200); self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body))); self.end_headers(); self.wfile.write(body)
    def do_GET(self):
        self.answer(info if self.path == "/info" else b"{}")
    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.answer(rates if self.path.startswith("/v0.4/traces") else b"OK")
    do_PUT = do_POST
    def log_message(self, *a): pass
s = ThreadingHTTPServer(("127.0.0.1", 0), H)
print(s.server_address[1], flush=True)
s.serve_forever()
PY
    echo $! >"$W/agent$1.pid"
    for _ in $(seq 50); do [ -s "$W/agent$1.port" ] && break; sleep 0.1; done
}
agent 0 0.01
agent 1 0.01
echo "## all traces sent (the agent takes no client stats), rate_by_service 0.01"
DD_IR_AGENT_URL="http://127.0.0.1:$(cat "$W/agent0.port")" \
    DD_IR_CONF=$'DDFlushInterval 1000\nDDClientStats On' bench/ir_httpd.sh "$N" "$MODULE"
echo "## client-side stats, rate_by_service 0.01"
DD_IR_AGENT_URL="http://127.0.0.1:$(cat "$W/agent1.port")" \
    DD_IR_CONF=$'DDFlushInterval 1000\nDDClientStats On' bench/ir_httpd.sh "$N" "$MODULE"
