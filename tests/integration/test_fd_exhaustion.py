"""A daemon out of descriptors: 1,100 idle connections to its piece port at nofile 1024.
The listener pauses instead of spinning on accept(), the log says so once per interval,
and once the idle timeout frees slots a valid request is answered again."""

import resource
import socket
import subprocess
import time

import pytest

from harness import scaled, start_daemon
from test_proxy_bounds import cpu_seconds

CONNS = 1100


@pytest.mark.serial
@pytest.mark.deadline(120)
def test_idle_connection_flood_at_nofile_1024(tmp_path, need_binary):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < CONNS + 200:
        pytest.skip(f"the test itself needs {CONNS + 200} descriptors (hard limit {hard})")
    resource.setrlimit(resource.RLIMIT_NOFILE, (CONNS + 200, hard))
    d = start_daemon(tmp_path, "d1", piece_idle_timeout="4s")
    assert b"open files limit:" in d.log_bytes()
    subprocess.run(["prlimit", f"--pid={d.proc.pid}", "--nofile=1024:1024"], check=True)

    conns = []
    try:
        for _ in range(CONNS):
            s = socket.socket()
            s.setblocking(False)
            try:
                s.connect(("127.0.0.1", d.piece_port))
            except BlockingIOError:
                pass
            conns.append(s)
        time.sleep(1)  # the daemon accepts until it has no descriptor left
        log_before = d.log_bytes().count(b"\n")
        cpu_before = cpu_seconds(d.proc.pid)
        time.sleep(3)
        cpu = cpu_seconds(d.proc.pid) - cpu_before
        log = d.log_bytes()
        added = log.count(b"\n") - log_before
        print(f"out of descriptors for 3 s: daemon CPU {cpu:.3f} s, {added} log lines")
        assert b"piece server: cannot accept connections: Too many open files" in log
        assert cpu < scaled(0.5), f"the daemon spun: {cpu:.2f} CPU-s in 3 s"
        assert added <= 6, log.decode(errors="replace")[-2000:]

        # The idle timeout (4 s) closes what was accepted; a valid request gets through.
        t0 = time.monotonic()
        answered = None
        while time.monotonic() - t0 < scaled(30) and answered is None:
            try:
                with socket.create_connection(("127.0.0.1", d.piece_port), timeout=2) as s:
                    s.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
                    s.settimeout(scaled(5))
                    reply = s.recv(64)
                    if reply.startswith(b"HTTP/1.1 200"):
                        answered = time.monotonic() - t0
            except OSError:
                time.sleep(0.2)
        assert answered is not None, "no valid request answered after the idle timeout"
        print(f"a valid request answered {answered:.1f} s after the flood's 4 s")
    finally:
        for s in conns:
            s.close()
    assert d.proc.alive()
