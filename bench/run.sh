#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# bench/run.sh - the benchmarks of mod_dd_proxy, in one command (see BENCHMARKS.md).
#
#   bench/run.sh            microbenchmark + httpd table (3 rounds x 5 s per case; ~8 minutes)
#   bench/run.sh --quick    the same, shorter (2 rounds x 2 s; 3-4 minutes with the build)
#   bench/run.sh --soak     1,000,000 requests with the agent up; RSS per child over time
#   bench/run.sh --micro    the lib/ microbenchmark only
#   bench/run.sh --httpd    the httpd table only
#   bench/run.sh --ir       instructions per request and step (valgrind; exact, noise-free)
#   more: bench/run.sh --help (--rounds N, --duration S, --conc 1,64, --nice N,
#         --compare-module SO, --json FILE, --keep)
#
# It builds what it measures from the sources as they are now, in a copy of the tree
# (build-bench/, ignored by git, so edits made meanwhile do not change a running benchmark):
# the module with the project's own build (autoreconf, configure, make: apxs, -O2), and, with
# gcc -O2, bench/micro.c against lib/ and bench/sink.c. DD_BENCH_NO_BUILD=1 reuses the last
# build. Needs root for apache2's User/Group and for installing missing Debian packages.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
BUILD=${DD_BENCH_BUILD:-$ROOT/build-bench}

for a in "$@"; do
    if [ "$a" = "-h" ] || [ "$a" = "--help" ]; then
        exec /usr/bin/python3 "$ROOT/bench/run.py" --build "$BUILD" --help
    fi
done

need=""
for c in wrk apache2 apxs gcc pkg-config autoreconf make; do
    command -v "$c" >/dev/null 2>&1 || [ -x "/usr/sbin/$c" ] || need="$need $c"
done
if [ -n "$need" ]; then
    echo "missing:$need; installing the project's build and test packages" >&2
    bash "$ROOT/scripts/deps.sh" >&2
fi
case " $* " in
*" --profile "*)
    if ! command -v perf >/dev/null 2>&1; then
        echo "--profile: installing perf (Debian's linux-perf)" >&2
        SUDO=""
        [ "$(id -u)" = 0 ] || SUDO=sudo
        $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq linux-perf >&2
    fi
    ;;
esac

if [ "${DD_BENCH_NO_BUILD:-0}" != 1 ] || [ ! -x "$BUILD/bench-bin/micro" ]; then
    echo "== building into $BUILD" >&2
    rm -rf "$BUILD" && mkdir -p "$BUILD"
    if git -C "$ROOT" rev-parse --git-dir >/dev/null 2>&1; then
        git -C "$ROOT" ls-files -z --cached --others --exclude-standard |
            (cd "$ROOT" && xargs -0 cp --parents -t "$BUILD" 2>/dev/null || true)
    else
        tar -C "$ROOT" --exclude=./build-bench -cf - . | tar -C "$BUILD" -xf -
    fi
    (cd "$BUILD" && autoreconf -fi >/dev/null 2>&1 && ./configure -q >/dev/null &&
        make -s -j2 mod_dd_proxy.la >/dev/null) || {
        echo "the module did not build" >&2
        exit 1
    }
    PKGS="apr-1 apr-util-1 jansson libcurl msgpack libpcre2-8"
    mkdir -p "$BUILD/bench-bin"
    # shellcheck disable=SC2046
    gcc -std=gnu11 -O2 -g -I"$BUILD/lib" $(pkg-config --cflags $PKGS) \
        "$BUILD/bench/micro.c" "$BUILD"/lib/dd_*.c -o "$BUILD/bench-bin/micro" \
        $(pkg-config --libs $PKGS) -lpthread -lm
    gcc -std=gnu11 -O2 -Wall "$BUILD/bench/sink.c" -o "$BUILD/bench-bin/sink"
fi

exec /usr/bin/python3 "$ROOT/bench/run.py" --build "$BUILD" "$@"
