#!/usr/bin/env bash
# Runs every test of mod_dd_proxy:
#   1. the C unit tests under ThreadSanitizer (queue, flusher, rates: the threaded parts);
#   2. the unit tests and the whole integration suite with the module built under
#      AddressSanitizer + UndefinedBehaviorSanitizer (apache2 runs with the runtimes preloaded);
#   3. the plain build: `make check` (unit tests, then pytest against a real apache2).
# Sanitizer builds happen in copies of the tree under build-*/, so the plain build stays as is.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
bash scripts/deps.sh

copy_tree() { # copy the sources (tracked and new, not ignored) into $1
    rm -rf "$1" && mkdir -p "$1"
    git ls-files -z --cached --others --exclude-standard | xargs -0 cp --parents -t "$1"
}

configure_in() { # dir, extra configure args...
    local dir=$1
    shift
    (cd "$dir" && autoreconf -fi >/dev/null 2>&1 && ./configure -q "$@")
}

echo "== unit tests under ThreadSanitizer"
copy_tree "$ROOT/build-tsan"
configure_in "$ROOT/build-tsan" --enable-sanitizer=thread
make -C "$ROOT/build-tsan" -s -j2 libddcore.a
make -C "$ROOT/build-tsan" -s -j2 tests/unit/test_queue tests/unit/test_flusher tests/unit/test_rates
for t in test_queue test_flusher test_rates; do
    TSAN_OPTIONS="halt_on_error=1" "$ROOT/build-tsan/tests/unit/$t"
done

echo "== unit and integration tests under AddressSanitizer + UndefinedBehaviorSanitizer"
copy_tree "$ROOT/build-asan"
configure_in "$ROOT/build-asan" --enable-sanitizer=address,undefined
make -C "$ROOT/build-asan" -s -j2
make -C "$ROOT/build-asan" -s -j2 check

echo "== make check"
autoreconf -fi >/dev/null 2>&1
./configure -q
make -s -j2
make -s check
