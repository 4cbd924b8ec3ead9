#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# bench/ir_httpd.sh - instructions per request of a whole apache2 (-X: one process, prefork),
# counted by callgrind: exact and repeatable whatever else the machine runs, where the
# wall-clock table (bench/run.sh --httpd) needs a quiet machine.
#
#   bench/ir_httpd.sh [N] [MODULE.so ...]
#
# For "no module" and for each module given (default: this tree's .libs/mod_dd_proxy.so),
# serves N (default 2000) requests of each case - a static 1 KiB file, the same through
# mod_proxy, the static file with API Gateway headers - once with N and once with 2N requests,
# and prints (I(2N) - I(N)) / N: the instructions of one request, start-up excluded. The agent
# is a port nothing listens on, with DDFlushInterval 60000: the flusher thread's sends are not
# counted (they are in bench/run.sh's tables); the request path is.
# DD_IR_AGENT_URL replaces that agent, DD_IR_CONF adds module directives after the defaults
# (bench/ir_cstats.sh: a fake agent that takes client-side stats, DDClientStats On).
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-2000}
shift || true
MODULES=("$@")
[ ${#MODULES[@]} -gt 0 ] || MODULES=("$(pwd)/.libs/mod_dd_proxy.so")
command -v valgrind >/dev/null || { echo "needs valgrind" >&2; exit 1; }
W=$(mktemp -d /tmp/ddir-XXXXXX)
chmod 755 "$W"
trap 'kill $(cat "$W"/backend.pid 2>/dev/null) 2>/dev/null || true; rm -rf "$W"' EXIT
mkdir -p "$W/htdocs" "$W/logs" "$W/run"
head -c 1024 /dev/zero | tr '\0' 'x' >"$W/htdocs/f.html"
port() { /usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
BPORT=$(port)
/usr/bin/python3 -c "
import http.server, socketserver, sys
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = 'HTTP/1.1'
    def do_GET(self):
        self.send_response(200); self.send_header('Content-Length', '3'); self.end_headers()
        self.wfile.write(b'ok\n')
    def log_message(self, *a): pass
socketserver.ThreadingTCPServer.allow_reuse_address = True
socketserver.ThreadingTCPServer(('127.0.0.1', $BPORT), H).serve_forever()" &
echo $! >"$W/backend.pid"

conf() { # module-or-empty port
    local mods="mpm_prefork authz_core mime alias proxy proxy_http"
    {
        for m in $mods; do echo "LoadModule ${m}_module /usr/lib/apache2/modules/mod_${m}.so"; done
        [ -n "$1" ] && echo "LoadModule dd_proxy_module $1"
        cat <<EOF
ServerRoot "$W"
PidFile "$W/run/httpd.pid"
Mutex file:$W/run default
DefaultRuntimeDir "$W/run"
Listen 127.0.0.1:$2
ServerName 127.0.0.1
User www-data
Group www-data
ErrorLog "$W/logs/error_log"
TypesConfig /etc/mime.types
DocumentRoot "$W/htdocs"
<Directory "$W/htdocs">
    Require all granted
</Directory>
KeepAlive On
MaxKeepAliveRequests 0
ProxyPass /api/ http://127.0.0.1:$BPORT/
EOF
        [ -n "$1" ] && cat <<EOF
DDAgentURL ${DD_IR_AGENT_URL:-http://127.0.0.1:9}
DDFlushInterval 60000
DDInferredProxy On
${DD_IR_CONF:-}
EOF
    } >"$W/httpd.conf"
}

# requests over one keep-alive connection: path count [gateway]
client() {
    /usr/bin/python3 - "$@" <<'EOF'
import http.client, sys, time
port, path, n, gw = int(sys.argv[1]), sys.argv[2], int(sys.argv[3]), sys.argv[4] == "1"
for _ in range(600):
    try:
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=30); c.connect(); break
    except OSError:
        time.sleep(0.1)
h = {"User-Agent": "ir"}
if gw:
    h.update({"x-dd-proxy": "aws-apigateway", "x-dd-proxy-request-time-ms": str(int(time.time() * 1000)),
              "x-dd-proxy-domain-name": "api.example.com", "x-dd-proxy-httpmethod": "GET",
              "x-dd-proxy-path": "/f.html", "x-dd-proxy-stage": "prod"})
for _ in range(n):
    c.request("GET", path, headers=h); r = c.getresponse(); r.read()
    assert r.status == 200, r.status
EOF
}

count() { # module path n gateway -> instructions
    local p out
    p=$(port)
    conf "$1" "$p"
    valgrind --tool=callgrind --callgrind-out-file=/dev/null --vgdb=no --trace-children=no \
        /usr/sbin/apache2 -X -f "$W/httpd.conf" 2>"$W/vg.log" &
    local vg=$!
    client "$p" "$2" "$3" "$4"
    kill -TERM $vg
    wait $vg || true
    out=$(grep -E "^==$vg== Collected" "$W/vg.log" | awk "{print \$NF}")
    [ -n "$out" ] || { echo "callgrind said nothing:" >&2; tail -5 "$W/vg.log" >&2; }
    echo "${out:-0}"
}

printf '| case |'
labels=("no module")
for m in "${MODULES[@]}"; do labels+=("$(basename "$(dirname "$(dirname "$m")")")/$(basename "$m")"); done
for l in "${labels[@]}"; do printf ' %s |' "$l"; done
printf '\n|---|'
for _ in "${labels[@]}"; do printf -- '---:|'; done
printf '\n'
for c in "static /f.html 0" "proxy /api/f 0" "gateway /f.html 1"; do
    set -- $c
    printf '| %s |' "$1"
    for m in "" "${MODULES[@]}"; do
        a=$(count "$m" "$2" "$N" "$3")
        b=$(count "$m" "$2" $((2 * N)) "$3")
        printf ' %s |' "$(( (b - a) / N ))"
    done
    printf '\n'
done
