#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Installs (from Debian) what building and testing mod_dd_proxy needs, when it is missing.
# nodejs runs Datadog's Node.js tracer in the peer tests (scripts/peers.sh installs it from
# npm); the python3-aiohttp ... group is what Datadog's test agent needs when a checkout of it
# is given to the suite (DD_TEST_AGENT_SRC, tests/integration/test_980_peers_test_agent.py).
set -euo pipefail
PACKAGES="apache2 apache2-dev libapr1-dev libaprutil1-dev libjansson-dev libcurl4-openssl-dev
libmsgpack-dev libpcre2-dev python3-pytest python3-requests python3-msgpack autoconf automake libtool
pkg-config make gcc clang libclang-rt-14-dev libfuzzer-14-dev curl wrk valgrind
build-essential debhelper lintian fakeroot
nodejs python3-aiohttp python3-yarl python3-multidict python3-jinja2 python3-protobuf
python3-grpcio python3-typing-extensions python3-yaml"
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

