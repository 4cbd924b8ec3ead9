#!/usr/bin/env bash
# Installs (from Debian) what building and testing mod_dd_proxy needs, when it is missing.
set -euo pipefail
PACKAGES="apache2 apache2-dev libapr1-dev libaprutil1-dev libjansson-dev libcurl4-openssl-dev
libmsgpack-dev libpcre2-dev python3-pytest python3-requests python3-msgpack autoconf automake libtool
pkg-config make gcc clang libclang-rt-14-dev libfuzzer-14-dev curl wrk valgrind
build-essential debhelper lintian fakeroot"
missing=""
for p in $PACKAGES; do
    dpkg -s "$p" >/dev/null 2>&1 || missing="$missing $p"
done
if [ -n "$missing" ]; then
    echo "installing:$missing"
    SUDO=""
    [ "$(id -u)" = 0 ] || SUDO=sudo
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq $missing
fi

# X-Ray (issue 17): the official AWS X-Ray SDK for Node.js, from its committed package-lock.json,
# for tests/integration/test_952_xray_sdk.py (which skips, naming this step, when it is missing).
bash "$(dirname "$0")/../tests/peers/xray-sdk/install.sh" ||
    echo "tests/peers/xray-sdk: npm ci failed; the X-Ray SDK comparison tests will skip" >&2
