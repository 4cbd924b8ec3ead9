#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# test_package.sh - the Debian package, end to end, on this machine's own apache2.
#
#   1. builds libapache2-mod-dd-proxy with `dpkg-buildpackage -us -uc -b` in a copy of the tree
#      (tracked and new, not ignored files), and checks `lintian` reports no error;
#   2. installs it with `apt-get install ./…deb`: the module must be in /usr/lib/apache2/modules and
#      enabled by the postinst (a2query), then `a2enmod dd_proxy` as a user would;
#   3. points the system apache2 at 127.0.0.1:<free port> with `DDInferredProxy On` and
#      `DDAgentURL` at a capture agent (gateway_agent.py), checks `apache2ctl -t`, runs
#      `apache2ctl start`, sends an API Gateway request with curl and waits for the agent to get
#      the aws.apigateway span with httpd's span as its child; `apache2ctl stop`;
#   4. upgrades (reinstalls) the package: an admin's `a2dismod dd_proxy` survives it, and so
#      does an enabled module;
#   5. `apt-get remove` (module disabled, .so gone, conffiles kept), then `apt-get purge`
#      (conffiles and a2enmod state gone); `apache2ctl -t` says what it said before the install.
#
# It must run as root on a Debian machine with apache2 and the package's build dependencies
# (debian/control), lintian, curl and python3-msgpack. It changes the system apache2's
# configuration while it runs (ports.conf, a conf-available snippet) and restores it whatever
# happens; it refuses to run while the system apache2 is running. Everything listens on
# 127.0.0.1 only. Each step has a time limit. Prints "package: N passed, N failed" last.
set -euo pipefail
unset APACHE_CONFDIR APACHE_ARGUMENTS
export DEBIAN_FRONTEND=noninteractive LC_ALL=C

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
PKG=libapache2-mod-dd-proxy
MOD=dd_proxy
SO=/usr/lib/apache2/modules/mod_dd_proxy.so
CONFDIR=/etc/apache2
SNIPPET=dd-proxy-pkgtest
STATE=/var/tmp/dd-proxy-pkgtest          # what to restore, kept across an interrupted run
POLICY=/usr/sbin/policy-rc.d
POLICY_MARK="# dd-proxy-pkgtest: no service starts while the package test runs"
DOMAIN=pkgtest.execute-api.eu-west-3.amazonaws.com
APT=(apt-get -y -q -o DPkg::Lock::Timeout=300)

WORK=""
AGENT_PID=""
STARTED_APACHE=0
INSTALLED=0
STEP="setup"

say() { echo "package: $*"; }
fail() {
    echo "package: FAIL ($STEP): $*" >&2
    exit 1
}
step() {
    STEP=$1
    say "== $1"
}
envvar() { # a variable of /etc/apache2/envvars, as apache2ctl sees it
    (set +u && . "$CONFDIR/envvars" && eval "echo \"\${$1:-}\"")
}
apache_pid() { # the system apache2's master pid, when it runs
    local pidfile
    pidfile=$(envvar APACHE_PID_FILE)
    pidfile=${pidfile:-/var/run/apache2/apache2.pid}
    [ -s "$pidfile" ] || return 1
    local pid
    pid=$(cat "$pidfile")
    kill -0 "$pid" 2>/dev/null || return 1
    echo "$pid"
}

restore_config() { # undo what this test did to /etc/apache2 (also after an interrupted run)
    if [ -e "$CONFDIR/conf-enabled/$SNIPPET.conf" ] || [ -L "$CONFDIR/conf-enabled/$SNIPPET.conf" ]; then
        a2disconf -q "$SNIPPET" >/dev/null 2>&1 || rm -f "$CONFDIR/conf-enabled/$SNIPPET.conf"
    fi
    rm -f "$CONFDIR/conf-available/$SNIPPET.conf"
    if [ -f "$STATE/ports.conf" ]; then
        cp -p "$STATE/ports.conf" "$CONFDIR/ports.conf"
        rm -f "$STATE/ports.conf"
    fi
}

restore_policy() { # remove the policy-rc.d this test wrote (also after an interrupted run)
    if [ -f "$POLICY" ] && grep -qxF "$POLICY_MARK" "$POLICY"; then
        rm -f "$POLICY"
    fi
}

pkg_present() { # installed, or removed with its conffiles left
    local st
    st=$(dpkg-query -W -f='${Status}' "$PKG" 2>/dev/null || true)
    case "$st" in "" | *not-installed) return 1 ;; *) return 0 ;; esac
}

stop_apache() { # bounded: apache2ctl stop, then SIGKILL the master we started
    local pid
    pid=$(apache_pid) || return 0
    timeout 30 apache2ctl stop >/dev/null 2>&1 || true
    for _ in $(seq 100); do
        kill -0 "$pid" 2>/dev/null || return 0
        sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
}

cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    set +e
    if [ -n "$AGENT_PID" ]; then
        kill "$AGENT_PID" 2>/dev/null
        wait "$AGENT_PID" 2>/dev/null
    fi
    [ "$STARTED_APACHE" = 1 ] && stop_apache
    restore_config
    if [ "$INSTALLED" = 1 ] && pkg_present; then
        timeout 300 "${APT[@]}" purge "$PKG" >/dev/null 2>&1
    fi
    restore_policy
    rmdir "$STATE" 2>/dev/null
    if [ "$rc" = 0 ]; then
        [ -n "$WORK" ] && rm -rf "$WORK"
        echo "package: 1 passed, 0 failed"
    else
        [ -n "$WORK" ] && echo "package: logs kept in $WORK" >&2
        echo "package: 0 passed, 1 failed"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'echo "package: FAIL ($STEP): interrupted" >&2; exit 130' INT TERM

free_port() {
    /usr/bin/python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# ---------------------------------------------------------------------------------------------
step "preconditions"
[ "$(id -u)" = 0 ] || fail "must run as root (it installs a package and starts the system apache2)"
for c in git dpkg-buildpackage dpkg-checkbuilddeps lintian apt-get apache2ctl a2query a2enmod \
    a2dismod a2enconf curl timeout /usr/bin/python3; do
    command -v "$c" >/dev/null || fail "$c not found (apt-get install apache2 dpkg-dev lintian curl python3-msgpack)"
done
/usr/bin/python3 -c 'import msgpack' 2>/dev/null || fail "python3-msgpack is not installed"
git -C "$ROOT" rev-parse --git-dir >/dev/null 2>&1 || fail "$ROOT is not a git work tree"
if [ -e "$CONFDIR/conf-available/$SNIPPET.conf" ] && apache_pid >/dev/null; then
    say "stopping the system apache2 an interrupted run left with its configuration"
    stop_apache
fi
if pid=$(apache_pid); then
    fail "the system apache2 is running (pid $pid): this test starts and stops it, stop it first"
fi
restore_config # leftovers of an interrupted run
restore_policy
if pkg_present; then
    say "$PKG is installed (an interrupted run?): purging it first"
    timeout 300 "${APT[@]}" purge "$PKG" >/dev/null || fail "could not purge the installed $PKG"
fi
mkdir -p "$STATE"
if [ ! -e "$POLICY" ]; then # maintainer scripts must not (re)start apache2 on port 80
    printf '#!/bin/sh\n%s\nexit 101\n' "$POLICY_MARK" >"$POLICY"
    chmod 755 "$POLICY"
fi

WORK=$(mktemp -d /tmp/dd-proxy-pkgtest.XXXXXX)
chmod 755 "$WORK" # apt's _apt user reads the .deb, apache's www-data the document root

# ---------------------------------------------------------------------------------------------
step "build"
mkdir "$WORK/src"
(cd "$ROOT" && git ls-files -z --cached --others --exclude-standard | xargs -0 cp --parents -t "$WORK/src")
rm -rf "$WORK/src/debian/$PKG" "$WORK/src/debian/.debhelper" # should someone have built in the tree
(cd "$WORK/src" && dpkg-checkbuilddeps) || fail "build dependencies missing (debian/control): apt-get install them"
if ! (cd "$WORK/src" && timeout -k 10 900 dpkg-buildpackage -us -uc -b) >"$WORK/build.log" 2>&1; then
    tail -40 "$WORK/build.log" >&2
    fail "dpkg-buildpackage failed (log: $WORK/build.log)"
fi
VERSION=$(cd "$WORK/src" && dpkg-parsechangelog -S Version)
ARCH=$(dpkg --print-architecture)
DEB="$WORK/${PKG}_${VERSION}_${ARCH}.deb"
CHANGES="$WORK/${PKG}_${VERSION}_${ARCH}.changes"
[ -f "$DEB" ] || fail "dpkg-buildpackage made no $(basename "$DEB"): $(ls "$WORK")"
say "built $(basename "$DEB")"
dpkg-deb -c "$DEB" | grep "\./usr/lib/apache2/modules/mod_dd_proxy.so$" >/dev/null || fail "the .deb has no mod_dd_proxy.so"

step "lintian"
timeout 300 lintian --info "$CHANGES" >"$WORK/lintian.log" 2>&1 || true
grep -v 'running with root privileges' "$WORK/lintian.log" | sed 's/^/  /' || true
if grep -q '^E: ' "$WORK/lintian.log"; then
    fail "lintian reports errors"
fi
grep -q '^[EW]: \|^I: \|^N: \|^P: ' "$WORK/lintian.log" || say "lintian: clean"

# ---------------------------------------------------------------------------------------------
step "install"
timeout 60 apache2ctl -t >"$WORK/configtest.before" 2>&1 || fail "apache2ctl -t fails before the install: $(cat "$WORK/configtest.before")"
INSTALLED=1
timeout 300 "${APT[@]}" install "$DEB" >"$WORK/install.log" 2>&1 \
    || { tail -20 "$WORK/install.log" >&2; fail "apt-get install $DEB failed"; }
st=$(dpkg-query -W -f='${Status} ${Version}' "$PKG")
[ "$st" = "install ok installed $VERSION" ] || fail "dpkg says: $st"
for f in "$SO" "$CONFDIR/mods-available/$MOD.load" "$CONFDIR/mods-available/$MOD.conf"; do
    [ -f "$f" ] || fail "$f is not installed"
done
q=$(a2query -m "$MOD" 2>&1) || fail "a2query -m $MOD after the install: $q"
say "a2query: $q"
case "$q" in *"enabled by maintainer script"*) ;; *) fail "the postinst did not enable $MOD: $q" ;; esac
a2enmod "$MOD" || fail "a2enmod $MOD failed"
for f in "$CONFDIR/mods-enabled/$MOD.load" "$CONFDIR/mods-enabled/$MOD.conf"; do
    [ -L "$f" ] && [ -e "$f" ] || fail "$f is not a working symlink"
done

# ---------------------------------------------------------------------------------------------
step "configure apache2 and the agent"
PORT=$(free_port)
mkdir "$WORK/htdocs"
echo "mod_dd_proxy package test" >"$WORK/htdocs/index.html"
chmod -R a+rX "$WORK/htdocs"
/usr/bin/python3 "$ROOT/tests/package/gateway_agent.py" --port-file "$WORK/agent.port" \
    --domain "$DOMAIN" --timeout 60 >"$WORK/agent.log" 2>&1 &
AGENT_PID=$!
for _ in $(seq 100); do
    [ -s "$WORK/agent.port" ] && break
    kill -0 "$AGENT_PID" 2>/dev/null || break
    sleep 0.1
done
[ -s "$WORK/agent.port" ] || fail "the capture agent did not start: $(cat "$WORK/agent.log")"
AGENT_PORT=$(cat "$WORK/agent.port")

cp -p "$CONFDIR/ports.conf" "$STATE/ports.conf"
cat >"$CONFDIR/ports.conf" <<EOF
# written by tests/package/test_package.sh, which puts the original back when it ends
Listen 127.0.0.1:$PORT
EOF
cat >"$CONFDIR/conf-available/$SNIPPET.conf" <<EOF
# written by tests/package/test_package.sh, which removes it when it ends
DDAgentURL http://127.0.0.1:$AGENT_PORT
DDFlushInterval 200
<VirtualHost 127.0.0.1:$PORT>
    ServerName pkgtest.localhost
    DocumentRoot $WORK/htdocs
    <Directory $WORK/htdocs>
        Require all granted
    </Directory>
    DDService pkgtest-httpd
    DDInferredProxy On
</VirtualHost>
EOF
a2enconf -q "$SNIPPET" >/dev/null
timeout 60 apache2ctl -t >"$WORK/configtest.module" 2>&1 \
    || fail "apache2ctl -t with the module and DDInferredProxy On: $(cat "$WORK/configtest.module")"
if extra=$(grep -vxF -f "$WORK/configtest.before" "$WORK/configtest.module"); then
    fail "apache2ctl -t says more with the module than without: $extra"
fi
say "apache2ctl -t: $(tr '\n' ' ' <"$WORK/configtest.module")"

# ---------------------------------------------------------------------------------------------
step "trace a gateway request"
LOG_DIR=$(envvar APACHE_LOG_DIR)
ERROR_LOG="$LOG_DIR/error.log"
LOG_START=$(stat -c %s "$ERROR_LOG" 2>/dev/null || echo 0)
STARTED_APACHE=1
timeout 60 apache2ctl start >"$WORK/start.log" 2>&1 || fail "apache2ctl start: $(cat "$WORK/start.log")"
up=0
for _ in $(seq 100); do
    if curl -fsS -m 2 -o /dev/null "http://127.0.0.1:$PORT/"; then
        up=1
        break
    fi
    sleep 0.1
done
[ "$up" = 1 ] || fail "apache2 does not answer on 127.0.0.1:$PORT: $(tail -5 "$ERROR_LOG" 2>/dev/null)"
status=$(curl -sS -m 10 -o "$WORK/response" -w '%{http_code}' \
    -H 'x-dd-proxy: aws-apigateway' \
    -H "x-dd-proxy-request-time-ms: $(date +%s%3N)" \
    -H "x-dd-proxy-domain-name: $DOMAIN" \
    -H 'x-dd-proxy-httpmethod: GET' \
    -H 'x-dd-proxy-path: /' \
    -H 'x-dd-proxy-stage: prod' \
    "http://127.0.0.1:$PORT/") || fail "curl failed"
[ "$status" = 200 ] || fail "the gateway request got HTTP $status"
agent_rc=0
wait "$AGENT_PID" || agent_rc=$?
AGENT_PID=""
sed 's/^/  /' "$WORK/agent.log"
[ "$agent_rc" = 0 ] || fail "the agent did not get the gateway trace"
stop_apache
STARTED_APACHE=0
if [ -f "$ERROR_LOG" ]; then
    tail -c +"$((LOG_START + 1))" "$ERROR_LOG" >"$WORK/error.log"
    if grep -E '\[[a-z_]*:(error|crit|alert|emerg)\]' "$WORK/error.log" >&2; then
        fail "apache2 logged errors ($ERROR_LOG)"
    fi
fi
restore_config

# ---------------------------------------------------------------------------------------------
step "upgrade"
a2dismod -q "$MOD" >/dev/null
timeout 300 dpkg -i "$DEB" >"$WORK/upgrade.log" 2>&1 || fail "dpkg -i over the installed package: $(tail -5 "$WORK/upgrade.log")"
q=$(a2query -m "$MOD" 2>&1) && fail "an upgrade re-enabled the module the admin disabled: $q"
[ -f "$SO" ] || fail "$SO is gone after the upgrade"
a2enmod -q "$MOD" >/dev/null
timeout 300 dpkg -i "$DEB" >"$WORK/upgrade.log" 2>&1 || fail "dpkg -i over the installed package: $(tail -5 "$WORK/upgrade.log")"
q=$(a2query -m "$MOD" 2>&1) || fail "an upgrade disabled the enabled module: $q"
say "upgrade keeps the admin's choice (disabled stays disabled, enabled stays enabled)"

# ---------------------------------------------------------------------------------------------
step "remove"
timeout 300 "${APT[@]}" remove "$PKG" >"$WORK/remove.log" 2>&1 || fail "apt-get remove failed: $(tail -5 "$WORK/remove.log")"
[ ! -e "$SO" ] || fail "$SO is still there after apt-get remove"
[ ! -e "$CONFDIR/mods-enabled/$MOD.load" ] || fail "$MOD is still enabled after apt-get remove"
st=$(dpkg-query -W -f='${Status}' "$PKG")
[ "$st" = "deinstall ok config-files" ] || fail "dpkg says after apt-get remove: $st"
[ -f "$CONFDIR/mods-available/$MOD.conf" ] || fail "apt-get remove deleted the conffile $MOD.conf"

step "purge"
timeout 300 "${APT[@]}" purge "$PKG" >"$WORK/purge.log" 2>&1 || fail "apt-get purge failed: $(tail -5 "$WORK/purge.log")"
INSTALLED=0
for f in "$SO" "$CONFDIR/mods-available/$MOD.load" "$CONFDIR/mods-available/$MOD.conf" \
    "$CONFDIR/mods-enabled/$MOD.load" "$CONFDIR/mods-enabled/$MOD.conf"; do
    [ ! -e "$f" ] && [ ! -L "$f" ] || fail "$f is still there after apt-get purge"
done
left=$(find /var/lib/apache2 -name "$MOD" 2>/dev/null || true)
[ -z "$left" ] || fail "a2enmod state left after the purge: $left"
! pkg_present || fail "dpkg still knows $PKG: $(dpkg-query -W -f='${Status}' "$PKG")"
restore_config
timeout 60 apache2ctl -t >"$WORK/configtest.after" 2>&1 || fail "apache2ctl -t after the purge: $(cat "$WORK/configtest.after")"
cmp -s "$WORK/configtest.before" "$WORK/configtest.after" \
    || fail "apache2ctl -t says something else after the purge: $(cat "$WORK/configtest.after")"
say "purged: module, configuration and a2enmod state gone; apache2ctl -t as before"
