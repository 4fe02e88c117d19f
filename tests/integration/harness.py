"""Integration-test harness: starts real damselfly processes on 127.0.0.1 and talks to them.

Everything a test starts is registered here and stopped by PID at the end of the test
(conftest.py's autouse fixture), also when the test fails or times out. Nothing waits
without a bound: every wait takes a timeout, scaled by DMF_TEST_TIME_SCALE (the sanitizer
build is slower; scripts/test.sh --sanitize sets it).

Environment:
  DMF_BUILD_DIR        where the damselfly binary is (default <repo>/build)
  DMF_TEST_TIME_SCALE  multiply every timeout by this (default 1)
  DMF_TEST_LOG_LEVEL   --log-level given to every process (default debug: the secret-header
                       test must hold at the most verbose level)
"""

import atexit
import base64
import functools
import hashlib
import http.server
import importlib
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import types
import urllib.parse
import urllib.request
from pathlib import Path

_REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(_REPO / "scripts"))
import origin as _origin_mod  # noqa: E402  (scripts/origin.py, shared with demo.sh)

Origin = _origin_mod.Origin
sha256_file = _origin_mod.sha256_file

MiB = 1 << 20
SANITIZER_MARKERS = (b"ERROR: AddressSanitizer", b"ERROR: LeakSanitizer", b"runtime error:",
                     b"ERROR: ThreadSanitizer", b"WARNING: ThreadSanitizer")


# ---- paths and timing ------------------------------------------------------------------

def repo_root():
    return _REPO


def build_dir():
    return Path(os.environ.get("DMF_BUILD_DIR") or (_REPO / "build")).resolve()


def binary():
    return build_dir() / "damselfly"


def sanitized():
    """The binary is an ASan build: its allocator keeps freed memory in quarantine, so RSS
    bounds do not hold there."""
    return b"__asan_init" in binary().read_bytes()


def time_scale():
    try:
        return max(1.0, float(os.environ.get("DMF_TEST_TIME_SCALE", "1")))
    except ValueError:
        return 1.0


def scaled(seconds):
    """A timeout in seconds, stretched for slow (sanitizer) builds."""
    return seconds * time_scale()


def log_level():
    return os.environ.get("DMF_TEST_LOG_LEVEL", "debug")


def sha256_bytes(b):
    return hashlib.sha256(b).hexdigest()


def wait_until(pred, timeout, interval=0.05, what="condition"):
    """Polls pred() until it returns a truthy value (returned) or raises TimeoutError."""
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() >= deadline:
            raise TimeoutError(f"timed out after {timeout:.1f}s waiting for {what}")
        time.sleep(interval)


# ---- ports -------------------------------------------------------------------------------

_port_lock = threading.Lock()
_ports_given = set()



def serve_http(handler, ssl_context=None):
    """A test's own HTTP server on 127.0.0.1 (any free port), each request on a thread, served
    from a daemon thread. Returns the server; its port is server.server_address[1]; stop it
    with server.shutdown() and server.server_close()."""

    class Server(http.server.ThreadingHTTPServer):
        daemon_threads = True

    srv = Server(("127.0.0.1", 0), handler)
    if ssl_context is not None:
        srv.socket = ssl_context.wrap_socket(srv.socket, server_side=True)
    threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.1},
                     daemon=True).start()
    return srv

def _port_slice():
    """The ports this test process hands out: below the kernel's ephemeral range (where every
    outgoing connection takes its source port, so a port found free there can be taken by a
    connect() before the daemon binds it), one slice per pytest-xdist worker (so two
    workers never hand out the same port)."""
    low = 32768
    try:
        low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        pass
    low = max(low, 12000)
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0")
    try:
        w = int(worker[2:]) % 8
    except ValueError:
        w = 0
    span = (low - 10000) // 8
    return 10000 + w * span, 10000 + (w + 1) * span


def free_port():
    """A TCP port on 127.0.0.1 that nothing listens on now, from this process's own slice
    below the ephemeral range (_port_slice), and that this process has not handed out
    before, so two calls never return the same port."""
    lo, hi = _port_slice()
    with _port_lock:
        for _ in range(200):
            port = random.randrange(lo, hi)
            if port in _ports_given:
                continue
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
                try:
                    s.bind(("127.0.0.1", port))
                except OSError:
                    continue
            _ports_given.add(port)
            return port
    raise RuntimeError(f"no free port in {lo}-{hi}")


def port_open(port, host="127.0.0.1"):
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def unix_socket_accepts(path):
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(0.5)
        try:
            s.connect(str(path))
            return True
        except OSError:
            return False


def wait_port(port, timeout=10.0, proc=None, host="127.0.0.1"):
    """Waits until host:port accepts a connection. Raises TimeoutError, or RuntimeError at
    once when proc (a Proc) exits meanwhile."""
    deadline = time.monotonic() + timeout
    while True:
        if port_open(port, host):
            return True
        if proc is not None and proc.poll() is not None:
            proc.reported = True  # this error already tells the story; no second report
            raise RuntimeError(f"{proc.name} exited with {proc.returncode} before listening on "
                               f"{port}\n{proc.log_tail()}")
        if time.monotonic() >= deadline:
            raise TimeoutError(f"nothing listening on {host}:{port} after {timeout:.1f}s")
        time.sleep(0.05)


# ---- protos ------------------------------------------------------------------------------

@functools.lru_cache(maxsize=None)
def proto_modules():
    """Generates Python stubs from proto/ (once per session) and returns a namespace with
    common_pb2, scheduler_pb2, scheduler_pb2_grpc, daemon_pb2, daemon_pb2_grpc."""
    from grpc_tools import protoc
    import grpc_tools

    out = tempfile.mkdtemp(prefix="dmf-proto-")
    atexit.register(shutil.rmtree, out, True)
    proto_root = _REPO / "proto"
    files = sorted(str(p.relative_to(proto_root))
                   for p in (proto_root / "damselfly" / "v1").glob("*.proto"))
    wkt = Path(grpc_tools.__file__).parent / "_proto"
    args = ["grpc_tools.protoc", f"-I{proto_root}", f"-I{wkt}", f"--python_out={out}",
            f"--grpc_python_out={out}"] + files
    rc = protoc.main(args)
    if rc != 0:
        raise RuntimeError(f"grpc_tools.protoc failed ({rc}) on {files}")
    for d in (Path(out) / "damselfly", Path(out) / "damselfly" / "v1"):
        (d / "__init__.py").touch()
    sys.path.insert(0, out)
    ns = types.SimpleNamespace()
    for name in ("common_pb2", "scheduler_pb2", "scheduler_pb2_grpc", "daemon_pb2",
                 "daemon_pb2_grpc"):
        setattr(ns, name, importlib.import_module(f"damselfly.v1.{name}"))
    return ns


# ---- processes ---------------------------------------------------------------------------

_live = []  # every Proc started during the current test (conftest stops them)


class Proc:
    """A process whose stdout and stderr go to a log file. Stopped by PID only."""

    def __init__(self, args, log_path, name=None, env=None, cwd=None):
        self.args = [str(a) for a in args]
        self.name = name or Path(self.args[0]).name
        self.log_path = Path(log_path)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = open(self.log_path, "ab")
        self.killed_by_test = False
        self.exited_alone = False
        self.needed_sigkill = False
        self.reported = False
        full_env = dict(os.environ)
        if env:
            full_env.update(env)
        self.popen = subprocess.Popen(self.args, stdin=subprocess.DEVNULL, stdout=self._log,
                                      stderr=subprocess.STDOUT, env=full_env, cwd=cwd)
        self.pid = self.popen.pid
        _live.append(self)

    @property
    def returncode(self):
        return self.popen.returncode

    def poll(self):
        return self.popen.poll()

    def alive(self):
        return self.popen.poll() is None

    def wait(self, timeout):
        return self.popen.wait(timeout=timeout)

    def _note_exit(self):
        if self.popen.poll() is not None and not self.killed_by_test:
            self.exited_alone = True

    def stop(self, grace=5.0):
        """SIGTERM, then SIGKILL after grace seconds; returns the exit status. Idempotent."""
        self._note_exit()
        if self.popen.poll() is None:
            self.killed_by_test = True
            try:
                os.kill(self.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.popen.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                self.needed_sigkill = True
                try:
                    os.kill(self.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                self.popen.wait(timeout=10)
        self._close_log()
        return self.popen.returncode

    def kill9(self):
        """SIGKILL now (a crash, as far as the process can tell) and reap it."""
        self._note_exit()
        if self.popen.poll() is None:
            self.killed_by_test = True
            try:
                os.kill(self.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.popen.wait(timeout=10)
        self._close_log()
        return self.popen.returncode

    def _close_log(self):
        if not self._log.closed:
            self._log.close()

    def log_bytes(self):
        try:
            return self.log_path.read_bytes()
        except OSError:
            return b""

    def log_tail(self, lines=30):
        text = self.log_bytes().decode("utf-8", "replace").splitlines()
        return "\n".join(f"  {self.name}| {l}" for l in text[-lines:])

    def sanitizer_report(self):
        data = self.log_bytes()
        return any(m in data for m in SANITIZER_MARKERS)


def live_procs():
    """Every Proc started since the last stop_all() (running or not)."""
    return list(_live)


def stop_all():
    """Stops every Proc started since the last call, newest first, and forgets them.
    Returns the problems found as strings: a process that exited non-zero by itself (a
    crash, unless a start-up error already said so), sanitizer reports in its log."""
    _seed_rpc.clear()
    problems = []
    procs = list(reversed(_live))
    del _live[:]
    for p in procs:
        p.stop(grace=scaled(5.0))
    for p in procs:
        if p.needed_sigkill:
            problems.append(f"{p.name} (pid {p.pid}) did not exit within "
                            f"{scaled(5.0):.0f}s of SIGTERM (killed)\n{p.log_tail()}")
        if p.exited_alone and p.returncode != 0 and not p.reported:
            problems.append(f"{p.name} (pid {p.pid}) exited by itself with status "
                            f"{p.returncode}\n{p.log_tail()}")
    seen = set()
    for p in procs:
        if p.log_path not in seen and p.sanitizer_report():
            problems.append(f"{p.name} has a sanitizer report in {p.log_path}\n"
                            f"{p.log_tail(60)}")
        seen.add(p.log_path)
    return problems


atexit.register(stop_all)


def require_binary():
    b = binary()
    if not b.exists():
        raise RuntimeError(f"no damselfly binary at {b} (build it, or set DMF_BUILD_DIR)")
    return b


def _flag_args(flags):
    """{'candidate_limit': 4, 'seed': True, 'x': None} -> ['--candidate-limit', '4', '--seed']"""
    out = []
    for k, v in flags.items():
        if v is None or v is False:
            continue
        name = "--" + k.replace("_", "-")
        if v is True:
            out.append(name)
        elif isinstance(v, (list, tuple)):
            for item in v:
                out += [name, str(item)]
        else:
            out += [name, str(v)]
    return out


# ---- metrics -----------------------------------------------------------------------------

_METRIC_RE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)')
_LABEL_RE = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


class Metrics(dict):
    """Prometheus text parsed into {'name{a="x",b="y"}': value} with labels sorted by name;
    value(name, **labels) looks one series up (default when absent)."""

    @staticmethod
    def key(name, labels):
        if not labels:
            return name
        inner = ",".join(f'{k}="{labels[k]}"' for k in sorted(labels))
        return f"{name}{{{inner}}}"

    @classmethod
    def parse(cls, text):
        m = cls()
        for line in text.splitlines():
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            mm = _METRIC_RE.match(line)
            if not mm:
                continue
            labels = dict(_LABEL_RE.findall(mm.group(2) or ""))
            try:
                val = float(mm.group(3))
            except ValueError:
                continue
            m[cls.key(mm.group(1), labels)] = val
        return m

    def value(self, name, default=0.0, **labels):
        return self.get(self.key(name, labels), default)

    def has(self, name, **labels):
        return self.key(name, labels) in self


def tls_client_context(tls):
    """An ssl context for a mutual-TLS port: tls is a dict of tls_flags (tls_cert, tls_key,
    tls_ca). It presents that certificate and trusts only that CA; host names are not
    checked (members are addressed by IP, their CN is their host ID)."""
    import ssl
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.load_verify_locations(cafile=str(tls["tls_ca"]))
    ctx.load_cert_chain(str(tls["tls_cert"]), str(tls["tls_key"]))
    return ctx


def http_get(url, timeout=5.0, headers=None, tls=None):
    req = urllib.request.Request(url, headers=headers or {})
    ctx = tls_client_context(tls) if tls else None
    with urllib.request.urlopen(req, timeout=timeout, context=ctx) as r:
        return r.status, r.read()


def fetch_metrics(port, timeout=5.0, tls=None):
    """The Prometheus text on port; tls (tls_flags of a cluster member) for a port that
    speaks mutual TLS (a daemon's piece port with --tls-*)."""
    # Scaled like every other wait: a sanitizer build on a loaded machine answers slower.
    scheme = "https" if tls else "http"
    _, body = http_get(f"{scheme}://127.0.0.1:{port}/metrics", timeout=scaled(timeout), tls=tls)
    return Metrics.parse(body.decode("utf-8", "replace"))


# ---- damselfly processes -----------------------------------------------------------------

class Scheduler:
    def __init__(self, proc, port, metrics_port, log_path):
        self.proc = proc
        self.port = port
        self.metrics_port = metrics_port
        self.log_path = log_path

    @property
    def addr(self):
        return f"127.0.0.1:{self.port}"

    def metrics(self):
        return fetch_metrics(self.metrics_port)

    def channel(self):
        """A gRPC channel to the scheduler (one per Scheduler, closed by stop())."""
        import grpc
        if getattr(self, "_channel", None) is None:
            self._channel = grpc.insecure_channel(self.addr)
        return self._channel

    def stub(self):
        pb = proto_modules()
        return pb.scheduler_pb2_grpc.SchedulerStub(self.channel())

    def stop(self):
        if getattr(self, "_channel", None) is not None:
            self._channel.close()
            self._channel = None
        return self.proc.stop()

    def kill9(self):
        return self.proc.kill9()


_seed_rpc = []  # the rpc port of the current test's known seed ("seed"), once reserved


def make_certs(directory, hosts):
    """A cluster CA and one certificate per host under directory, by scripts/make-certs.sh:
    hosts maps host ID -> role ("peer", "seed", "scheduler", "manager"). Returns directory
    (a Path). Existing certificates are remade (a rotated certificate)."""
    d = Path(directory)
    script = Path(__file__).resolve().parents[2] / "scripts" / "make-certs.sh"
    if not (d / "ca.pem").exists():
        subprocess.run(["sh", str(script), str(d), "ca"], check=True, capture_output=True)
    for host_id, role in hosts.items():
        subprocess.run(["sh", str(script), str(d), "host", host_id, role], check=True,
                       capture_output=True)
    return d


def tls_flags(certdir, host_id):
    """The --tls-cert/--tls-key/--tls-ca flags (as keyword arguments of start_daemon or
    start_scheduler) of host_id's certificate in certdir (make_certs)."""
    d = Path(certdir)
    return {"tls_cert": str(d / f"{host_id}.pem"), "tls_key": str(d / f"{host_id}.key"),
            "tls_ca": str(d / "ca.pem")}


def tls_channel(certdir, addr, host=None, server_cn="sched"):
    """A Python gRPC channel to addr over TLS that trusts certdir's cluster CA, presenting
    host's certificate (None: none). Servers' certificates carry their host ID, not
    127.0.0.1: the name checked is server_cn."""
    import grpc
    d = Path(certdir)
    creds = grpc.ssl_channel_credentials(
        root_certificates=(d / "ca.pem").read_bytes(),
        private_key=(d / f"{host}.key").read_bytes() if host else None,
        certificate_chain=(d / f"{host}.pem").read_bytes() if host else None)
    return grpc.secure_channel(addr, creds,
                               options=(("grpc.ssl_target_name_override", server_cn),))


def seed_rpc_port():
    """The rpc port the current test's seed daemon (host id "seed") listens on: reserved
    before any process starts, so that every scheduler can list it in --seed-hosts (seeds
    are known, not claimed). Forgotten at the end of the test."""
    if not _seed_rpc:
        _seed_rpc.append(free_port())
    return _seed_rpc[0]


def known_seed():
    """The --seed-hosts entry of the current test's seed daemon."""
    return f"seed|127.0.0.1:{seed_rpc_port()}"


def start_scheduler(tmp_path, name="scheduler", port=None, metrics_port=None, ready_timeout=20,
                    **flags):
    """Starts `damselfly scheduler` with free ports; extra flags as keyword arguments
    (candidate_limit=4 -> --candidate-limit 4; True -> bare flag). Waits until both ports
    accept. Unless seed_hosts is given (None: no known seed), the test's daemon "seed"
    (start_daemon(..., "seed", seed=True)) is the known seed."""
    require_binary()
    port = port or free_port()
    metrics_port = metrics_port or free_port()
    flags.setdefault("log_level", log_level())
    flags.setdefault("seed_hosts", known_seed())
    log = Path(tmp_path) / f"{name}.log"
    args = [binary(), "scheduler", "--listen", f"127.0.0.1:{port}",
            "--metrics-listen", f"127.0.0.1:{metrics_port}"] + _flag_args(flags)
    proc = Proc(args, log, name=name)
    wait_port(port, scaled(ready_timeout), proc)
    wait_port(metrics_port, scaled(ready_timeout), proc)
    return Scheduler(proc, port, metrics_port, log)


def _short_socket_path(directory, name):
    """A unix socket path under directory, or under a short temp dir when directory is too
    deep for sun_path (108 bytes)."""
    p = Path(directory) / f"{name}.sock"
    if len(str(p)) < 100:
        return p
    d = tempfile.mkdtemp(prefix="dmf-")
    atexit.register(shutil.rmtree, d, True)
    return Path(d) / f"{name}.sock"


class Daemon:
    def __init__(self, name, dir, data_dir, socket_path, piece_port, rpc_port, log_path,
                 host_id, seed, scheduler, extra, prefix=None):
        self.name = name
        self.prefix = list(prefix or [])  # e.g. ["prlimit", "--nofile=1024:1024", "--"]
        self.dir = dir
        self.data_dir = data_dir
        self.socket = socket_path
        self.piece_port = piece_port
        self.rpc_port = rpc_port
        self.log_path = log_path
        self.host_id = host_id
        self.seed = seed
        self.scheduler = scheduler
        self.extra = extra
        self.proc = None
        self.proxy_port = None  # set by start_daemon

    def _start(self, ready_timeout):
        require_binary()
        flags = dict(self.extra)
        flags.setdefault("log_level", log_level())
        args = self.prefix + [binary(), "daemon"]
        if self.scheduler is not None:
            args += ["--scheduler", self.scheduler.addr if isinstance(self.scheduler, Scheduler)
                     else str(self.scheduler)]
        args += ["--data-dir", self.data_dir, "--ip", "127.0.0.1",
                 "--piece-listen", f"127.0.0.1:{self.piece_port}",
                 "--rpc-listen", f"127.0.0.1:{self.rpc_port}",
                 "--socket", self.socket, "--host-id", self.host_id]
        if self.seed:
            args.append("--seed")
        args += _flag_args(flags)
        self.proc = Proc(args, self.log_path, name=self.name)
        deadline = time.monotonic() + scaled(ready_timeout)
        wait_port(self.piece_port, scaled(ready_timeout), self.proc)
        # Connect, not just exists(): a restarted daemon finds its predecessor's stale file.
        wait_until(lambda: unix_socket_accepts(self.socket) or self.proc.poll() is not None,
                   max(0.1, deadline - time.monotonic()), what=f"{self.name} socket {self.socket}")
        if self.proc.poll() is not None:
            self.proc.reported = True
            raise RuntimeError(f"{self.name} exited with {self.proc.returncode}\n"
                               f"{self.proc.log_tail()}")
        return self

    def restart(self, ready_timeout=20):
        """Starts the daemon again on the same data dir, ports and socket (after stop/kill9)."""
        if self.proc is not None and self.proc.alive():
            raise RuntimeError(f"{self.name} is still running")
        return self._start(ready_timeout)

    @property
    def tls(self):
        """This daemon's tls_flags when it runs with --tls-* (its piece port is HTTPS and
        wants a client certificate: its own serves), else None."""
        if self.extra.get("tls_cert"):
            return {k: self.extra[k] for k in ("tls_cert", "tls_key", "tls_ca")}
        return None

    def metrics(self):
        return fetch_metrics(self.piece_port, tls=self.tls)

    def metric(self, name, default=0.0, **labels):
        return self.metrics().value(name, default, **labels)

    def download_bytes(self, source):
        return self.metric("damselfly_download_bytes_total", source=source)

    def upload_bytes(self):
        return self.metric("damselfly_upload_bytes_total")

    def stop(self):
        return self.proc.stop()

    def kill9(self):
        return self.proc.kill9()

    def log_bytes(self):
        return self.proc.log_bytes() if self.proc else b""


def start_daemon(tmp_path, name, scheduler=None, seed=False, host_id=None, ready_timeout=20,
                 prefix=None, **flags):
    """Starts `damselfly daemon` named name under tmp_path/name with free ports. scheduler is
    a Scheduler, an "addr:port" string, or None (no scheduler). Waits until the socket exists
    and the piece port accepts. prefix is a command that execs the daemon (prlimit ... --)."""
    d = Path(tmp_path) / name
    d.mkdir(parents=True, exist_ok=True)
    data = d / "data"
    data.mkdir(exist_ok=True)
    # Every daemon gets its own proxy port (the default 65001 would collide between the
    # daemons of one test); proxy_listen="off" runs without a proxy.
    flags.setdefault("proxy_listen", f"127.0.0.1:{free_port()}")
    # The tests' origins run on 127.0.0.1, which the origin policy refuses for fetches other
    # hosts ask for (seed triggers, preheats): a deliberate opt-in for a one-machine cluster.
    # origin_allow=None tests the default.
    flags.setdefault("origin_allow", "127.0.0.0/8")
    # The test's seed listens where the schedulers' --seed-hosts says (seed_rpc_port).
    rpc_port = seed_rpc_port() if seed and (host_id or name) == "seed" else free_port()
    dm = Daemon(name=name, dir=d, data_dir=data, socket_path=_short_socket_path(d, name),
                piece_port=free_port(), rpc_port=rpc_port, log_path=Path(tmp_path) / f"{name}.log",
                host_id=host_id or name, seed=seed, scheduler=scheduler, extra=flags,
                prefix=prefix)
    pl = str(flags["proxy_listen"])
    dm.proxy_port = int(pl.rsplit(":", 1)[1]) if ":" in pl else None
    return dm._start(ready_timeout)


# ---- resident memory ---------------------------------------------------------------------

# What a daemon holds besides piece buffers, measured by test_memory_4g.py (RelWithDebInfo,
# glibc malloc): an idle daemon is about 18.5 MiB (code, gRPC/absl/OpenSSL/SQLite state,
# thread stacks); at the peak of a 4 GiB download RSS was 20-25 MiB above the piece buffers
# held (seed: 211.5 MiB RSS with 188 MiB of buffers; daemon: 147.4 MiB with 128 MiB). 64 MiB
# leaves room for malloc's per-thread arenas and one piece beyond the budget (a transfer may
# always start when nothing is held: up to 4 MiB there).
DAEMON_RSS_OVERHEAD = 64 * MiB


def status_kib(pid, field):
    """A "kB" field of /proc/PID/status (VmRSS, VmHWM) in KiB; 0 once the process is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


class RssSampler(threading.Thread):
    """Samples VmRSS of some processes ({name: pid}) every 100 ms; finish() also reads VmHWM
    (the kernel's own peak) and returns {name: peak bytes}."""

    def __init__(self, procs):
        super().__init__(daemon=True)
        self.procs = procs
        self.peak = {name: 0 for name in procs}
        self.stopping = threading.Event()

    def run(self):
        while not self.stopping.is_set():
            for name, pid in self.procs.items():
                self.peak[name] = max(self.peak[name], status_kib(pid, "VmRSS") * 1024)
            self.stopping.wait(0.1)

    def finish(self):
        self.stopping.set()
        self.join(timeout=5)
        for name, pid in self.procs.items():
            self.peak[name] = max(self.peak[name], status_kib(pid, "VmHWM") * 1024)
        return self.peak


# ---- the CLI -----------------------------------------------------------------------------

def _get_args(daemon, url, out, args):
    require_binary()
    sock = daemon.socket if isinstance(daemon, Daemon) else daemon
    return [str(binary()), "get", str(url), "-O", str(out), "--socket", str(sock)] + \
        [str(a) for a in args]


def run_get(daemon, url, out, *args, timeout=60, input=None):
    """Runs `damselfly get URL -O out --socket <daemon's socket> args...` and returns the
    CompletedProcess (stdout/stderr bytes). daemon may be a Daemon or a socket path. The
    process is killed when it outlives timeout (scaled), which raises TimeoutExpired."""
    return subprocess.run(_get_args(daemon, url, out, args), stdin=subprocess.DEVNULL,
                          capture_output=True, timeout=scaled(timeout))


def get_sha256(daemon, url, stderr_path, *args, timeout=60):
    """Runs `damselfly get URL -O - -q args...` and hashes what it writes as it comes (no copy
    on disk or in memory, for contents of gigabytes). Returns (exit code, bytes written,
    SHA-256 hex); stderr goes to stderr_path. get is killed when it has not exited timeout
    (scaled) seconds after its output ended."""
    h, got = hashlib.sha256(), 0
    with open(stderr_path, "wb") as err:
        get = subprocess.Popen(_get_args(daemon, url, "-", ["-q"] + list(args)),
                               stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=err)
        try:
            while True:
                chunk = get.stdout.read(4 * MiB)
                if not chunk:
                    break
                h.update(chunk)
                got += len(chunk)
            rc = get.wait(timeout=scaled(timeout))
        finally:
            if get.poll() is None:
                get.kill()
                get.wait(timeout=10)
            get.stdout.close()
    return rc, got, h.hexdigest()


def generated_through_a_seed(tmp_path, origin, size, content_seed, memory_limit, **daemon_kw):
    """size bytes made on the fly by the origin (Generated, content_seed), fetched by a seed
    (16 range requests at once) and from it by a daemon (16 requests to its parent at once),
    both with --memory-limit memory_limit, through `get -O -` hashed as it comes; the RSS of
    both is sampled meanwhile. Asserts that get succeeded, that the bytes are exactly the
    origin's, and that they came through the seed (the daemon asked the origin for nothing).
    Returns ({"seed": Daemon, "d1": Daemon}, peak RSS by name, seconds, idle RSS by name)."""
    gen = origin.add_generated("/big.bin", size, seed=content_seed)
    expected = {}
    hasher = threading.Thread(target=lambda: expected.setdefault("sha", gen.sha256()),
                              daemon=True)
    hasher.start()
    sched = start_scheduler(tmp_path)
    procs = {"seed": start_daemon(tmp_path, "seed", scheduler=sched, seed=True,
                                  memory_limit=memory_limit, source_concurrency=16, **daemon_kw),
             "d1": start_daemon(tmp_path, "d1", scheduler=sched, memory_limit=memory_limit,
                                parent_concurrency=16, **daemon_kw)}
    wait_hosts(sched, 2)
    idle = {n: status_kib(p.proc.pid, "VmRSS") * 1024 for n, p in procs.items()}
    sampler = RssSampler({n: p.proc.pid for n, p in procs.items()})
    sampler.start()
    started = time.monotonic()
    rc, got, sha = get_sha256(procs["d1"], origin.url("/big.bin"), tmp_path / "get.stderr",
                              timeout=30)
    elapsed = time.monotonic() - started
    peak = sampler.finish()
    hasher.join(timeout=scaled(60))
    assert rc == 0, f"get exited {rc}: {(tmp_path / 'get.stderr').read_bytes()[-2000:]!r}"
    assert got == size, f"get wrote {got} bytes of {size}"
    assert sha == expected["sha"], "the bytes written differ from the origin's"
    assert procs["seed"].download_bytes("origin") >= size
    assert procs["d1"].download_bytes("origin") == 0, \
        "the daemon went to the origin: the seed path was not exercised"
    return procs, peak, elapsed, idle


class GetProc:
    """A `damselfly get` running in the background (stdout/stderr to files)."""

    def __init__(self, daemon, url, out, args, log_dir, name):
        self.name = name
        self.out = Path(out)
        self.stdout_path = Path(log_dir) / f"{name}.stdout"
        self.stderr_path = Path(log_dir) / f"{name}.stderr"
        self._so = open(self.stdout_path, "wb")
        self._se = open(self.stderr_path, "wb")
        self.popen = subprocess.Popen(_get_args(daemon, url, out, args), stdin=subprocess.DEVNULL,
                                      stdout=self._so, stderr=self._se)
        self.start = time.monotonic()
        self.elapsed = None

    def poll(self):
        rc = self.popen.poll()
        if rc is not None and self.elapsed is None:
            self.elapsed = time.monotonic() - self.start
        return rc

    def wait(self, timeout):
        """Waits up to timeout seconds (already scaled by the caller); kills on expiry."""
        try:
            self.popen.wait(timeout=max(0.0, timeout))
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait(timeout=10)
            self._close()
            raise
        if self.elapsed is None:
            self.elapsed = time.monotonic() - self.start
        self._close()
        return self.result()

    def kill(self):
        if self.popen.poll() is None:
            self.popen.kill()
            self.popen.wait(timeout=10)
        self._close()

    def _close(self):
        for f in (self._so, self._se):
            if not f.closed:
                f.close()

    def result(self):
        return subprocess.CompletedProcess(self.popen.args, self.popen.returncode,
                                           self.stdout_path.read_bytes(),
                                           self.stderr_path.read_bytes())


_live_gets = []


def spawn_get(daemon, url, out, *args, log_dir, name):
    g = GetProc(daemon, url, out, args, log_dir, name)
    _live_gets.append(g)
    return g


def wait_gets(gets, timeout):
    """Waits for every GetProc within one shared deadline (scaled); returns their results."""
    deadline = time.monotonic() + scaled(timeout)
    return [g.wait(deadline - time.monotonic()) for g in gets]


def kill_gets():
    while _live_gets:
        _live_gets.pop().kill()


def get_error_lines(cp):
    """The stderr lines of a finished get that start with "damselfly get:"."""
    return [l for l in cp.stderr.decode("utf-8", "replace").splitlines()
            if l.startswith("damselfly get:")]


def describe(cp):
    """A short description of a finished get for assertion messages (never the content)."""
    err = cp.stderr.decode("utf-8", "replace").strip().splitlines()
    return f"exit {cp.returncode}; stderr: {' | '.join(err[-5:])}"


# ---- task IDs (a reimplementation of src/common/taskid.c from its contract) ---------------

_DEFAULT_PORTS = {"http": "80", "https": "443"}


def normalize_url(url, filter_query=()):
    """Lower-cases scheme and host, drops the default port and the fragment, removes the
    filtered query parameters and sorts the rest by name, then value (byte order)."""
    parts = urllib.parse.urlsplit(url)
    scheme = parts.scheme.lower()
    netloc = parts.netloc
    userinfo, at, hostport = netloc.rpartition("@")
    if hostport.startswith("["):
        host, _, rest = hostport.partition("]")
        host += "]"
        port = rest[1:] if rest.startswith(":") else ""
    else:
        host, _, port = hostport.partition(":")
    host = host.lower()
    if port == _DEFAULT_PORTS.get(scheme):
        port = ""
    netloc = (userinfo + at if at else "") + host + (":" + port if port else "")
    filt = set(filter_query)
    params = []
    if parts.query:
        for item in parts.query.split("&"):
            if item == "":
                continue
            name, eq, value = item.partition("=")
            if name in filt:
                continue
            params.append((name, eq, value))
    params.sort(key=lambda p: (p[0].encode(), p[2].encode()))
    query = "&".join(n + eq + v for n, eq, v in params)
    out = f"{scheme}://{netloc}{parts.path}"
    if query:
        out += "?" + query
    return out


def _field(name, value):
    v = value.encode()
    return f"{name}=".encode() + str(len(v)).encode() + b":" + v + b"\n"


def task_id(url=None, tag="", application="", piece_length=0, filter_query=(), digest=None):
    if digest:
        algo, _, hexpart = digest.partition(":")
        return hashlib.sha256(_field("digest", f"{algo.lower()}:{hexpart.lower()}")).hexdigest()
    h = hashlib.sha256()
    h.update(_field("url", normalize_url(url, filter_query)))
    h.update(_field("tag", tag or ""))
    h.update(_field("application", application or ""))
    h.update(_field("piece_length", str(piece_length)))
    return h.hexdigest()


def piece_length_for(content_length):
    """Smallest power of two >= 256 KiB with at most 1024 pieces; unknown length -> 4 MiB."""
    if content_length is None or content_length < 0:
        return 4 * MiB
    pl = 256 * 1024
    while (content_length + pl - 1) // pl > 1024:
        pl *= 2
    return pl


def piece_count(content_length, piece_len=None):
    pl = piece_len or piece_length_for(content_length)
    return (content_length + pl - 1) // pl


# ---- the piece server's /have stream --------------------------------------------------------

def read_have(piece_port, tid, want_pieces, timeout):
    """Reads GET /have/<tid> until want_pieces "have" lines or "done" arrived, or the
    response ended. Returns (set of pieces, done_total or None). Raises TimeoutError."""
    deadline = time.monotonic() + timeout
    have, done = set(), None
    with socket.create_connection(("127.0.0.1", piece_port), timeout=2) as s:
        s.sendall(f"GET /have/{tid} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
        raw = b""          # undecoded bytes
        text = b""         # decoded body not yet split into lines
        chunked = None     # None until the headers are in
        ended = False
        while not ended:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"/have/{tid}: {len(have)} pieces after {timeout:.1f}s")
            s.settimeout(min(left, 1.0))
            try:
                data = s.recv(65536)
            except socket.timeout:
                continue
            if not data:
                ended = True
            raw += data
            if chunked is None:
                head, sep, rest = raw.partition(b"\r\n\r\n")
                if not sep:
                    continue
                lines = head.split(b"\r\n")
                if b" 200" not in lines[0]:
                    raise RuntimeError(f"/have/{tid}: {lines[0].decode(errors='replace')}")
                chunked = any(l.lower().startswith(b"transfer-encoding:") and b"chunked" in
                              l.lower() for l in lines[1:])
                raw = rest
            if chunked:
                while True:
                    size_line, sep, rest = raw.partition(b"\r\n")
                    if not sep:
                        break
                    size = int(size_line.split(b";")[0].strip() or b"0", 16)
                    if size == 0:
                        ended = True
                        break
                    if len(rest) < size + 2:
                        break
                    text += rest[:size]
                    raw = rest[size + 2:]
            else:
                text += raw
                raw = b""
            *complete, text = text.split(b"\n")
            for line in complete:
                line = line.strip()
                if line.startswith(b"have "):
                    have.add(int(line[5:]))
                elif line.startswith(b"done "):
                    done = int(line[5:])
            if done is not None or len(have) >= want_pieces:
                break
    return have, done


# ---- clusters ----------------------------------------------------------------------------

def wait_hosts(scheduler, n, timeout=15):
    """Waits until the scheduler's damselfly_scheduler_hosts reaches n."""
    def known():
        try:
            return scheduler.metrics().value("damselfly_scheduler_hosts") >= n
        except OSError:
            return False
    wait_until(known, scaled(timeout), interval=0.1, what=f"scheduler to know {n} hosts")


def start_cluster(tmp_path, daemons=3, scheduler_flags=None, daemon_flags=None, seed=True):
    """A scheduler, a seed (unless seed=False) and daemons d1..dN, all announced. Returns a
    namespace with scheduler, seed, daemons (list), all (seed + daemons)."""
    s = start_scheduler(tmp_path, **(scheduler_flags or {}))
    df = dict(daemon_flags or {})
    sd = start_daemon(tmp_path, "seed", scheduler=s, seed=True, **df) if seed else None
    ds = [start_daemon(tmp_path, f"d{i}", scheduler=s, **df) for i in range(1, daemons + 1)]
    wait_hosts(s, daemons + (1 if seed else 0))
    return types.SimpleNamespace(scheduler=s, seed=sd, daemons=ds,
                                 all=([sd] if sd else []) + ds)


# ---- a fake parent: a Python piece server announced to the scheduler over gRPC ------------

class FakeParent:
    """Announces a host and a peer that holds every piece of a task, and serves pieces from
    its own HTTP piece server, corrupted when corrupt=True (one byte flipped in the middle
    of every piece). requests lists every request path it received. With report_digests it
    also reports the SHA-256 of the pieces it serves (a rogue claiming its bytes are the
    task's) and sends them in made-up digest headers with every piece; register_kw adds
    fields to its RegisterPeer (from_source=True: it claims to fetch from the origin), and
    progress_kw to its PieceProgress (etag=...: validators of its own); with progress_gate
    (a threading.Event) it sends its progress only once the event is set. With
    stall=True it offers every piece on /have and then answers no piece request at all (the
    connection stays open until stop())."""

    def __init__(self, scheduler, task_id, url, content, host_id="fake", peer_id=None,
                 corrupt=True, upload_capacity=10 << 30, rate=None, report_digests=False,
                 register_kw=None, stall=False, progress_kw=None, progress_gate=None):
        self.scheduler = scheduler
        self.task_id = task_id
        self.url = url
        self.content = content
        self.piece_len = piece_length_for(len(content))
        self.total = piece_count(len(content), self.piece_len)
        self.host_id = host_id
        self.peer_id = peer_id or f"{host_id}-peer"
        self.corrupt = corrupt
        self.upload_capacity = upload_capacity
        self.rate = rate  # bytes per second of each piece response (None: as fast as it can)
        self.report_digests = report_digests
        self.register_kw = dict(register_kw or {})
        self.progress_kw = dict(progress_kw or {})
        self.progress_gate = progress_gate
        self.stall = stall
        self.requests = []
        self.lock = threading.Lock()
        self.responses = []
        self._stop = threading.Event()
        self._threads = []
        self._http = None
        self._channel = None

    def piece(self, n):
        b = bytearray(self.content[n * self.piece_len:(n + 1) * self.piece_len])
        if self.corrupt and b:
            b[len(b) // 2] ^= 0xFF
        return bytes(b)

    def request_count(self):
        with self.lock:
            return len(self.requests)

    def start(self):
        import http.server
        fake = self

        class H(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            timeout = 30

            def log_message(self, *a):
                pass

            def do_GET(self):
                with fake.lock:
                    fake.requests.append(self.path)
                parts = self.path.strip("/").split("/")
                if len(parts) == 3 and parts[0] == "pieces" and parts[1] == fake.task_id:
                    try:
                        n = int(parts[2])
                    except ValueError:
                        n = -1
                    if 0 <= n < fake.total and fake.stall:
                        fake._stop.wait(120)
                        self.close_connection = True
                        return
                    if 0 <= n < fake.total:
                        body = fake.piece(n)
                        self.send_response(200)
                        self.send_header("Content-Type", "application/octet-stream")
                        self.send_header("Content-Length", str(len(body)))
                        if fake.report_digests:
                            h = hashlib.sha256(body)
                            self.send_header("X-Damselfly-Piece-Digest", h.hexdigest())
                            self.send_header("Digest", "sha-256=" + base64.b64encode(
                                h.digest()).decode())
                        self.end_headers()
                        if fake.rate is None:
                            self.wfile.write(body)
                            return
                        step = 4096
                        for off in range(0, len(body), step):
                            if fake._stop.is_set():
                                return
                            try:
                                self.wfile.write(body[off:off + step])
                                self.wfile.flush()
                            except OSError:
                                return
                            time.sleep(step / fake.rate)
                        return
                if len(parts) == 2 and parts[0] == "have" and parts[1] == fake.task_id:
                    self.send_response(200)
                    self.send_header("Content-Type", "text/plain")
                    self.send_header("Transfer-Encoding", "chunked")
                    self.end_headers()
                    lines = [f"have {i}\n" for i in range(fake.total)]
                    lines.append(f"done {fake.total}\n")
                    for l in lines:
                        b = l.encode()
                        self.wfile.write(b"%x\r\n%s\r\n" % (len(b), b))
                    self.wfile.write(b"0\r\n\r\n")
                    return
                body = b"not found\n"
                self.send_response(404)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self._http = serve_http(H)
        self.piece_port = self._http.server_address[1]

        pb = proto_modules()
        import grpc
        self._channel = grpc.insecure_channel(self.scheduler.addr)
        self._stub = pb.scheduler_pb2_grpc.SchedulerStub(self._channel)
        self._announce_host(pb)  # once synchronously: the host exists before the peer
        t = threading.Thread(target=self._host_loop, args=(pb,), daemon=True)
        t.start()
        self._threads.append(t)
        t = threading.Thread(target=self._peer_stream, args=(pb,), daemon=True)
        t.start()
        self._threads.append(t)
        return self

    def _announce_host(self, pb):
        host = pb.scheduler_pb2.Host(id=self.host_id, hostname=self.host_id, ip="127.0.0.1",
                                     piece_port=self.piece_port, rpc_port=0,
                                     type=pb.scheduler_pb2.HOST_TYPE_NORMAL,
                                     upload_capacity=self.upload_capacity, upload_rate=0,
                                     active_uploads=0)
        self._stub.AnnounceHost(pb.scheduler_pb2.AnnounceHostRequest(host=host), timeout=5)

    def _host_loop(self, pb):
        while not self._stop.wait(1.0):
            try:
                self._announce_host(pb)
            except Exception:  # the scheduler may be gone at the end of a test
                pass

    def _peer_stream(self, pb):
        s = pb.scheduler_pb2
        L = len(self.content)

        def requests():
            yield s.AnnouncePeerRequest(register=s.RegisterPeer(
                task_id=self.task_id, peer_id=self.peer_id, host_id=self.host_id, url=self.url,
                **self.register_kw))
            digests = [pb.common_pb2.PieceDigest(number=n, sha256=hashlib.sha256(
                self.piece(n)).digest()) for n in range(self.total)] if self.report_digests else []
            while self.progress_gate is not None and not self.progress_gate.wait(0.2):
                if self._stop.is_set():
                    return
            yield s.AnnouncePeerRequest(progress=s.PieceProgress(
                pieces=list(range(self.total)), digests=digests, content_length=L,
                piece_length=self.piece_len, **self.progress_kw))
            yield s.AnnouncePeerRequest(finished=s.PeerFinished(content_length=L,
                                                                total_pieces=self.total))
            while not self._stop.wait(0.2):
                pass

        try:
            for r in self._stub.AnnouncePeer(requests()):
                self.responses.append(r)
        except Exception:
            pass

    def stop(self):
        self._stop.set()
        if self._channel is not None:
            self._channel.close()
        if self._http is not None:
            self._http.shutdown()
            self._http.server_close()
        for t in self._threads:
            t.join(timeout=5)


def stat_task(scheduler, tid, timeout=5):
    pb = proto_modules()
    return scheduler.stub().StatTask(pb.scheduler_pb2.StatTaskRequest(task_id=tid),
                                     timeout=timeout)
