#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# bench/restart_gap.sh - the longest gap in served requests around `apache2 -k graceful`, with
# the module (agent up, refusing, hung) and without it, on each MPM (issue 14; BENCHMARKS.md).
# It runs tests/integration/test_871_restart_gap.py with every agent mode on every MPM and
# prints its measurements as a table. Needs the module built (./configure && make).
set -euo pipefail
cd "$(dirname "$0")/.."
echo "| MPM | agent | longest gap with the module | without the module | requests served (with / without) |"
echo "|---|---|---|---|---|"
for mpm in prefork worker event; do
    DD_RESTART_GAP_ALL=1 /usr/bin/python3 -m pytest -q -s -p no:cacheprovider --mpm "$mpm" \
        tests/integration/test_871_restart_gap.py 2>&1 |
        sed -n 's/^\([a-z]*\) agent \([a-z]*\): longest gap \([0-9]*\) ms (\([0-9]*\) served) against \([0-9]*\) ms without the module (\([0-9]*\) served).*/| \1 | \2 | \3 ms | \5 ms | \4 \/ \6 |/p'
done
