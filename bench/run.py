#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""bench/run.py - the benchmarks of mod_dd_proxy (issue 7). Start it through bench/run.sh,
which builds the module, the microbenchmark and the sink first.

Default: the lib/ microbenchmark, then the httpd table: every case below, at concurrency 1
and 64, for a static 1 KB file and for the same file through mod_proxy, in interleaved rounds
(round r runs every case once, in an order rotated by r, so drift hits all cases alike).

  baseline       httpd without the module (the physical limit)
  off            the module loaded, `DDTrace Off`
  on, none       tracing on, no gateway headers (as many other headers instead)
  on, <gateway>  tracing on with the x-dd-proxy* headers of aws-apigateway, aws-httpapi,
                 azure-apim (an inferred span per request)

Three httpd instances run side by side for the whole benchmark (no restarts between cases):
no module / module with DDTrace Off / module tracing with DDInferredProxy On. They share the
machine's two cores with wrk, a stand-in agent and the backend (bench/sink.c: one epoll thread
each), as a real host shares them with its agent.

--client-stats (issue 13.2): both agent stand-ins answer as an agent that takes client-side
stats (GET /info announces /v0.6/stats and client_drop_p0s) and keeps 1 % of traces (rate 0.01
for every service); the "on" httpd still sends every trace (DDClientStats Off), a fourth one
(DDClientStats On, its own agent stand-in) computes the stats and sends only the kept traces.
The verdict compares their added CPU per request.

Modes: --quick (about 2 minutes), --soak (1,000,000 requests, RSS per child over time),
--micro (only the microbenchmark), --httpd (only the httpd table).
"""

import argparse
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
LUA = os.path.join(HERE, "wrk.lua")
APACHE2 = os.environ.get("APACHE2", "/usr/sbin/apache2")
MODULES_DIR = "/usr/lib/apache2/modules"
TICK = os.sysconf("SC_CLK_TCK")
PAGE_KB = os.sysconf("SC_PAGE_SIZE") // 1024
NCPU = os.cpu_count() or 1

GATEWAYS = ("aws-apigateway", "aws-httpapi", "azure-apim")
# (case name, instance key, wrk header set)
CASES = [("baseline", "base", "aws-apigateway"),
         ("DDTrace Off", "off", "aws-apigateway"),
         ("on, no gateway", "on", "none")] + \
        [(f"on, {g}", "on", g) for g in GATEWAYS]
COMPARE_LABEL = "B"


def add_compare_cases(label):
    """--compare-module: the tracing cases again, with another build of the module."""
    global COMPARE_LABEL
    COMPARE_LABEL = label
    CASES.extend([(f"{label}: on, no gateway", "cmp", "none")] +
                 [(f"{label}: on, {g}", "cmp", g) for g in GATEWAYS])
PATHS = {"static": "/static.html", "proxy": "/proxy/static.html"}


class XRayStub:
    """--xray: a stand-in X-Ray daemon: UDP datagrams counted (nothing else done with them), and
    a sampling API whose one rule samples every request (rate 1), so every request of the
    X-Ray case builds, queues and sends a segment (the most X-Ray can cost)."""

    def __init__(self):
        import http.server
        self.count = 0
        self.udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.udp.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
        self.udp.bind(("127.0.0.1", 0))
        rules = json.dumps({"SamplingRuleRecords": [{"SamplingRule": {
            "RuleName": "all", "ResourceARN": "*", "Priority": 1, "FixedRate": 1.0,
            "ReservoirSize": 0, "ServiceName": "*", "ServiceType": "*", "Host": "*",
            "HTTPMethod": "*", "URLPath": "*", "Version": 1}}]}).encode()

        class Api(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                body = rules if self.path == "/GetSamplingRules" else b"{}"
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *a):
                pass

        self.api = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Api)
        for target in (self._recv, self.api.serve_forever):
            threading.Thread(target=target, daemon=True).start()
        self.address = (f"tcp:127.0.0.1:{self.api.server_address[1]} "
                        f"udp:127.0.0.1:{self.udp.getsockname()[1]}")

    def _recv(self):
        while True:
            self.udp.recv(70000)
            self.count += 1

TARGETS = {"gateway_ratio_c64": 0.97, "off_ratio_c64": 0.99, "p99_added_c1_us": 50,
           "micro_ns": 2000, "flusher_spans_s": 500000}


NICE = 0


def renice(pid):
    """--nice: the process's nice value and, with the scheduler's autogroups (each session its
    own group, sharing the CPUs fairly with the other groups), its group's."""
    if not NICE:
        return
    try:
        os.setpriority(os.PRIO_PROCESS, pid, NICE)
        with open(f"/proc/{pid}/autogroup", "w") as f:
            f.write(str(NICE))
    except OSError:
        pass


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --- /proc ---------------------------------------------------------------------------------

def read(path, default=""):
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return default


def proc_cpu_ticks(pid, tid=None):
    """utime + stime in clock ticks of a process (all its threads) or of one thread."""
    path = f"/proc/{pid}/stat" if tid is None else f"/proc/{pid}/task/{tid}/stat"
    s = read(path)
    if not s:
        return 0
    fields = s[s.rindex(")") + 2:].split()
    return int(fields[11]) + int(fields[12])


def thread_cpu_ns(pid, tid):
    """On-CPU time of one thread in ns (schedstat), else utime+stime."""
    s = read(f"/proc/{pid}/task/{tid}/schedstat")
    if s:
        return int(s.split()[0])
    return proc_cpu_ticks(pid, tid) * 1_000_000_000 // TICK


def rss_kb(pid):
    for line in read(f"/proc/{pid}/status").splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def system_busy_ticks():
    """(busy, total) clock ticks of all CPUs from /proc/stat (steal counts as neither)."""
    f = [int(x) for x in read("/proc/stat").splitlines()[0].split()[1:]]
    user, nice, system, idle, iowait, irq, softirq = f[:7]
    busy = user + nice + system + irq + softirq
    return busy, busy + idle + iowait


def children_of(ppid):
    out = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        s = read(f"/proc/{d}/stat")
        if not s:
            continue
        fields = s[s.rindex(")") + 2:].split()
        if int(fields[1]) == ppid:
            out.append(int(d))
    return sorted(out)


def flusher_threads(pid):
    """The flusher thread(s) of an httpd child: by name when the module names it (a comm
    containing "flush"), else the first thread the child made: child_init, where the module
    starts its flusher, runs before the MPM starts any thread of its own."""
    try:
        tids = sorted(int(t) for t in os.listdir(f"/proc/{pid}/task"))
    except OSError:
        return [], "gone"
    named = [t for t in tids if "flush" in read(f"/proc/{pid}/task/{t}/comm").lower()]
    if named:
        return named, "by name"
    others = [t for t in tids if t != pid]
    return (others[:1], "first thread") if others else ([], "none")


# --- processes -----------------------------------------------------------------------------

class Sink:
    """bench/sink.c in one role: "agent" (the stand-in Datadog agent) or "static" (backend)."""

    def __init__(self, binary, mode, max_seconds):
        self.mode = mode
        self.proc = subprocess.Popen([binary, mode, "0", "--max-seconds", str(int(max_seconds))],
                                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                     text=True, start_new_session=True)
        renice(self.proc.pid)
        line = self.proc.stdout.readline()
        if not line.startswith("PORT "):
            raise RuntimeError(f"sink {mode} did not start")
        self.port = int(line.split()[1])

    def cpu_ticks(self):
        return proc_cpu_ticks(self.proc.pid)

    def stats(self):
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/stats", timeout=5) as r:
            return json.loads(r.read())

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


class Apache:
    def __init__(self, key, workdir, module, dd_conf, backend_port):
        self.key = key
        self.dir = os.path.join(workdir, key)
        self.port = free_port()
        self.proc = None
        for d in ("conf", "logs", "run"):
            os.makedirs(os.path.join(self.dir, d), exist_ok=True)
        os.chmod(self.dir, 0o755)
        mods = ["mpm_event", "authz_core", "mime", "proxy", "proxy_http"]
        lines = [f"LoadModule {m}_module {MODULES_DIR}/mod_{m}.so" for m in mods]
        if module:
            lines.append(f"LoadModule dd_proxy_module {module}")
        user = "User www-data\nGroup www-data\n" if os.geteuid() == 0 else ""
        self.conf = os.path.join(self.dir, "conf", "httpd.conf")
        self.error_log = os.path.join(self.dir, "logs", "error_log")
        with open(self.conf, "w") as f:
            f.write(f"""# bench/run.py: {key}
ServerRoot "{self.dir}"
DefaultRuntimeDir "{self.dir}/run"
PidFile "{self.dir}/run/httpd.pid"
Mutex file:{self.dir}/run default
{chr(10).join(lines)}
{user}ServerName 127.0.0.1
Listen 127.0.0.1:{self.port}
# a fixed number of processes and threads: nothing is started or stopped during a run
StartServers 2
ServerLimit 2
ThreadLimit 64
ThreadsPerChild 64
MaxRequestWorkers 128
MinSpareThreads 32
MaxSpareThreads 128
MaxConnectionsPerChild 0
KeepAlive On
MaxKeepAliveRequests 0
KeepAliveTimeout 30
Timeout 30
ErrorLog "{self.error_log}"
LogLevel warn
# no access log, in every case
TypesConfig /etc/mime.types
DocumentRoot "{workdir}/htdocs"
<Directory "{workdir}/htdocs">
    Require all granted
</Directory>
ProxyPass "/proxy/" "http://127.0.0.1:{backend_port}/"
{dd_conf}
""")

    def start(self):
        env = {k: v for k, v in os.environ.items() if not k.startswith("DD_")}
        self.stderr = open(os.path.join(self.dir, "logs", "stderr"), "ab")
        self.proc = subprocess.Popen([APACHE2, "-f", self.conf, "-DFOREGROUND"], env=env,
                                     stdin=subprocess.DEVNULL, stdout=self.stderr,
                                     stderr=self.stderr, start_new_session=True)
        renice(self.proc.pid)  # before it forks its children, which inherit it
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"apache2 ({self.key}) exited at start:\n"
                                   + read(self.error_log)[-2000:])
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/static.html",
                                            timeout=1) as r:
                    if r.status == 200 and len(self.children()) == 2:
                        return
            except OSError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"apache2 ({self.key}) did not answer:\n" + read(self.error_log)[-2000:])

    def children(self):
        return children_of(self.proc.pid)

    def snapshot(self):
        snap = {"children": {}, "master_ticks": proc_cpu_ticks(self.proc.pid)}
        for pid in self.children():
            tids, how = flusher_threads(pid) if self.key != "base" else ([], "no module")
            snap["children"][pid] = {
                "ticks": proc_cpu_ticks(pid), "rss": rss_kb(pid),
                "flusher_ns": sum(thread_cpu_ns(pid, t) for t in tids),
                "flusher_ticks": sum(proc_cpu_ticks(pid, t) for t in tids), "how": how}
        return snap

    def stop(self):
        if self.proc is None:
            return
        try:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(15)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.proc.wait(5)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            try:
                os.killpg(self.proc.pid, 0)
                time.sleep(0.05)
            except ProcessLookupError:
                break
        self.proc = None
        self.stderr.close()

    def bad_log_lines(self):
        return [ln for ln in read(self.error_log).splitlines()
                if any(f":{lvl}]" in ln for lvl in ("warn", "error", "crit", "alert", "emerg"))]


def run_wrk(port, path, conc, seconds, headers):
    threads = 1 if conc == 1 else 2
    cmd = ["wrk", f"-t{threads}", f"-c{conc}", f"-d{seconds}s", "--latency", "--timeout", "5s",
           "-s", LUA, f"http://127.0.0.1:{port}{path}", "--", headers]
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        out, err = p.communicate(timeout=seconds + 30)
    except subprocess.TimeoutExpired:
        p.kill()
        out, err = p.communicate()
        raise RuntimeError(f"wrk did not finish: {' '.join(cmd)}")
    res = None
    for line in out.splitlines():
        if line.startswith("WRKJSON "):
            res = json.loads(line[8:])
    if res is None:
        raise RuntimeError(f"wrk printed no result: {' '.join(cmd)}\n{out}\n{err}")
    errors = sum(res[k] for k in res if k.startswith("err_"))
    if errors:
        log(f"  warning: wrk saw {errors} errors on {path} c={conc} ({headers}): {out[-400:]}")
    res["rps"] = res["requests"] / (res["duration_us"] / 1e6)
    return res


MODULE_ROOTS = ("post_read_request", "fixups", "log_transaction", "flusher_main")


def profile(args, workdir, sinks, insts):
    """--profile: the share of the tracing httpd's CPU spent in the module, from perf samples
    of its children (user and kernel, the flusher thread included) under c=64 load. A share
    does not move when the machine gets faster or slower, as req/s does on a VM."""
    if not shutil.which("perf"):
        sys.exit("--profile needs perf (apt-get install linux-perf)")
    out = []
    cases = [("on", "aws-apigateway", "static"), ("on", "none", "static"),
             ("on", "aws-apigateway", "proxy"), ("off", "aws-apigateway", "static")]
    if "cmp" in insts:
        cases.append(("cmp", "aws-apigateway", "static"))
    for key, headers, path in cases:
        inst = insts[key]
        data = os.path.join(workdir, f"perf-{key}-{headers}-{path}.data")
        pids = ",".join(str(p) for p in inst.children())
        rec = subprocess.Popen(["perf", "record", "-q", "-F", "499", "--call-graph", "dwarf,16384",
                                "-o", data, "-p", pids],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        time.sleep(1.0)
        others = [i for i in insts.values() if i is not inst]
        res = one_run(inst, others, sinks, PATHS[path], 64, args.duration, headers)
        rec.send_signal(signal.SIGINT)
        rec.wait(120)
        # perf script, not perf report --children: the report lists a symbol once per
        # mapping and per inlined copy, and adding those entries counts some samples twice.
        # Here a sample counts once for each hook it is under, and once for the module.
        rep = subprocess.run(["perf", "script", "-i", data, "-F", "ip,sym,dso"],
                             capture_output=True, text=True, timeout=900)
        counts, leaves, samples, inside = {}, {}, 0, 0
        for block in rep.stdout.split("\n\n"):
            frames = [ln.split(None, 1)[1] for ln in block.strip().splitlines()
                      if len(ln.split(None, 1)) > 1]
            if not frames:
                continue
            samples += 1
            roots = {r for r in MODULE_ROOTS for fr in frames
                     if fr.startswith(r + " ") and "mod_dd_proxy.so" in fr}
            inside += bool(roots)
            if roots:
                leaf = frames[0].split(" (")[0]
                leaves[leaf] = leaves.get(leaf, 0) + 1
            for r in roots:
                counts[r] = counts.get(r, 0) + 1
        shares = {r: c / max(1, samples) for r, c in counts.items()}
        total = inside / max(1, samples)
        n = res["requests"]
        h = res["httpd_cpu_s"] / n * 1e6
        w = (res["wrk_cpu_s"] + res["sink_cpu_s"]) / n * 1e6
        label = {"off": "DDTrace Off", "on": "on", "cmp": f"{args.compare_label}: on"}[key]
        out.append({"case": f"{label}, {headers}", "path": path,
                    "shares": shares, "share": total, "httpd_us": h, "other_us": w,
                    "leaves": sorted(((c / max(1, samples), f) for f, c in leaves.items()),
                                     reverse=True)[:15]})
        log(f"  profile {key} {headers} {path}: module {total:.1%} of httpd CPU "
            f"({', '.join(f'{k} {v:.1%}' for k, v in shares.items())}); httpd {h:.1f} µs/req, "
            f"wrk+sinks {w:.1f} µs/req")
        if not args.keep:
            os.unlink(data)
    print()
    print("### where the tracing httpd's CPU goes (perf, c=64, "
          f"{args.duration} s per case, children incl. kernel and the flusher thread)")
    print()
    print("| path | case | post_read_request | fixups | log_transaction | flusher thread | "
          "**module, in all** | httpd CPU µs/req | wrk + sinks µs/req | throughput if only "
          "the module's share were removed |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for x in out:
        sh = x["shares"]
        module_us = x["share"] * x["httpd_us"]
        # Without the module: httpd's own part of the CPU; wrk and the backend stay; the agent
        # sink's CPU is tracing's too, but it is not httpd's: left in, a bound in our favour.
        ratio = (x["httpd_us"] - module_us + x["other_us"]) / (x["httpd_us"] + x["other_us"])
        print(f"| {x['path']} | {x['case']} | " +
              " | ".join(f"{sh.get(k, 0):.1%}" for k in MODULE_ROOTS) +
              f" | **{x['share']:.1%}** | {x['httpd_us']:.1f} | {x['other_us']:.1f} | "
              f"{ratio:.1%} |")
    x = out[0]
    print()
    print(f"Inside the module ({x['path']}, {x['case']}): where the samples land (the function "
          "running, with what was inlined into it), in % of all the children's samples:")
    print()
    print("| % of httpd CPU | function |")
    print("|---:|---|")
    for share, f in x["leaves"]:
        print(f"| {share:.2%} | `{f}` |")
    return out


def self_ticks():
    """CPU ticks of this script's finished children (wrk) so far."""
    r = os.times()
    return (r.children_user + r.children_system) * TICK


# --- the httpd table -----------------------------------------------------------------------

def one_run(inst, others, sinks, path, conc, seconds, headers):
    b0, t0 = system_busy_ticks()
    w0 = self_ticks()
    s0 = inst.snapshot()
    o0 = {o.key: o.snapshot() for o in others}
    k0 = {id(s): s.cpu_ticks() for s in sinks}
    res = run_wrk(inst.port, path, conc, seconds, headers)
    s1 = inst.snapshot()
    o1 = {o.key: o.snapshot() for o in others}
    k1 = {id(s): s.cpu_ticks() for s in sinks}
    b1, t1 = system_busy_ticks()
    w1 = self_ticks()

    def httpd_ticks(a, b):
        t = b["master_ticks"] - a["master_ticks"]
        for pid, c in b["children"].items():
            t += c["ticks"] - a["children"].get(pid, {"ticks": 0})["ticks"]
        return t

    ours = httpd_ticks(s0, s1) + sum(httpd_ticks(o0[k], o1[k]) for k in o0) + \
        sum(k1[m] - k0[m] for m in k0) + (w1 - w0)
    res["httpd_cpu_s"] = httpd_ticks(s0, s1) / TICK
    res["wrk_cpu_s"] = (w1 - w0) / TICK
    res["sink_cpu_s"] = sum(k1[m] - k0[m] for m in k0) / TICK
    res["bg_cpu_pct"] = max(0.0, (b1 - b0) - ours) / max(1, t1 - t0) * 100.0
    res["flusher_s"] = sum(c["flusher_ns"] - s0["children"].get(pid, {"flusher_ns": 0})["flusher_ns"]
                           for pid, c in s1["children"].items()) / 1e9
    res["flusher_ticks_s"] = sum(c["flusher_ticks"] -
                                 s0["children"].get(pid, {"flusher_ticks": 0})["flusher_ticks"]
                                 for pid, c in s1["children"].items()) / TICK
    res["rss_before"] = {pid: c["rss"] for pid, c in s0["children"].items()}
    res["rss_after"] = {pid: c["rss"] for pid, c in s1["children"].items()}
    res["flusher_how"] = sorted({c["how"] for c in s1["children"].values()})
    res["children"] = sorted(s1["children"])
    return res


def fmt_rss(before, after):
    pids = sorted(set(before) | set(after))
    return " ".join(f"{before.get(p, 0) / 1024:.1f}→{after.get(p, 0) / 1024:.1f}" for p in pids)


def httpd_table(args, build, workdir, sinks, insts):
    rounds, seconds = args.rounds, args.duration
    groups = [(path, conc) for path in args.paths for conc in args.conc]
    runs = {}  # (path, conc, case) -> [result per round]
    total = rounds * len(groups) * len(CASES)
    log(f"== httpd: {rounds} rounds x {len(groups)} (path, concurrency) x {len(CASES)} cases "
        f"x {seconds} s = {total} runs, about {total * (seconds + 0.5) / 60:.1f} min")
    n = 0
    for r in range(rounds):
        for gi, (path, conc) in enumerate(groups):
            k = (r + gi) % len(CASES)
            order = CASES[k:] + CASES[:k]
            for name, key, headers in order:
                inst = insts[key]
                others = [i for i in insts.values() if i is not inst]
                res = one_run(inst, others, sinks, PATHS[path], conc, seconds, headers)
                runs.setdefault((path, conc, name), []).append((r, res))
                n += 1
                log(f"  [{n}/{total}] round {r + 1} {path:6} c={conc:<3} {name:22} "
                    f"{res['rps']:9.0f} req/s  p50 {res['p50']:5d} µs  p99 {res['p99']:6d} µs  "
                    f"bg {res['bg_cpu_pct']:4.1f}%")
    return runs


def summarize(runs, args):
    rows = []
    groups = [(path, conc) for path in args.paths for conc in args.conc]
    for path, conc in groups:
        base = dict(runs[(path, conc, "baseline")])
        for name, key, headers in CASES:
            rr = runs[(path, conc, name)]
            ratios = [res["rps"] / base[r]["rps"] for r, res in rr]
            d50 = [res["p50"] - base[r]["p50"] for r, res in rr]
            d99 = [res["p99"] - base[r]["p99"] for r, res in rr]
            reqs = sum(res["requests"] for _, res in rr)
            first, last = rr[0][1], rr[-1][1]
            rows.append({
                "path": path, "conc": conc, "case": name,
                "rps": statistics.median(res["rps"] for _, res in rr),
                "ratio": statistics.median(ratios), "ratio_min": min(ratios),
                "ratio_max": max(ratios),
                "p50": statistics.median(res["p50"] for _, res in rr),
                "p99": statistics.median(res["p99"] for _, res in rr),
                "p50_added": statistics.median(d50), "p99_added": statistics.median(d99),
                "cpu_us_req": statistics.median(res["httpd_cpu_s"] / res["requests"] * 1e6
                                                for _, res in rr),
                "flusher_s": sum(res["flusher_s"] for _, res in rr),
                "flusher_ticks_s": sum(res["flusher_ticks_s"] for _, res in rr),
                "flusher_us_req": sum(res["flusher_s"] for _, res in rr) / reqs * 1e6,
                "requests": reqs,
                "rss": fmt_rss(first["rss_before"], last["rss_after"]),
                "bg": max(res["bg_cpu_pct"] for _, res in rr),
                "flusher_how": sorted({h for _, res in rr for h in res["flusher_how"]}),
            })
    return rows


def print_table(rows, args):
    print()
    print(f"### httpd: {args.rounds} rounds × {args.duration} s per case, interleaved; "
          "medians over rounds (ratio and added latency: per round vs that round's baseline)")
    print()
    print("| path | c | case | req/s | ratio (min–max) | p50 µs | p99 µs | p50 added | p99 added "
          "| httpd CPU µs/req | flusher CPU s (µs/req) | RSS/child MB before→after | bg CPU % |")
    print("|---|---|---|---:|---|---:|---:|---:|---:|---:|---:|---|---:|")
    for x in rows:
        fl = "—" if x["case"] == "baseline" else f"{x['flusher_s']:.3f} ({x['flusher_us_req']:.2f})"
        print(f"| {x['path']} | {x['conc']} | {x['case']} | {x['rps']:.0f} | "
              f"{x['ratio']:.3f} ({x['ratio_min']:.3f}–{x['ratio_max']:.3f}) | {x['p50']:.0f} | "
              f"{x['p99']:.0f} | {x['p50_added']:+.0f} | {x['p99_added']:+.0f} | "
              f"{x['cpu_us_req']:.1f} | {fl} | {x['rss']} | {x['bg']:.0f} |")
    hows = sorted({h for x in rows for h in x["flusher_how"]} - {"no module"})
    print()
    print(f"flusher threads found: {', '.join(hows) or 'none'}; bg CPU % = CPU used during the "
          "run by processes other than the benchmark's own (httpd, wrk, sinks), in % of all "
          f"{NCPU} CPUs (the worst round)")


def verdicts(rows, micro):
    out = []

    def row(path, conc, case):
        for x in rows:
            if (x["path"], x["conc"], x["case"]) == (path, conc, case):
                return x
        return None

    for prefix in ("", f"{COMPARE_LABEL}: "):
        what = f" [{COMPARE_LABEL}]" if prefix else ""
        for path in PATHS:
            if row(path, 64, f"{prefix}on, no gateway") is None:
                continue
            r64 = [row(path, 64, f"{prefix}on, {g}") for g in GATEWAYS]
            if all(r64):
                worst = min(r64, key=lambda x: x["ratio"])
                out.append((f"throughput with gateway spans ≥ 97% of baseline at c=64 "
                            f"({path}){what}",
                            f"{worst['ratio'] * 100:.1f}% (worst: {worst['case']})",
                            worst["ratio"] >= TARGETS["gateway_ratio_c64"]))
            off = row(path, 64, "DDTrace Off")
            if off and not prefix:
                out.append((f"throughput with DDTrace Off ≥ 99% at c=64 ({path})",
                            f"{off['ratio'] * 100:.1f}%",
                            off["ratio"] >= TARGETS["off_ratio_c64"]))
            names = [c for c, key, _ in CASES
                     if key != "base" and (key == "cmp") == bool(prefix)]
            r1 = [row(path, 1, c) for c in names]
            if r1 and all(r1):
                worst = max(r1, key=lambda x: x["p99_added"])
                out.append((f"p99 latency added ≤ 50 µs at c=1 ({path}){what}",
                            f"{worst['p99_added']:+.0f} µs (worst: {worst['case']})",
                            worst["p99_added"] <= TARGETS["p99_added_c1_us"]))
    if micro:
        ns = micro.get("aws-apigateway", {}).get("pipeline")
        if ns is not None:
            out.append(("parse + spans + encode + enqueue ≤ 2 µs per request (aws-apigateway), "
                        "as measured", f"{ns:.0f} ns", ns <= TARGETS["micro_ns"]))
        cyc = micro.get("aws-apigateway", {}).get("pipeline_cycles")
        if cyc:
            ghz = micro["aws-apigateway"]["ghz"]
            out.append(("parse + spans + encode + enqueue ≤ 2 µs per request (aws-apigateway), "
                        f"in cycles at the CPU's nominal 2.5 GHz (the vCPU ran at {ghz:.2f} GHz)",
                        f"{cyc:,.0f} cycles = {cyc / 2.5:.0f} ns",
                        cyc / 2.5 <= TARGETS["micro_ns"]))
        fl = micro.get("flusher_fake")
        if fl is not None:
            out.append(("flusher ≥ 500,000 spans/s on one core", f"{fl:,.0f} spans/s",
                        fl >= TARGETS["flusher_spans_s"]))
    return out


# --- microbenchmark ------------------------------------------------------------------------

def run_micro(build, quick):
    exe = os.path.join(build, "bench-bin", "micro")
    cmd = [exe] + (["--quick"] if quick else [])
    log(f"== microbenchmark: {' '.join(cmd)}")
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    if p.returncode != 0:
        raise RuntimeError(f"micro failed:\n{p.stdout}\n{p.stderr}")
    res = {}
    for line in p.stdout.splitlines():
        if line.startswith("RESULT micro "):
            kv = dict(x.split("=", 1) for x in line.split()[2:])
            res[kv["scenario"]] = {k: float(v) for k, v in kv.items() if k != "scenario"}
        elif line.startswith("RESULT cycles "):
            kv = dict(x.split("=", 1) for x in line.split()[2:])
            res.setdefault(kv["scenario"], {}).update(
                {k: float(v) for k, v in kv.items() if k != "scenario"})
        elif line.startswith("RESULT flusher ") and "sender=fake" in line:
            kv = dict(x.split("=", 1) for x in line.split()[2:])
            res["flusher_fake"] = float(kv["cpu_spans_s"])
    print("```")
    print("\n".join(ln for ln in p.stdout.splitlines() if not ln.startswith("RESULT")))
    print("```")
    return res


def run_ir(build, requests=4096):
    """Instructions per request and step (valgrind --tool=callgrind on `micro --only`): exact
    and repeatable, whatever else the machine is doing."""
    exe = os.path.join(build, "bench-bin", "micro")
    if not shutil.which("valgrind"):
        sys.exit("--ir needs valgrind (apt-get install valgrind)")
    scen = ["aws-apigateway", "aws-httpapi", "azure-apim", "no gateway"]
    steps = ["parse", "start", "sample", "finish", "encode", "enqueue", "glue extras"]
    log(f"== instructions: callgrind, {requests} requests per scenario and level "
        "(about a minute)")
    ir = {}
    for si in range(len(scen)):
        for lv in range(8):
            p = subprocess.run(["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null",
                                exe, "--only", str(si), str(lv), str(requests)],
                               capture_output=True, text=True, timeout=600)
            line = next((ln for ln in p.stderr.splitlines() if "Collected" in ln), None)
            if p.returncode != 0 or line is None:
                raise RuntimeError(f"callgrind failed:\n{p.stderr[-2000:]}")
            ir[si, lv] = int(line.split()[-1])
    print()
    print("### instructions per request (callgrind; level k minus level k-1)")
    print()
    print("| step | " + " | ".join(scen) + " |")
    print("|---|" + "---:|" * len(scen))
    for lv in range(1, 8):
        prev = 6 if lv == 7 else lv - 1
        print(f"| {steps[lv - 1]} | " + " | ".join(
            f"{(ir[si, lv] - ir[si, prev]) / requests:,.0f}" for si in range(len(scen))) + " |")
    print("| **parse..enqueue** | " + " | ".join(
        f"**{(ir[si, 6] - ir[si, 0]) / requests:,.0f}**" for si in range(len(scen))) + " |")
    print("| all the glue does | " + " | ".join(
        f"{(ir[si, 7] - ir[si, 0]) / requests:,.0f}" for si in range(len(scen))) + " |")


# --- soak ----------------------------------------------------------------------------------

def soak(args, sinks, insts):
    """1,000,000 requests (--soak-requests) to the tracing httpd, and as many to httpd without
    the module as a reference, in alternating 5 s slices; RSS of every child after each."""
    target, chunk = args.soak_requests, 5
    on, base = insts["on"], insts["base"]
    log(f"== soak: {target:,} requests to each httpd (c=64, the four header sets in turn, static "
        f"and proxy alternately, {chunk} s slices), agent up")
    a0 = sinks[0].stats()
    t0 = time.monotonic()
    series = {}
    for inst in (on, base):
        series[inst.key] = {"pids": inst.children(), "done": 0,
                            "samples": [(0, {p: rss_kb(p) for p in inst.children()})]}
    i = 0
    while min(x["done"] for x in series.values()) < target and \
            time.monotonic() - t0 < args.soak_max_seconds:
        path = PATHS["static"] if (i // 2) % 2 == 0 else PATHS["proxy"]
        inst = (on, base)[i % 2]
        sr = series[inst.key]
        i += 1
        if sr["done"] >= target:
            continue
        res = run_wrk(inst.port, path, 64, chunk, "mix")
        sr["done"] += res["requests"]
        sr["samples"].append((sr["done"], {p: rss_kb(p) for p in inst.children()}))
        log(f"  {inst.key:4} {sr['done']:>9,} requests  RSS/child KB: "
            + " ".join(str(v) for v in sr["samples"][-1][1].values()))
    time.sleep(2.5)  # one flush interval and then some
    a1 = sinks[0].stats()
    print()
    print(f"### soak: {series['on']['done']:,} requests to the tracing httpd and "
          f"{series['base']['done']:,} to httpd without the module, in "
          f"{time.monotonic() - t0:.0f} s (c=64; aws-apigateway, no gateway, aws-httpapi, "
          "azure-apim in turn; static and proxy alternately)")
    print()
    def slope(points):
        """Least-squares bytes per request over (requests, KB) points."""
        n = len(points)
        if n < 2:
            return 0.0
        mx = sum(x for x, _ in points) / n
        my = sum(y for _, y in points) / n
        sxx = sum((x - mx) ** 2 for x, _ in points)
        return sum((x - mx) * (y - my) for x, y in points) / sxx * 1024 if sxx else 0.0

    half_growth = {}
    for key, title in (("on", "tracing httpd"), ("base", "httpd without the module")):
        sr = series[key]
        samples = sr["samples"]
        pids = sorted(set(sr["pids"]) | set(samples[-1][1]))
        print(f"{title}:")
        print()
        print("| requests | " + " | ".join(f"child {n + 1} RSS KB" for n in range(len(pids)))
              + " |")
        print("|---:|" + "---:|" * len(pids))
        step = max(1, len(samples) // 10)
        shown = samples[::step] + ([samples[-1]] if (len(samples) - 1) % step else [])
        for reqs, rss in shown:
            print(f"| {reqs:,} | " + " | ".join(str(rss.get(p, "—")) for p in pids) + " |")
        print()
        same = sr["pids"] == sorted(samples[-1][1])
        half = next(s for s in samples if s[0] >= 0.5 * sr["done"])
        warm = next(s for s in samples if s[0] >= 0.1 * sr["done"])
        g_warm = {p: samples[-1][1].get(p, 0) - warm[1].get(p, 0) for p in pids}
        g_half = {p: samples[-1][1].get(p, 0) - half[1].get(p, 0) for p in pids}
        slopes = [slope([(r, rss[p]) for r, rss in samples if r >= half[0] and p in rss])
                  for p in pids]
        half_growth[key] = (same, max(g_half.values(), default=0))
        print(f"children {'unchanged' if same else 'CHANGED'}; RSS growth per child from "
              f"{warm[0]:,} requests (10%) to the end: "
              + ", ".join(f"{g:+d} KB" for g in g_warm.values())
              + f"; over the second half (from {half[0]:,}): "
              + ", ".join(f"{g:+d} KB" for g in g_half.values())
              + " (trend " + ", ".join(f"{b:+.2f}" for b in slopes) + " bytes/request)")
        print()
    same, grow_on = half_growth["on"]
    grow_base = half_growth["base"][1]
    ok = same and grow_on - max(0, grow_base) <= args.soak_growth_kb
    print(f"verdict: over the second half the tracing httpd's children grew at most "
          f"{grow_on:+d} KB, httpd's own (no module) {grow_base:+d} KB → "
          + ("no growth beyond httpd's own" if ok else "GROWS beyond httpd's own")
          + f" (threshold {args.soak_growth_kb} KB)")
    print()
    traces = a1["traces"] - a0["traces"]
    print(f"agent received {traces:,} traces in {a1['payloads'] - a0['payloads']:,} payloads for "
          f"{series['on']['done']:,} requests to the tracing httpd "
          f"({traces / max(1, series['on']['done']) * 100:.1f}%)")
    return ok


# --- main ----------------------------------------------------------------------------------

def machine():
    cpu = next((ln.split(":", 1)[1].strip() for ln in read("/proc/cpuinfo").splitlines()
                if ln.startswith("model name")), "?")
    ver = subprocess.run([APACHE2, "-v"], capture_output=True, text=True).stdout.splitlines()
    wrk = subprocess.run(["wrk", "--version"], capture_output=True, text=True)
    return (f"{NCPU} CPUs ({cpu}), kernel {os.uname().release}, "
            f"{ver[0].split(':', 1)[1].strip() if ver else '?'}, "
            f"{(wrk.stdout + wrk.stderr).split(' [')[0].strip()}, load average before: "
            f"{read('/proc/loadavg').split()[0]}")


def client_stats_verdicts(rows):
    """--client-stats: added httpd CPU per request (medians, each minus the baseline's) with
    client stats and with every trace sent; issue 13's target is at most half."""
    print()
    print("| path | c | gateway headers | added CPU µs/req, every trace sent | "
          "added, client stats | ratio |")
    print("|---|---|---|---:|---:|---:|")
    for x in rows:
        if not x["case"].endswith(", client stats"):
            continue
        sent_case = x["case"][:-len(", client stats")]
        sent = next(y for y in rows if (y["path"], y["conc"], y["case"]) ==
                    (x["path"], x["conc"], sent_case))
        base = next(y for y in rows if (y["path"], y["conc"], y["case"]) ==
                    (x["path"], x["conc"], "baseline"))
        a_sent = sent["cpu_us_req"] - base["cpu_us_req"]
        a_cs = x["cpu_us_req"] - base["cpu_us_req"]
        ratio = a_cs / a_sent if a_sent > 0 else float("nan")
        print(f"| {x['path']} | {x['conc']} | {sent_case[4:]} | {a_sent:.2f} | {a_cs:.2f} | "
              f"{ratio:.2f} {'(≤ 0.5: met)' if ratio <= 0.5 else '(target ≤ 0.5: MISSED)'} |")


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--build", required=True, help="the build tree bench/run.sh made")
    ap.add_argument("--quick", action="store_true", help="about 2 minutes")
    ap.add_argument("--soak", action="store_true", help="the long RSS check only")
    ap.add_argument("--micro", action="store_true", help="the microbenchmark only")
    ap.add_argument("--httpd", action="store_true", help="the httpd table only")
    ap.add_argument("--ir", action="store_true",
                    help="instructions per request and step, with valgrind (noise-free)")
    ap.add_argument("--rounds", type=int)
    ap.add_argument("--duration", type=int, help="seconds per run")
    ap.add_argument("--conc", default="1,64", help="concurrencies (default 1,64)")
    ap.add_argument("--paths", default="static,proxy",
                    help="what to request: static (the 1 KB file), proxy (mod_proxy to the "
                         "backend), or both (default static,proxy)")
    ap.add_argument("--soak-requests", type=int, default=1_000_000)
    ap.add_argument("--soak-max-seconds", type=int, default=900)
    ap.add_argument("--soak-growth-kb", type=int, default=512)
    ap.add_argument("--compare-module", metavar="SO",
                    help="also run the tracing cases with this build of the module")
    ap.add_argument("--compare-label", default="B", help="its name in the table")
    ap.add_argument("--nice", type=int, default=0,
                    help="run httpd, wrk and the sinks at this nice value, and their scheduler "
                         "autogroups too (negative: ahead of other work on a shared machine; "
                         "needs root)")
    ap.add_argument("--profile", action="store_true",
                    help="the module's share of httpd's CPU under load, from perf samples")
    ap.add_argument("--xray", action="store_true",
                    help="also the case 'on + X-Ray': DDXRay On, every request sampled "
                         "(a segment built, queued and sent over UDP per request)")
    ap.add_argument("--client-stats", action="store_true",
                    help="an agent keeping 1 %% of traces that takes client-side stats; adds "
                         "the cases 'client stats' (DDClientStats On) to compare with 'on'")
    ap.add_argument("--json", help="write every result here")
    ap.add_argument("--keep", action="store_true", help="keep the work directory")
    args = ap.parse_args()
    args.rounds = args.rounds or (2 if args.quick else 3)
    args.duration = args.duration or (2 if args.quick else 5)
    args.conc = [int(c) for c in args.conc.split(",")]
    args.paths = [p for p in args.paths.split(",") if p]
    if not args.paths or any(p not in PATHS for p in args.paths):
        sys.exit(f"--paths: choose from {', '.join(PATHS)}")
    if args.compare_module:
        args.compare_module = os.path.abspath(args.compare_module)
        add_compare_cases(args.compare_label)

    if args.nice:
        global NICE
        NICE = args.nice
        renice(os.getpid())  # wrk runs in this process's group
    for tool in ("wrk", APACHE2):
        if not shutil.which(tool):
            sys.exit(f"{tool} not found (bench/run.sh installs it from Debian)")
    module = os.path.join(args.build, ".libs", "mod_dd_proxy.so")
    print(f"# mod_dd_proxy benchmarks — {time.strftime('%Y-%m-%d %H:%M:%S %Z')}")
    print()
    print(f"machine: {machine()}")
    print(f"module: {module}" + (f" (nice {args.nice})" if args.nice else ""))
    if args.compare_module:
        print(f"compared module ({args.compare_label}): {args.compare_module}")
    print()
    if args.ir:
        run_ir(args.build)
        return 0
    micro = None
    if args.micro or not (args.soak or args.httpd or args.profile):
        micro = run_micro(args.build, args.quick)
        if args.micro:
            for line, val, ok in verdicts([], micro):
                print(f"- {line}: {val} — {'met' if ok else 'MISSED'}")
            return 0

    workdir = tempfile.mkdtemp(prefix="ddbench-")
    os.chmod(workdir, 0o755)
    os.makedirs(os.path.join(workdir, "htdocs"))
    with open(os.path.join(workdir, "htdocs", "static.html"), "w") as f:
        f.write(("".join(chr(ord("a") + i % 26) for i in range(1023))) + "\n")
    os.chmod(os.path.join(workdir, "htdocs"), 0o755)
    os.chmod(os.path.join(workdir, "htdocs", "static.html"), 0o644)

    sink_bin = os.path.join(args.build, "bench-bin", "sink")
    max_s = 3600
    sinks, insts = [], {}
    ok = True
    try:
        agent_mode = "agent-cstats" if args.client_stats else "agent"
        agent = Sink(sink_bin, agent_mode, max_s)
        backend = Sink(sink_bin, "static", max_s)
        sinks = [agent, backend]
        agent_cs = None
        if args.client_stats:
            agent_cs = Sink(sink_bin, agent_mode, max_s)
            sinks.append(agent_cs)
        agent_url = f"DDAgentURL http://127.0.0.1:{agent.port}"
        confs = {
            "base": (None, ""),
            "off": (module, f"DDTrace Off\n{agent_url}\n"),
            "on": (module, f"{agent_url}\nDDService orders-httpd\nDDEnv bench\n"
                           "DDInferredProxy On\n"),
        }
        if args.compare_module:
            confs["cmp"] = (args.compare_module, confs["on"][1])
        if agent_cs:
            confs["cs"] = (module, confs["on"][1].replace(f"{agent.port}", f"{agent_cs.port}") +
                           "DDClientStats On\n")
            CASES.extend([("on, no gateway, client stats", "cs", "none"),
                          ("on, aws-apigateway, client stats", "cs", "aws-apigateway")])
        xray = None
        if args.xray:
            xray = XRayStub()
            CASES.append(("on + X-Ray (all sampled), no gateway", "xray", "none"))
            confs["xray"] = (module, confs["on"][1] +
                             f"DDXRay On\nDDXRayDaemonAddress {xray.address}\n")
        if args.soak:
            confs = {"on": confs["on"], "base": confs["base"]}
        for key, (mod, conf) in confs.items():
            insts[key] = Apache(key, workdir, mod, conf, backend.port)
            insts[key].start()
        log("== warm-up: 1 s per instance and path at c=64")
        warm_traced = 0
        for inst in insts.values():
            for path in PATHS.values():
                res = run_wrk(inst.port, path, 64, 1, "aws-apigateway")
                if inst.key in ("on", "cmp", "xray"):
                    warm_traced += res["requests"]

        if args.soak:
            ok = soak(args, sinks, insts)
        elif args.profile:
            profile(args, workdir, sinks, insts)
        else:
            a0 = agent.stats()
            a0["traces"] -= warm_traced  # the warm-up's traces may still be on their way
            c0 = agent_cs.stats() if agent_cs else None
            runs = httpd_table(args, args.build, workdir, sinks, insts)
            time.sleep(2.5)
            a1 = agent.stats()
            c1 = agent_cs.stats() if agent_cs else None
            rows = summarize(runs, args)
            print_table(rows, args)
            traced = warm_traced + sum(res["requests"] for (p, c, name), rr in runs.items()
                                       for _, res in rr
                                       if dict((n, k) for n, k, _ in CASES)[name] in ("on", "cmp",
                                                                                      "xray"))
            print(f"agent: received {a1['traces'] - a0['traces']:,} traces "
                  f"({(a1['bytes'] - a0['bytes']) / 1e6:.1f} MB in "
                  f"{a1['payloads'] - a0['payloads']:,} payloads) for {traced:,} requests that "
                  "wrk counted on the tracing httpds, warm-up included")
            if agent_cs:
                cs_reqs = sum(res["requests"] for (p, c, name), rr in runs.items()
                              for _, res in rr if name.endswith("client stats"))
                print(f"client stats agent: received {c1['traces'] - c0['traces']:,} traces "
                      f"({(c1['bytes'] - c0['bytes']) / 1e6:.2f} MB in "
                      f"{c1['payloads'] - c0['payloads']:,} payloads) and "
                      f"{c1['stats'] - c0['stats']:,} stats payloads for {cs_reqs:,} requests "
                      f"({(c1['traces'] - c0['traces']) / max(1, cs_reqs) * 100:.2f} % of traces "
                      "sent; the agent's rate is 1 %)")
                client_stats_verdicts(rows)
            if xray:
                print(f"X-Ray daemon stub: received {xray.count:,} segment datagrams")
            bg = max(x["bg"] for x in rows)
            if bg > 10:
                print()
                print(f"**Warning:** other processes used up to {bg:.0f}% of the CPUs during "
                      "these runs (bg CPU %): the ratios and latencies above measure that load "
                      "as much as the module. Rerun on a quiet machine; `--ir` and the profile "
                      "are not affected.")
            print()
            print("### targets")
            print()
            for line, val, met in verdicts(rows, micro):
                print(f"- {line}: {val} — {'met' if met else 'MISSED'}")
            if args.json:
                with open(args.json, "w") as f:
                    json.dump({"rows": rows, "micro": micro,
                               "runs": {"|".join(map(str, k)): v for k, v in runs.items()}},
                              f, indent=1, default=str)
        for inst in insts.values():
            bad = inst.bad_log_lines()
            if bad:
                print(f"\nerror_log of {inst.key} has {len(bad)} warn/error lines, e.g.: {bad[0]}")
    finally:
        for inst in insts.values():
            try:
                inst.stop()
            except Exception as e:  # keep stopping the others
                log(f"stopping {inst.key}: {e}")
        for s in sinks:
            s.stop()
        if args.keep:
            log(f"work directory kept: {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
