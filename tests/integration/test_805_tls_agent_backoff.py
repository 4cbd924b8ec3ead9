# SPDX-License-Identifier: Apache-2.0
"""test_805_tls_agent_backoff.py - issue 18.6: an https:// agent whose TLS handshake fails (its
certificate does not verify) is tried with a bounded exponential back-off, like every other
agent failure, not at every flush: with DDFlushInterval 100 and steady traffic for 3 s, each
child makes a handful of connection attempts instead of one per flush (about 30).

The agent is a local TLS server with a self-signed certificate made at test time (openssl req
-x509), which counts the TCP connections it accepts and completes no handshake (curl refuses
the certificate). Every chunk of the window ends up counted as dropped (agent_error) by the
attempt that carried it: during a wait chunks are held in the queue, never lost from the
counters; and the second test shows the hold pays off when the agent comes back.
"""

import os
import shutil
import socket
import ssl
import subprocess
import tempfile
import threading
import time

import pytest

from helpers import NOT_MPM, child_pids, counters, dump, status_location, unique_ua

pytestmark = NOT_MPM

ALLOW_LOG = [r"\[dd_proxy:warn\] .*DDP1002: cannot deliver traces to the agent"]
RUN_S = 3.0
FLUSH_MS = 100
# back-off: 250 ms after the first failure, doubling (250, 500, 1000, 2000 ms): attempts at
# about 0, 0.25, 0.75, 1.75 s in a 3 s window, plus the GET /info at the flusher's start
MAX_PER_CHILD = 7


class TlsAgent:
    """A TLS listener on 127.0.0.1 with a self-signed certificate; counts accepted connections
    and lets each handshake fail (the client rejects the certificate and hangs up)."""

    def __init__(self, tmp):
        cert, key = os.path.join(tmp, "cert.pem"), os.path.join(tmp, "key.pem")
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                        "-subj", "/CN=127.0.0.1", "-keyout", key, "-out", cert],
                       check=True, capture_output=True, timeout=60)
        self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.ctx.load_cert_chain(cert, key)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.url = f"https://127.0.0.1:{self.port}"
        self.accepted = []  # monotonic times
        self.handshakes_done = 0
        self.lock = threading.Lock()
        self.stopping = False
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        while not self.stopping:
            try:
                conn, _ = self.sock.accept()
            except (socket.timeout, OSError):
                continue
            with self.lock:
                self.accepted.append(time.monotonic())
            threading.Thread(target=self._handshake, args=(conn,), daemon=True).start()

    def _handshake(self, conn):
        conn.settimeout(3)
        try:
            with self.ctx.wrap_socket(conn, server_side=True) as s:
                with self.lock:
                    self.handshakes_done += 1
                s.recv(1)
        except (ssl.SSLError, OSError):
            pass
        finally:
            conn.close()

    def count(self, since=0.0):
        with self.lock:
            return sum(1 for t in self.accepted if t >= since)

    def stop(self):
        self.stopping = True
        self.thread.join(timeout=5)
        self.sock.close()


@pytest.fixture
def tls_agent():
    if not shutil.which("openssl"):
        pytest.skip("no openssl command to make a certificate")
    tmp = tempfile.mkdtemp(prefix="ddtest-tls-")
    a = TlsAgent(tmp)
    try:
        yield a
    finally:
        a.stop()
        shutil.rmtree(tmp, ignore_errors=True)


def test_tls_handshake_failure_backs_off(httpd_factory, tls_agent):
    h = httpd_factory("tls-backoff", config="\n".join([
        f"DDAgentURL {tls_agent.url}",
        f"DDFlushInterval {FLUSH_MS}",
        status_location(),
    ]))
    children = child_pids(h)
    assert children, "no httpd children"
    # steady traffic over RUN_S: a request every 20 ms, spread over the children by new
    # connections, so that every flush of every child has something to send
    t0 = time.monotonic()
    n = 0
    while time.monotonic() - t0 < RUN_S:
        hdrs = {"User-Agent": unique_ua("tls"), "Connection": "close"}
        assert h.get("/index.html", headers=hdrs).status_code == 200
        n += 1
        time.sleep(0.02)
    took = time.monotonic() - t0
    time.sleep(0.3)
    attempts = tls_agent.count()
    c = counters(h)
    httpd_factory.finish(h)
    flushes = int(took * 1000 / FLUSH_MS)
    print(f"\n{h.mpm}: {n} requests in {took:.1f}s, {len(children)} children, "
          f"{attempts} TLS connections at the agent (one per flush would be ~{flushes} per "
          f"child), agent_errors {c['agent_errors']}, "
          f"dropped {c['chunks_dropped']['agent_error']}")
    assert tls_agent.handshakes_done == 0, "a handshake succeeded with an unverifiable cert"
    assert c["agent_errors"] > 0, dump(c)
    assert c["chunks_sent"] == 0, dump(c)
    assert "certificate" in c["last_agent_error"]["message"].lower() or \
        "ssl" in c["last_agent_error"]["message"].lower(), dump(c["last_agent_error"])
    assert attempts <= MAX_PER_CHILD * len(children), \
        (f"{attempts} connection attempts by {len(children)} children in {took:.1f}s of "
         f"flushes every {FLUSH_MS} ms: no back-off (at most {MAX_PER_CHILD} a child expected)")


def test_traces_made_during_the_wait_reach_an_agent_that_is_back(httpd_factory):
    """The wait holds new traces in the queue rather than dropping them: an agent that answers
    500 for a while and then recovers gets every trace made after it recovered, although the
    children are still inside a back-off of a second or more when it does."""
    from conftest import running_agent
    with running_agent() as a:
        h = httpd_factory("backoff-holds", config="\n".join([
            f"DDAgentURL {a.url}", f"DDFlushInterval {FLUSH_MS}", status_location()]))
        a.set_mode("status", status_code=500)
        t0 = time.monotonic()
        while time.monotonic() - t0 < 2.0:  # failures in a row: the wait grows past 1 s
            h.get("/index.html", headers={"User-Agent": unique_ua("fail"),
                                          "Connection": "close"})
            time.sleep(0.05)
        time.sleep(0.3)
        before = counters(h)
        assert before["agent_errors"] >= 2, dump(before)
        a.set_mode("ok")
        uas = [unique_ua("held") for _ in range(20)]
        for ua in uas:
            assert h.get("/index.html", headers={"User-Agent": ua,
                                                 "Connection": "close"}).status_code == 200
        deadline = time.monotonic() + 8
        seen = set()
        while time.monotonic() < deadline and len(seen) < len(uas):
            with a._lock:
                seen = {s["meta"].get("http.useragent") for c in a.traces for s in c} & set(uas)
            time.sleep(0.1)
        after = counters(h)
        httpd_factory.finish(h)
        assert len(seen) == len(uas), (f"{len(uas) - len(seen)} of {len(uas)} traces made "
                                       f"after the agent recovered were lost", dump(after))
        assert after["chunks_dropped"]["agent_error"] == before["chunks_dropped"]["agent_error"] \
            or after["chunks_sent"] >= len(uas), dump(after)
