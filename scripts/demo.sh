#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Quick start: install what is missing (Debian), build the module, run it on a real apache2 and
# print the traces it sends.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/deps.sh
[ -f configure ] || autoreconf -fi >/dev/null 2>&1
[ -f Makefile ] || ./configure -q
make -s mod_dd_proxy.la >build.log 2>&1 || { cat build.log; exit 1; }
exec /usr/bin/python3 scripts/demo.py
