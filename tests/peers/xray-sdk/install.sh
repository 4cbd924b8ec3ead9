#!/usr/bin/env bash
# Installs the X-Ray SDK peer (tests/peers/xray-sdk) from its committed package-lock.json with
# npm ci, for tests/integration/test_952_xray_sdk.py. Called by scripts/deps.sh. Without npm
# it says so and stops: the test then skips, naming this script.
set -euo pipefail
cd "$(dirname "$0")"
if ! command -v npm >/dev/null 2>&1; then
    echo "tests/peers/xray-sdk: npm not found; the X-Ray SDK comparison tests will skip" >&2
    exit 0
fi
if [ -f node_modules/.package-lock.json ] && cmp -s package-lock.json .installed-lock; then
    exit 0 # already installed from this lock file
fi
npm ci --no-audit --no-fund --ignore-scripts --loglevel=error
cp package-lock.json .installed-lock
