#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Installs the real peers the integration tests compare the module with, each the exact versions
# pinned in its committed package-lock.json, with `npm ci` (npm registry; Debian's nodejs runs
# them):
#   tests/peers/dd-trace-js  Datadog's Node.js tracer (issue 15)
#   tests/peers/xray-sdk     the official AWS X-Ray SDK for Node.js (issue 17)
# Re-running is cheap: a peer is reinstalled only when its lockfile changed. Without node or
# npm the peer tests skip, saying so (or fail, with DD_TEST_REQUIRE_PEERS=1, as in CI).
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v npm >/dev/null 2>&1 || [ ! -x /usr/bin/node ]; then
    echo "peers: node/npm not installed; the peer tests will skip" >&2
    exit 0
fi
for dir in tests/peers/*/; do
    dir=${dir%/}
    [ -f "$dir/package-lock.json" ] || continue
    stamp="$dir/node_modules/.lock-installed"
    if [ -f "$stamp" ] && cmp -s "$stamp" "$dir/package-lock.json"; then
        continue
    fi
    (cd "$dir" && npm ci --no-audit --no-fund --loglevel=error)
    cp "$dir/package-lock.json" "$stamp"
    echo "peers: $dir installed from its package-lock.json"
done
