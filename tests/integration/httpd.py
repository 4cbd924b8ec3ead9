# SPDX-License-Identifier: Apache-2.0
"""httpd.py - start, stop and inspect a real apache2 for the integration tests (pyhttpd style).

An `Httpd` owns a directory made with tempfile.mkdtemp and opened to 0755 (apache children run
as www-data because the tests run as root; pytest's tmp_path is 0700), holding conf/httpd.conf,
htdocs/ (an index.html), logs/ (error_log, access_log) and run/ (pid file, mutexes).

    h = Httpd("gateway", ports=2)       # h.port, h.ports[1] ...
    h.write_config(extra="...")         # appended at server level after the base config
    h.start()                           # apache2 -DFOREGROUND as our child; polls until it answers
    h.get("/index.html", port=h.ports[1], headers={...})
    h.stop()                            # SIGTERM, bounded wait for master and children

Configuration checks: `h.config_test(extra)` -> (rc, output) of `apache2 -t`.

Error log: `h.log_mark()` remembers the current end of error_log; `h.bad_log_lines(mark, allow)`
returns every [warn]/[error]/[crit]/[alert]/[emerg] line (and sanitizer reports) after it that
no allow regex matches.

Environment:
  DD_PROXY_MODULE    the module to load (default <repo>/.libs/mod_dd_proxy.so)
  DD_TEST_MPM        event (default), worker or prefork (pytest --mpm overrides)
  DD_PROXY_SANITIZE  contains "address" / "undefined" / "thread": preload libasan / libubsan /
                     libtsan (what `make check` passes: the module's -fsanitize flags)
  DD_TEST_VALGRIND   1: run apache2 (and its children) under valgrind's memcheck; a stop
                     fails when memcheck reported an error or a definite leak
"""

import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time

import requests

APACHE2 = os.environ.get("APACHE2", "/usr/sbin/apache2")
MODULES_DIR = "/usr/lib/apache2/modules"
REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
DEFAULT_MODULE = os.path.join(REPO, ".libs", "mod_dd_proxy.so")
MPMS = ("event", "worker", "prefork")
BASE_MODULES = ("authz_core", "mime", "dir", "alias", "proxy", "proxy_http", "status")

ACCESS_LOG_FORMAT = ('"%h %t \\"%r\\" %>s \\"%{User-Agent}i\\" '
                     '%{dd.trace_id}n %{dd.span_id}n"')

# [Sun Nov 22 04:25:07.354410 2026] [core:warn] [pid 4512:tid 4512] AH00111: ...
_LEVEL_RE = re.compile(r"\[(?:[\w.-]*:)?(warn|error|crit|alert|emerg)\]")
# Crashes and sanitizer reports, whatever their log level (a child's crash is only a notice).
_SANITIZER_RE = re.compile(r"ERROR: AddressSanitizer|ERROR: LeakSanitizer|runtime error:"
                           r"|WARNING: ThreadSanitizer"
                           r"|SUMMARY: (?:Address|Undefined)|AH00052|exit signal")


def module_path():
    return os.environ.get("DD_PROXY_MODULE") or DEFAULT_MODULE


def module_built():
    return os.path.isfile(module_path())


def default_mpm():
    mpm = os.environ.get("DD_TEST_MPM") or "event"
    if mpm not in MPMS:
        raise ValueError(f"DD_TEST_MPM={mpm!r}: one of {MPMS}")
    return mpm


_ports_given = set()


def free_port():
    """A loopback port nothing listens on now and that this test run has not
    handed out before: the kernel may offer a port again as soon as its probe
    socket closes, and two Listen lines on one port make httpd refuse its
    configuration (CI once drew the same port for both of a server's Listens)."""
    for _ in range(200):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port not in _ports_given:
            _ports_given.add(port)
            return port
    raise RuntimeError("no fresh loopback port in 200 tries")


def make_shared_dir(prefix):
    """A fresh directory the www-data children can read (and traverse)."""
    d = tempfile.mkdtemp(prefix=prefix)
    os.chmod(d, 0o755)
    return d


def sanitizer_env():
    """(extra environment, enabled names) for DD_PROXY_SANITIZE."""
    want = os.environ.get("DD_PROXY_SANITIZE", "")
    libs, names = [], []
    for name, lib in (("address", "libasan.so"), ("undefined", "libubsan.so"),
                      ("thread", "libtsan.so")):
        if name in want:
            path = subprocess.run(["gcc", f"-print-file-name={lib}"], capture_output=True,
                                  text=True).stdout.strip()
            if not path or not os.path.isabs(path):
                raise RuntimeError(f"DD_PROXY_SANITIZE={want!r} but gcc does not know {lib}")
            libs.append(path)
            names.append(name)
    env = {}
    if libs:
        env["LD_PRELOAD"] = ":".join(libs)
        env["ASAN_OPTIONS"] = "detect_leaks=0:abort_on_error=0:halt_on_error=1"
        env["UBSAN_OPTIONS"] = "print_stacktrace=1"
        env["TSAN_OPTIONS"] = "halt_on_error=0"
    return env, names


class HttpdError(Exception):
    pass


def valgrind_on():
    return os.environ.get("DD_TEST_VALGRIND", "") not in ("", "0")


_VG_SUMMARY_RE = re.compile(r"ERROR SUMMARY: (\d+) errors")


class Httpd:
    def __init__(self, name="httpd", ports=1, module=True, mpm=None, env=None,
                 log_level="info", debug_module=True, keep=False):
        """module: True = load mod_dd_proxy (must be built), False = never load it,
        "if-built" = load it when the file exists (harness self-test only)."""
        self.name = name
        self.mpm = mpm or default_mpm()
        if module == "if-built":
            module = module_built()
        if module and not module_built():
            raise HttpdError(f"module not built: {module_path()} (run make, or set "
                             "DD_PROXY_MODULE)")
        self.module = bool(module)
        self.dir = make_shared_dir(f"ddtest-{name}-")
        self.conf_dir = os.path.join(self.dir, "conf")
        self.docroot = os.path.join(self.dir, "htdocs")
        self.logs_dir = os.path.join(self.dir, "logs")
        self.run_dir = os.path.join(self.dir, "run")
        for d in (self.conf_dir, self.docroot, self.logs_dir, self.run_dir):
            os.mkdir(d)
            os.chmod(d, 0o755)
        self.write_file("index.html", "<html><body>dd_proxy test</body></html>\n")
        self.conf_path = os.path.join(self.conf_dir, "httpd.conf")
        self.error_log = os.path.join(self.logs_dir, "error_log")
        self.access_log = os.path.join(self.logs_dir, "access_log")
        self.stderr_path = os.path.join(self.logs_dir, "stderr")
        self.ports = [free_port() for _ in range(ports)]
        self.port = self.ports[0]
        self.extra_env = dict(env or {})
        self.log_level = log_level
        self.debug_module = debug_module
        self.keep = keep or bool(os.environ.get("DD_TEST_KEEP"))
        self.max_children = 16 if self.mpm == "prefork" else 4  # ServerLimit below
        self.proc = None
        self.session = requests.Session()
        self.last_config = None
        self.write_config()

    # --- files -----------------------------------------------------------------------------
    def write_file(self, rel, text, mtime=None):
        """Writes a file under the docroot (readable by www-data)."""
        path = os.path.join(self.docroot, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as f:
            f.write(text)
        os.chmod(path, 0o644)
        if mtime is not None:
            os.utime(path, (mtime, mtime))
        return path

    def base_config(self):
        mods = [f"LoadModule mpm_{self.mpm}_module {MODULES_DIR}/mod_mpm_{self.mpm}.so"]
        mods += [f"LoadModule {m}_module {MODULES_DIR}/mod_{m}.so" for m in BASE_MODULES]
        if self.module:
            mods.append(f"LoadModule dd_proxy_module {module_path()}")
        level = self.log_level
        if self.module and self.debug_module:
            level += " dd_proxy:debug"
        listen = "\n".join(f"Listen 127.0.0.1:{p}" for p in self.ports)
        mpm_tuning = {
            "prefork": ("StartServers 2\nMinSpareServers 1\nMaxSpareServers 4\nServerLimit 16\n"
                        "MaxRequestWorkers 16"),
            "worker": ("StartServers 2\nServerLimit 4\nThreadsPerChild 16\nMaxRequestWorkers 64\n"
                       "MinSpareThreads 8\nMaxSpareThreads 64"),
            "event": ("StartServers 2\nServerLimit 4\nThreadsPerChild 16\nMaxRequestWorkers 64\n"
                      "MinSpareThreads 8\nMaxSpareThreads 64"),
        }[self.mpm]
        return f"""# generated by tests/integration/httpd.py for {self.name}
ServerRoot "{self.dir}"
DefaultRuntimeDir "{self.run_dir}"
PidFile "{self.run_dir}/httpd.pid"
Mutex file:{self.run_dir} default
{chr(10).join(mods)}
User www-data
Group www-data
ServerName 127.0.0.1
{listen}
{mpm_tuning}
Timeout 10
GracefulShutdownTimeout 5
KeepAlive On
ErrorLog "{self.error_log}"
LogLevel {level}
LogFormat {ACCESS_LOG_FORMAT} ddtest
CustomLog "{self.access_log}" ddtest
TypesConfig /etc/mime.types
DocumentRoot "{self.docroot}"
<Directory "{self.docroot}">
    Require all granted
</Directory>
DirectoryIndex index.html
"""

    def write_config(self, extra=""):
        """Base config + extra (server level; vhosts, DD directives ...)."""
        text = self.base_config() + "\n# --- test config ---\n" + extra + "\n"
        with open(self.conf_path, "w") as f:
            f.write(text)
        self.last_config = text
        return self.conf_path

    # --- processes ---------------------------------------------------------------------------
    def _env(self):
        env = dict(os.environ)
        # Nothing from the developer's shell should configure the module behind our back.
        for k in list(env):
            if k.startswith("DD_") and k not in ("DD_PROXY_MODULE", "DD_PROXY_SANITIZE",
                                                 "DD_TEST_MPM", "DD_TEST_KEEP"):
                del env[k]
        san, _ = sanitizer_env()
        env.update(san)
        env.update(self.extra_env)
        return env

    def config_test(self, extra=None):
        """`apache2 -t` on the current config (or base + extra). Returns (rc, output)."""
        if extra is not None:
            self.write_config(extra)
        p = subprocess.run([APACHE2, "-t", "-f", self.conf_path], env=self._env(),
                           capture_output=True, text=True, timeout=30)
        return p.returncode, (p.stdout + p.stderr)

    def start(self, timeout=10.0):
        if self.proc is not None:
            raise HttpdError("already started")
        self._stderr = open(self.stderr_path, "ab")
        cmd = [APACHE2, "-f", self.conf_path, "-DFOREGROUND"]
        if valgrind_on():
            cmd = ["valgrind", "--leak-check=full", "--errors-for-leak-kinds=definite",
                   "--show-leak-kinds=definite", "--num-callers=30",
                   f"--log-file={self.logs_dir}/valgrind.%p.log"] + cmd
            timeout *= 6
        self.proc = subprocess.Popen(cmd,
                                     env=self._env(), stdin=subprocess.DEVNULL,
                                     stdout=self._stderr, stderr=self._stderr,
                                     start_new_session=True)
        self.pgid = self.proc.pid  # start_new_session: the master leads its own group
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                rc = self.proc.returncode
                self.proc = None
                raise HttpdError(f"apache2 exited with {rc} at start:\n{self.diagnostics()}")
            if self.is_live():
                return self
            time.sleep(0.05)
        self.stop()
        raise HttpdError(f"apache2 did not answer within {timeout}s:\n{self.diagnostics()}")

    def check_valgrind(self):
        """Raises when any process's memcheck log reports errors (or definite leaks)."""
        bad = []
        for name in sorted(os.listdir(self.logs_dir)):
            if not name.startswith("valgrind."):
                continue
            text = self._read(os.path.join(self.logs_dir, name))
            for m in _VG_SUMMARY_RE.finditer(text):
                if int(m.group(1)):
                    bad.append(f"{name}:\n{text[-6000:]}")
        if bad:
            raise HttpdError("valgrind memcheck found errors:\n" + "\n".join(bad))

    def is_live(self):
        try:
            r = self.session.get(f"http://127.0.0.1:{self.port}/", timeout=1,
                                 headers={"User-Agent": "ddtest-ready"})
            return r.status_code > 0
        except requests.RequestException:
            return False

    def _group_alive(self):
        try:
            os.killpg(self.pgid, 0)
            return True
        except ProcessLookupError:
            return False
        except PermissionError:
            return True

    def stop(self, timeout=15.0):
        """graceful-stop (SIGWINCH) to the master; waits (bounded) for it and its children.
        Returns seconds. Not SIGTERM: httpd 2.4's event MPM can crash a child in its own
        close_worker_sockets() when an ungraceful stop races a worker finishing a connection
        (seen here as AH00052 with the child's main thread in signal_threads(ST_UNGRACEFUL));
        the module's own stop path is the same for both, and test_870 sends -k stop itself."""
        if self.proc is None:
            return 0.0
        self.session.close()
        t0 = time.monotonic()
        try:
            self.proc.send_signal(signal.SIGWINCH)
        except ProcessLookupError:
            pass
        killed = False
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            killed = True
        deadline = time.monotonic() + (0 if killed else 5.0)
        while self._group_alive() and time.monotonic() < deadline:
            time.sleep(0.05)
        if self._group_alive():
            killed = True
            try:
                os.killpg(self.pgid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                pass
        self.proc = None
        self._stderr.close()
        took = time.monotonic() - t0
        if valgrind_on():
            self.check_valgrind()
        if killed:
            raise HttpdError(f"apache2 did not stop within {timeout}s; killed it")
        return took

    def restart(self, extra=None):
        self.stop()
        if extra is not None:
            self.write_config(extra)
        return self.start()

    def cleanup(self):
        if self.proc is not None:
            try:
                self.stop()
            except HttpdError:
                pass
        self.session.close()
        if not self.keep:
            shutil.rmtree(self.dir, ignore_errors=True)

    # --- requests ----------------------------------------------------------------------------
    def url(self, path, port=None):
        return f"http://127.0.0.1:{port or self.port}{path}"

    def request(self, method, path, port=None, headers=None, **kw):
        kw.setdefault("timeout", 10)
        kw.setdefault("allow_redirects", False)
        url = self.url(path, port)
        try:
            return self.session.request(method, url, headers=headers or {}, **kw)
        except requests.exceptions.ConnectionError as e:
            # A kept-alive connection that httpd closed (KeepAliveTimeout) just as it was
            # reused: a GET is sent once more, on a new connection. A child that crashed is
            # not hidden by this: every test's error_log check reports "exit signal".
            if method not in ("GET", "HEAD") or "RemoteDisconnected" not in repr(e):
                raise
            return self.session.request(method, url, headers=headers or {}, **kw)

    def get(self, path, port=None, headers=None, **kw):
        return self.request("GET", path, port, headers, **kw)

    # --- logs --------------------------------------------------------------------------------
    def _read(self, path, offset=0):
        try:
            with open(path, "rb") as f:
                f.seek(offset)
                return f.read().decode("utf-8", "replace")
        except FileNotFoundError:
            return ""

    def log_mark(self):
        """The current size of (error_log, stderr): pass to bad_log_lines()."""
        sizes = []
        for p in (self.error_log, self.stderr_path):
            try:
                sizes.append(os.path.getsize(p))
            except FileNotFoundError:
                sizes.append(0)
        return tuple(sizes)

    def error_log_text(self, mark=(0, 0)):
        return self._read(self.error_log, mark[0])

    def bad_log_lines(self, mark=(0, 0), allow=()):
        """Unexpected warn/error/... lines and sanitizer reports since mark."""
        pats = [re.compile(a) for a in allow]
        bad = []
        for text in (self._read(self.error_log, mark[0]), self._read(self.stderr_path, mark[1])):
            for line in text.splitlines():
                if _LEVEL_RE.search(line) or _SANITIZER_RE.search(line):
                    if not any(p.search(line) for p in pats):
                        bad.append(line)
        return bad

    def access_log_lines(self):
        return self._read(self.access_log).splitlines()

    def access_log_line_for(self, needle, timeout=3.0):
        """The access log line containing needle (e.g. a unique User-Agent)."""
        deadline = time.monotonic() + timeout
        while True:
            found = [ln for ln in self.access_log_lines() if needle in ln]
            if found or time.monotonic() > deadline:
                return found
            time.sleep(0.05)

    def diagnostics(self, lines=30):
        err = self._read(self.error_log).splitlines()[-lines:]
        out = self._read(self.stderr_path).splitlines()[-lines:]
        return ("--- error_log (tail) ---\n" + "\n".join(err) +
                "\n--- stderr (tail) ---\n" + "\n".join(out))


def vhost(port, body):
    """A <VirtualHost 127.0.0.1:port> block."""
    return f"<VirtualHost 127.0.0.1:{port}>\n    ServerName 127.0.0.1\n{body}\n</VirtualHost>\n"


def if_module(body):
    """Wrap DD directives so the same config also runs without the module (comparisons)."""
    return f"<IfModule dd_proxy_module>\n{body}\n</IfModule>\n"
