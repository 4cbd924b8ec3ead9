#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Builds every libFuzzer target (clang, with ASan + UBSan) and runs each for a bounded time
# over its seed corpus. Fails on any finding.
# Usage: fuzz/run.sh [seconds per target, default 20]   or   fuzz/run.sh --build-only
# FUZZ_TARGETS="fuzz_gateway ..." narrows the targets (default: every fuzz/fuzz_*.c).
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD_ONLY=0
if [ "${1:-}" = "--build-only" ]; then BUILD_ONLY=1; shift; fi
SECONDS_PER_TARGET=${1:-20}
OUT=${FUZZ_OUT:-build-fuzz}
mkdir -p "$OUT"
CFLAGS="-g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all -Ilib"
# msgpack-c 6 (Debian 13) names its pkg-config module msgpack-c; earlier releases msgpack.
MSGPACK_PC=msgpack
if pkg-config --exists msgpack-c; then MSGPACK_PC=msgpack-c; fi
DEPS_CFLAGS=$(pkg-config --cflags apr-1 apr-util-1 jansson $MSGPACK_PC)
DEPS_LIBS="$(pkg-config --libs apr-1 apr-util-1 jansson $MSGPACK_PC) -lpthread"
LIB="lib/dd_baggage.c lib/dd_gateway.c lib/dd_util.c lib/dd_span.c lib/dd_trace.c lib/dd_encode.c
     lib/dd_propagation.c lib/dd_sampler.c lib/dd_rates.c lib/dd_stats.c lib/dd_xray.c
     lib/dd_xray_sampler.c lib/dd_endpoint.c lib/dd_rc.c lib/dd_sha256.c"
failed=0
for src in fuzz/fuzz_*.c; do
    name=$(basename "$src" .c)
    if [ -n "${FUZZ_TARGETS:-}" ] && ! [[ " $FUZZ_TARGETS " == *" $name "* ]]; then continue; fi
    corpus=fuzz/corpus/${name#fuzz_}
    # shellcheck disable=SC2086
    clang $CFLAGS $DEPS_CFLAGS "$src" $LIB -o "$OUT/$name" $DEPS_LIBS
    if [ "$BUILD_ONLY" = 1 ]; then echo "== $name built ($MSGPACK_PC)"; continue; fi
    work="$OUT/$name.corpus"
    rm -rf "$work" && mkdir -p "$work"
    echo "== $name: ${SECONDS_PER_TARGET}s over $corpus"
    if ! (cd "$OUT" && ASAN_OPTIONS=detect_leaks=1 "./$name" -max_total_time="$SECONDS_PER_TARGET" \
            -rss_limit_mb=2048 -print_final_stats=1 "$name.corpus" "../$corpus" 2>"$name.log"); then
        echo "FINDING in $name:"; tail -40 "$OUT/$name.log"; failed=1
    else
        grep -E "stat::number_of_executed_units|stat::peak_rss_mb" "$OUT/$name.log" | tr '\n' ' '; echo
    fi
done
exit $failed
