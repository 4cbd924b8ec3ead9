#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Runs every test of mod_dd_proxy:
#   0. the build's own checks (tests/build/test_build.sh);
#   1. the C unit tests under ThreadSanitizer (queue, flusher, rates, sampler: the threaded parts);
#   2. every libFuzzer target for a bounded time (FUZZ_SECONDS each, default 20);
#   3. the unit tests and the whole integration suite with the module built under
#      AddressSanitizer + UndefinedBehaviorSanitizer (apache2 runs with the runtimes preloaded);
#   4. the request-path integration tests with apache2 under valgrind's memcheck;
#   5. the Debian package: build, lintian, install, trace, purge;
#   6. the plain build: `make check` (unit tests, then pytest against a real apache2) on the
#      worker, prefork and event MPMs.
# Sanitizer builds happen in copies of the tree under build-*/, so the plain build stays as is.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
bash scripts/deps.sh
bash scripts/peers.sh # the Node.js peers: dd-trace-js and the X-Ray SDK (npm ci)

copy_tree() { # copy the sources (tracked and new, not ignored) into $1
    rm -rf "$1" && mkdir -p "$1"
    git ls-files -z --cached --others --exclude-standard | xargs -0 cp --parents -t "$1"
}

configure_in() { # dir, extra configure args... (-Werror always: the copies are no git checkout)
    local dir=$1
    shift
    (cd "$dir" && autoreconf -fi >/dev/null 2>&1 && ./configure -q --enable-werror "$@")
}

echo "== build checks (-Werror switch, debian/rules, msgpack-c module name, atomics)"
bash tests/build/test_build.sh

echo "== unit tests under ThreadSanitizer"
copy_tree "$ROOT/build-tsan"
configure_in "$ROOT/build-tsan" --enable-sanitizer=thread
make -C "$ROOT/build-tsan" -s -j2 libddcore.a
TSAN_TESTS="test_queue test_flusher test_rates test_sampler test_xray_sampler test_concentrator"
make -C "$ROOT/build-tsan" -s -j2 $(for t in $TSAN_TESTS; do echo tests/unit/$t; done)
for t in $TSAN_TESTS; do
    TSAN_OPTIONS="halt_on_error=1" "$ROOT/build-tsan/tests/unit/$t"
done

echo "== fuzz targets"
bash fuzz/run.sh "${FUZZ_SECONDS:-20}"

echo "== unit and integration tests under AddressSanitizer + UndefinedBehaviorSanitizer"
copy_tree "$ROOT/build-asan"
# the peer tests' installed packages (ignored by git, so not copied)
for d in "$ROOT"/tests/peers/*/node_modules; do
    [ -d "$d" ] && ln -s "$d" "$ROOT/build-asan/tests/peers/$(basename "$(dirname "$d")")/"
done
configure_in "$ROOT/build-asan" --enable-sanitizer=address,undefined
make -C "$ROOT/build-asan" -s -j2
make -C "$ROOT/build-asan" -s -j2 check

echo "== plain build"
autoreconf -fi >/dev/null 2>&1
./configure -q --enable-werror
make -s -j2

echo "== request path under valgrind memcheck"
DD_TEST_VALGRIND=1 /usr/bin/python3 -m pytest -q -p no:cacheprovider \
    tests/integration/test_200_server_span.py tests/integration/test_300_gateway.py \
    tests/integration/test_310_gateway_bad.py tests/integration/test_400_correlation.py

echo "== Debian package"
bash tests/package/test_package.sh # the Debian package: build, lintian, install, trace, purge
echo "== make check (worker, prefork, then event)"
make -s check PYTEST_ARGS="--mpm worker"
make -s check PYTEST_ARGS="--mpm prefork"
make -s check PYTEST_ARGS="--mpm event"
