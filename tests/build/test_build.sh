#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# tests/build/test_build.sh - the build's own checks (issue 16 items 2, 7 and 8), in a copy of the
# tree under a temporary directory (not a git checkout, as a release tarball or a distro build):
#   1. -Werror: off by default outside a git checkout, --enable-werror / --disable-werror;
#      debian/rules passes --disable-werror (unless DEB_BUILD_OPTIONS=werror) and runs the C
#      unit tests unless DEB_BUILD_OPTIONS=nocheck;
#   2. msgpack-c 6's pkg-config module name (msgpack-c): configure and fuzz/run.sh accept it
#      (a pkg-config directory where only msgpack-c.pc exists), and configure says which
#      msgpack-c the encoder was checked against;
#   3. lock-free 64-bit atomics: configure refuses a target without them, with a clear message;
#      the check's program fails for 32-bit MIPS and passes for x86_64 and aarch64 (clang);
#   4. the licence (issue 14): LICENSE is the Apache License 2.0, debian/copyright says so in
#      the machine-readable format, and every source file has its SPDX line (scripts/spdx.py).
# Prints "N passed, M failed" and exits non-zero on any failure.
set -uo pipefail
cd "$(dirname "$0")/../.."
ROOT=$(pwd)
WORK=$(mktemp -d /tmp/ddtest-build-XXXXXX)
trap 'rm -rf "$WORK"' EXIT
passed=0
failed=0
ok() { echo "ok: $1"; passed=$((passed + 1)); }
bad() { echo "FAILED: $1"; failed=$((failed + 1)); }
check() { # description, command...
    local what=$1
    shift
    if "$@"; then ok "$what"; else bad "$what"; fi
}

SRC=$WORK/src
mkdir -p "$SRC"
git ls-files -z --cached --others --exclude-standard | xargs -0 cp --parents -t "$SRC"
(cd "$SRC" && autoreconf -fi >/dev/null 2>&1) || { echo "autoreconf failed"; exit 1; }

configure() { # log, args...
    local log=$1
    shift
    (cd "$SRC" && ./configure "$@") >"$log" 2>&1
}
werror_of() { sed -n 's/^WERROR_CFLAGS = *//p' "$SRC/Makefile"; }

# --- 1. -Werror and debian/rules -------------------------------------------------------------
configure "$WORK/c-default.log"
check "no -Werror by default outside a git checkout" test -z "$(werror_of)"
configure "$WORK/c-enable.log" --enable-werror
check "--enable-werror" test "$(werror_of)" = "-Werror"
check "the module build uses it" grep -q -- '-Wc,-Werror' <(cd "$SRC" && make -n mod_dd_proxy.la)
configure "$WORK/c-disable.log" --disable-werror
check "--disable-werror" test -z "$(werror_of)"
rules() { (cd "$SRC" && DEB_BUILD_OPTIONS="$1" make -s -f debian/rules -n "$2" 2>/dev/null); }
check "debian/rules configures with --disable-werror" \
    grep -q -- '--disable-werror' <(rules "" override_dh_auto_configure)
check "DEB_BUILD_OPTIONS=werror turns it on" \
    grep -q -- '--enable-werror' <(rules "werror" override_dh_auto_configure)
check "debian/rules runs the unit tests" grep -q 'make.* unit' <(rules "" override_dh_auto_test)
check "DEB_BUILD_OPTIONS=nocheck skips them" \
    bash -c "! grep -q -e 'make.* unit' -e '^dh ' <<<\"\$(cd '$SRC' && DEB_BUILD_OPTIONS=nocheck make -s -f debian/rules -n override_dh_auto_test 2>&1)\""

# --- 2. msgpack-c 6's pkg-config name --------------------------------------------------------
PCDIR=$WORK/pkgconfig
mkdir -p "$PCDIR"
for d in $(pkg-config --variable pc_path pkg-config | tr ':' ' '); do
    for pc in "$d"/*.pc; do
        [ -e "$pc" ] && [ "$(basename "$pc")" != msgpack.pc ] && ln -sf "$pc" "$PCDIR/"
    done
done
sed 's/^Name:.*/Name: msgpack-c/' "$(pkg-config --variable pcfiledir msgpack)/msgpack.pc" \
    >"$PCDIR/msgpack-c.pc"
rm -f "$PCDIR/msgpack.pc"
check "configure accepts msgpack-c.pc (msgpack-c 6)" \
    env PKG_CONFIG_LIBDIR="$PCDIR" bash -c "cd '$SRC' && ./configure >'$WORK/c-msgpack-c.log' 2>&1"
check "configure names the module and the release the encoder was checked against" \
    grep -q "pkg-config module msgpack-c); the encoder's use of its pack_template.h was checked against msgpack-c [0-9]" \
    "$WORK/c-msgpack-c.log"
check "fuzz/run.sh accepts msgpack-c.pc" \
    env PKG_CONFIG_LIBDIR="$PCDIR" FUZZ_OUT="$WORK/fuzz" FUZZ_TARGETS=fuzz_sampling_rules \
    bash -c "cd '$SRC' && bash fuzz/run.sh --build-only >'$WORK/fuzz.log' 2>&1 && grep -q 'built (msgpack-c)' '$WORK/fuzz.log'"

# --- 3. lock-free 64-bit atomics -------------------------------------------------------------
sed -n '/BEGIN atomic64/,/END atomic64/p' configure.ac >"$WORK/atomic64.c"
check "the atomics check's program is in configure.ac" grep -q ATOMIC_LLONG_LOCK_FREE "$WORK/atomic64.c"
target_ok() { clang --target="$1" -ffreestanding -fsyntax-only "$WORK/atomic64.c" 2>/dev/null; }
check "lock-free on x86_64" target_ok x86_64-linux-gnu
check "lock-free on aarch64" target_ok aarch64-linux-gnu
check "not lock-free on 32-bit MIPS" bash -c "! clang --target=mips-linux-gnu -ffreestanding -fsyntax-only '$WORK/atomic64.c' 2>/dev/null"
check "configure refuses a target without them" \
    bash -c "cd '$SRC' && ! dd_cv_atomic64_lock_free=no ./configure >'$WORK/c-atomic.log' 2>&1"
check "... saying why" grep -q "no lock-free 64-bit atomics" "$WORK/c-atomic.log"

# --- 4. the licence ------------------------------------------------------------------------
check "LICENSE is the Apache License 2.0" grep -q "Apache License" "$ROOT/LICENSE"
check "... the text Debian ships" cmp -s "$ROOT/LICENSE" /usr/share/common-licenses/Apache-2.0
check "debian/copyright: machine-readable, Apache-2.0 for every file" bash -c \
    "grep -q '^Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/' '$ROOT/debian/copyright' && grep -A2 '^Files: \*' '$ROOT/debian/copyright' | grep -q '^License: Apache-2.0'"
check "every source file has an SPDX line" bash -c "cd '$ROOT' && /usr/bin/python3 scripts/spdx.py"

echo "build checks: $passed passed, $failed failed"
[ "$failed" = 0 ]
