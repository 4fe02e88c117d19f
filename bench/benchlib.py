"""Shared pieces of damselfly's benchmarks (bench/cluster, bench/loopback, bench/cached-get).

Processes are started and stopped by PID only; every wait has a deadline. Nothing here
touches anything the benchmarks did not create.
"""

import hashlib
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MiB = 1 << 20
GOODPUT = 1448 / 1514  # TCP payload per Ethernet frame (MTU 1500, timestamps on)


def die(msg, code=2):
    print(f"{Path(sys.argv[0]).name}: {msg}", file=sys.stderr)
    sys.exit(code)


def find_damselfly(explicit=None):
    """--damselfly PATH, else $DMF_BUILD_DIR/damselfly, else <repo>/build/damselfly."""
    if explicit:
        p = Path(explicit)
    elif os.environ.get("DMF_BUILD_DIR"):
        p = Path(os.environ["DMF_BUILD_DIR"]) / "damselfly"
    else:
        p = REPO / "build" / "damselfly"
    p = p.resolve()
    if not os.access(p, os.X_OK):
        die(f"no damselfly binary at {p} (build it, pass --damselfly, or set DMF_BUILD_DIR)")
    return p


_daemon_help = {}


def daemon_defaults(binary):
    """Daemon flags every benchmark adds: the HTTP proxy off where the binary has one (it
    listens on 127.0.0.1:65001 by default, which two daemons on one host cannot share)."""
    b = str(binary)
    if b not in _daemon_help:
        try:
            _daemon_help[b] = subprocess.run([b, "daemon", "--help"], capture_output=True,
                                             text=True, timeout=10).stdout
        except (OSError, subprocess.TimeoutExpired):
            _daemon_help[b] = ""
    return ["--proxy-listen", "off"] if "--proxy-listen" in _daemon_help[b] else []


def which(name):
    for d in os.environ.get("PATH", "/usr/bin:/bin").split(":") + ["/usr/sbin", "/sbin"]:
        p = Path(d) / name
        if p.is_file() and os.access(p, os.X_OK):
            return str(p)
    return None


def require_tools(names):
    missing = [n for n in names if which(n) is None]
    if missing:
        die(f"missing programs: {' '.join(missing)} (run scripts/install-deps.sh as root)")


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            b = f.read(4 * MiB)
            if not b:
                break
            h.update(b)
    return h.hexdigest()


def make_random_file(path, size):
    """size bytes from /dev/urandom (chunks of 4 MiB); returns its SHA-256."""
    h = hashlib.sha256()
    left = size
    with open(path, "wb") as f:
        while left > 0:
            b = os.urandom(min(left, 4 * MiB))
            f.write(b)
            h.update(b)
            left -= len(b)
    os.chmod(path, 0o644)
    return h.hexdigest()


def percentile(values, p):
    """Nearest-rank percentile (p in 0..100) of a non-empty list."""
    v = sorted(values)
    k = max(0, min(len(v) - 1, int(round(p / 100.0 * len(v) + 0.5)) - 1))
    return v[k]


def median(values):
    v = sorted(values)
    n = len(v)
    return v[n // 2] if n % 2 else (v[n // 2 - 1] + v[n // 2]) / 2


def date_utc():
    return time.strftime("%Y-%m-%d", time.gmtime())


# ---- processes ---------------------------------------------------------------------------

class Procs:
    """Every process a benchmark started, stopped by PID (SIGTERM, then SIGKILL)."""

    def __init__(self):
        self.live = []
        self.labels = {}  # pid -> label of every process ever started

    def start(self, args, log=None, ns=None, env=None, cwd=None, stdout=None, label=None):
        args = [str(a) for a in args]
        label = label or Path(args[0]).name
        if ns:
            args = ["ip", "netns", "exec", ns] + args
        out = stdout
        logf = None
        if out is None:
            if log is not None:
                logf = open(log, "ab")
                out = logf
            else:
                out = subprocess.DEVNULL
        full_env = dict(os.environ)
        if env:
            full_env.update(env)
        p = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=out,
                             stderr=subprocess.STDOUT if logf is not None else out,
                             env=full_env, cwd=cwd, start_new_session=True)
        if logf is not None:
            logf.close()  # the child holds its own descriptor
        p.bench_args = args
        p.bench_log = log
        p.label = label
        self.labels[p.pid] = label
        self.live.append(p)
        return p

    def stop(self, p, grace=5.0):
        if p.poll() is None:
            try:
                os.kill(p.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                p.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                try:
                    os.kill(p.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                try:
                    p.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    pass
        if p in self.live:
            self.live.remove(p)
        return p.returncode

    def stop_many(self, procs, grace=5.0):
        """SIGTERM to all at once, then wait up to grace for each, then SIGKILL."""
        procs = [p for p in procs]
        for p in procs:
            if p.poll() is None:
                try:
                    os.kill(p.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
        deadline = time.monotonic() + grace
        for p in procs:
            try:
                p.wait(timeout=max(0.01, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
        for p in procs:
            self.stop(p, grace=0.01)

    def stop_all(self, grace=5.0):
        self.stop_many(list(reversed(self.live)), grace)


def wait_until(pred, timeout, interval=0.05, what="condition"):
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() >= deadline:
            raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


def unix_socket_accepts(path):
    import socket
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(0.5)
        try:
            s.connect(str(path))
            return True
        except OSError:
            return False


# ---- nginx -------------------------------------------------------------------------------

def write_nginx_conf(prefix, root, listen, workers=1):
    """An nginx config under prefix serving root at listen ("ADDR:PORT"), no access log,
    sendfile on. Returns the config path. Start with nginx_args(conf)."""
    prefix = Path(prefix)
    prefix.mkdir(parents=True, exist_ok=True)
    for d in ("tmp", "logs"):
        (prefix / d).mkdir(exist_ok=True)
    conf = prefix / "nginx.conf"
    conf.write_text(f"""# written by damselfly's bench/benchlib.py
daemon off;
master_process on;
worker_processes {workers};
user root;
pid {prefix}/nginx.pid;
error_log {prefix}/logs/error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    sendfile on;
    tcp_nopush on;
    keepalive_timeout 30;
    types {{ }}
    default_type application/octet-stream;
    client_body_temp_path {prefix}/tmp/body;
    proxy_temp_path {prefix}/tmp/proxy;
    fastcgi_temp_path {prefix}/tmp/fastcgi;
    uwsgi_temp_path {prefix}/tmp/uwsgi;
    scgi_temp_path {prefix}/tmp/scgi;
    server {{
        listen {listen};
        root {root};
        location / {{ }}
    }}
}}
""")
    return conf


def nginx_args(conf):
    return [which("nginx") or "/usr/sbin/nginx", "-c", str(conf), "-p", str(Path(conf).parent),
            "-e", str(Path(conf).parent / "logs" / "error.log")]


# ---- CPU ---------------------------------------------------------------------------------

CPU_FIELDS = ("user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal")


def read_cpu_fields():
    """{field: jiffies} of the whole machine's first /proc/stat line."""
    with open("/proc/stat") as f:
        parts = f.readline().split()
    return dict(zip(CPU_FIELDS, (int(x) for x in parts[1:9])))


CLK_TCK = os.sysconf("SC_CLK_TCK")


def proc_cpu(pid):
    """(comm, user+system seconds) of a live process (all its threads), or None."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            data = f.read()
    except OSError:
        return None
    comm = data[data.index("(") + 1:data.rindex(")")]
    fields = data[data.rindex(")") + 2:].split()
    return comm, (int(fields[11]) + int(fields[12])) / CLK_TCK


def wait_rusage(p, deadline, interval=0.005):
    """Waits for Popen p until the monotonic deadline with wait4, so the child's own CPU
    time is known: returns (exit time (time.time()), user+sys seconds) or None on timeout.
    Sets p.returncode."""
    while True:
        try:
            pid, status, ru = os.wait4(p.pid, os.WNOHANG)
        except ChildProcessError:  # reaped elsewhere (teardown after Ctrl-C)
            return None
        if pid == p.pid:
            t = time.time()
            p.returncode = os.waitstatus_to_exitcode(status)
            return t, ru.ru_utime + ru.ru_stime
        if time.monotonic() >= deadline:
            return None
        time.sleep(interval)


def read_cpu():
    """(busy, total) jiffies of the whole machine from /proc/stat."""
    with open("/proc/stat") as f:
        parts = f.readline().split()
    vals = [int(x) for x in parts[1:]]
    # user nice system idle iowait irq softirq steal guest guest_nice; guest is in user.
    total = sum(vals[:8])
    idle = vals[3] + vals[4]
    return total - idle, total


class CpuSampler:
    """Samples /proc/stat every interval seconds on a thread: average and peak busy %."""

    def __init__(self, interval=0.5, max_seconds=3600):
        self.interval = interval
        self.max_seconds = max_seconds
        self.samples = []
        self._stop = threading.Event()
        self._t = None

    def start(self):
        self.f0 = read_cpu_fields()
        self.first = read_cpu()
        self.samples = [(time.monotonic(), self.first)]
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()
        return self

    def _run(self):
        end = time.monotonic() + self.max_seconds
        while not self._stop.wait(self.interval) and time.monotonic() < end:
            self.samples.append((time.monotonic(), read_cpu()))

    def stop(self):
        self._stop.set()
        if self._t:
            self._t.join(timeout=5)
        self.samples.append((time.monotonic(), read_cpu()))
        f1 = read_cpu_fields()
        tot = sum(f1.values()) - sum(self.f0.values())
        self.breakdown = {k: (100.0 * (f1[k] - self.f0[k]) / tot if tot else 0.0) for k in f1}
        self.busy_seconds = sum(f1[k] - self.f0[k] for k in f1 if k not in ("idle", "iowait")) \
            / CLK_TCK
        (b0, t0), (b1, t1) = self.samples[0][1], self.samples[-1][1]
        avg = 100.0 * (b1 - b0) / (t1 - t0) if t1 > t0 else 0.0
        peak = 0.0
        for (ma, (ba, ta)), (mb, (bb, tb)) in zip(self.samples, self.samples[1:]):
            # A sliver at the end (stop() right after a sample) is all jiffy rounding.
            if tb - ta > 0 and mb - ma >= 0.8 * self.interval:
                peak = max(peak, 100.0 * (bb - ba) / (tb - ta))
        peak = max(peak, avg) if len(self.samples) <= 2 else peak
        return avg, peak
