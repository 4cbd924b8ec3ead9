#!/usr/bin/env bash
# Installs the real Datadog tracers the integration tests compare the module with (issue 15):
# Datadog's Node.js tracer, the exact version pinned in tests/peers/dd-trace-js/package-lock.json,
# with `npm ci` (from the npm registry; Debian's nodejs and npm run it). Re-running is cheap: it
# reinstalls only when the lockfile changed. Without node or npm the peer tests skip, saying so.
set -euo pipefail
cd "$(dirname "$0")/.."
dir=tests/peers/dd-trace-js
if ! command -v npm >/dev/null 2>&1 || [ ! -x /usr/bin/node ]; then
    echo "peers: node/npm not installed; the dd-trace-js peer tests will skip" >&2
    exit 0
fi
stamp="$dir/node_modules/.lock-installed"
if [ -f "$stamp" ] && cmp -s "$stamp" "$dir/package-lock.json"; then
    exit 0
fi
(cd "$dir" && npm ci --no-audit --no-fund --loglevel=error)
cp "$dir/package-lock.json" "$stamp"
echo "peers: dd-trace $(/usr/bin/node -p 'require("./'"$dir"'/node_modules/dd-trace/package.json").version') installed in $dir"
