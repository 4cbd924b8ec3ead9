# SPDX-License-Identifier: Apache-2.0
"""test_805_tls_agent_backoff.py - issue 18.6: an https:// agent whose TLS handshake fails (its
certificate does not verify) is tried with a bounded exponential back-off, like every other
agent failure, not at every flush: with DDFlushInterval 100 and steady traffic for 3 s, each
child makes a handful of connection attempts instead of one per flush (about 30).

The agent is a local TLS server with a self-signed certificate made at test time (openssl req
-x509), which counts the TCP connections it accepts and completes no handshake (curl refuses
the certificate). Every chunk of the window is counted as dropped (agent_error): none is kept
for a retry, and none is lost from the counters.
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
