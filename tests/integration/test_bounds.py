"""Bounded under load (the daemon side): what any peer can make the piece server do with
requests for tasks it does not hold."""
import os
import secrets
import socket
import sqlite3
import statistics
import threading
import time
from pathlib import Path

import pytest

from harness import binary, scaled, start_daemon


def sanitized():
    """ASan's allocator keeps freed memory in quarantine: RSS bounds do not hold there."""
    return b"__asan_init" in binary().read_bytes()


def rss_kib(pid):
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def flood_unknown(port, n, kind="pieces", batch=1000):
    """n pipelined GETs for random task ids on one keep-alive connection; returns how many
    were answered 404."""
    s = socket.create_connection(("127.0.0.1", port), timeout=scaled(30))
    answered, tail = 0, b""
    pat = b"HTTP/1.1 404"
    try:
        for i in range(0, n, batch):
            k = min(batch, n - i)
            s.sendall(b"".join(b"GET /%s/%s%s HTTP/1.1\r\nHost: x\r\n\r\n" %
                               (kind.encode(), secrets.token_hex(32).encode(),
                                b"/0" if kind == "pieces" else b"") for _ in range(k)))
            while answered < i + k:
                chunk = s.recv(1 << 20)
                if not chunk:
                    return answered
                data = tail + chunk
                answered += data.count(pat)
                tail = data[-(len(pat) - 1):]
    finally:
        s.close()
    return answered


@pytest.mark.deadline(180)
def test_unknown_task_requests_touch_nothing(tmp_path, need_binary):
    """100,000 /pieces and 10,000 /have requests for random unknown task ids: every one 404,
    no file or row made, RSS flat, and the loop still answers another client within 10 ms
    (median) meanwhile."""
    d = start_daemon(tmp_path, "d1")
    before = rss_kib(d.proc.pid)
    latencies, done = [], threading.Event()

    def probe():
        s = socket.create_connection(("127.0.0.1", d.piece_port), timeout=scaled(10))
        try:
            while not done.is_set() and len(latencies) < 200:
                t0 = time.monotonic()
                s.sendall(b"GET /pieces/" + b"0" * 64 + b"/0 HTTP/1.1\r\nHost: x\r\n\r\n")
                buf = b""
                while b"\r\n\r\n" not in buf or not buf.endswith(b"\n"):
                    buf += s.recv(4096)
                latencies.append(time.monotonic() - t0)
                time.sleep(0.02)
        finally:
            s.close()

    t = threading.Thread(target=probe)
    t.start()
    t0 = time.monotonic()
    got = flood_unknown(d.piece_port, 100_000)
    got_have = flood_unknown(d.piece_port, 10_000, kind="have")
    elapsed = time.monotonic() - t0
    done.set()
    t.join(scaled(10))
    after = rss_kib(d.proc.pid)
    med = statistics.median(latencies) if latencies else float("inf")
    print(f"100,000 /pieces + 10,000 /have for unknown tasks in {elapsed:.1f}s; RSS "
          f"{before} -> {after} KiB; another client's request meanwhile: median "
          f"{med * 1000:.2f} ms, max {max(latencies) * 1000:.2f} ms over {len(latencies)}")
    assert got == 100_000 and got_have == 10_000, (got, got_have)
    assert sanitized() or after - before < 4096, (before, after)
    assert med < scaled(0.010), med
    tasks_dir = Path(d.data_dir) / "tasks"
    made = [p for p in tasks_dir.rglob("*")] if tasks_dir.exists() else []
    assert made == [], made[:5]
    with sqlite3.connect(f"file:{d.data_dir / 'meta.db'}?mode=ro", uri=True) as db:
        assert db.execute("SELECT COUNT(*) FROM tasks").fetchone()[0] == 0
    assert d.proc.poll() is None


@pytest.mark.deadline(180)
def test_scheduler_ends_a_stream_that_never_reads(tmp_path, need_binary, pb):
    """A peer that registers and then never reads its AnnouncePeer stream while 1,000
    TaskMeta pushes are due (a source reports 200 digests at a time, 200,000 in all, about
    8 MiB of pushes, more than the client's transport window takes in): the scheduler's RSS
    grows by less than 32 MiB (the task's digests themselves take about 10), the stream is ended as a slow reader 30 s after its first
    message stalled (DMF_RPC_SEND_STALL_MS) although nothing more is sent to it, and the
    scheduler serves others meanwhile."""
    import grpc
    from harness import MiB, start_scheduler, task_id
    from test_scheduler_contract import PeerStream, host
    s = pb.scheduler_pb2
    c = pb.common_pb2
    sched = start_scheduler(tmp_path, seed_hosts=None)
    stub = sched.stub()
    for h in ("source", "sloth"):
        stub.AnnounceHost(host(pb, h), timeout=scaled(5))
    tid = task_id("http://origin.invalid/big")
    src = PeerStream(stub, pb)
    src.send(register=s.RegisterPeer(task_id=tid, peer_id="src", host_id="source",
                                     url="http://origin.invalid/big"))
    assert src.recv().WhichOneof("msg") == "back_to_source"

    # The sloth's call: its requests are sent, its responses never read.
    out = []
    cond = threading.Condition()

    def requests():
        yield s.AnnouncePeerRequest(register=s.RegisterPeer(
            task_id=tid, peer_id="sloth", host_id="sloth", url="http://origin.invalid/big"))
        with cond:
            cond.wait_for(lambda: out, timeout=scaled(120))
    sloth = stub.AnnouncePeer(requests(), timeout=scaled(120))
    time.sleep(0.5)
    before = rss_kib(sched.proc.pid)
    per = 200  # digests per report: each push carries about 8 KiB
    pieces = 1000 * per
    for n in range(1000):
        nums = range(n * per, (n + 1) * per)
        src.send(progress=s.PieceProgress(
            pieces=list(nums),
            digests=[c.PieceDigest(number=k, sha256=k.to_bytes(32, "big")) for k in nums],
            content_length=pieces * MiB, piece_length=MiB))
        if n % 100 == 99:
            time.sleep(0.05)
    peak = before
    t0 = time.monotonic()
    while time.monotonic() - t0 < scaled(60):
        peak = max(peak, rss_kib(sched.proc.pid))
        if sched.metrics().value("damselfly_rpc_slow_readers_total") >= 1:
            break
        time.sleep(0.5)
    ended_after = time.monotonic() - t0
    slow = sched.metrics().value("damselfly_rpc_slow_readers_total")
    print(f"1,000 pushes to a stream that never reads: scheduler RSS {before} -> peak {peak} "
          f"KiB; the stream ended as a slow reader after {ended_after:.1f} s ({slow:.0f})")
    assert slow >= 1, "the stream that never reads was not ended"
    assert sanitized() or peak - before < 32 * 1024, (before, peak)
    with cond:
        out.append(True)
        cond.notify_all()
    sloth.cancel()
    src.close()
    # The scheduler serves others as before.
    stub.AnnounceHost(host(pb, "other"), timeout=scaled(5))
    other = PeerStream(stub, pb)
    other.send(register=s.RegisterPeer(task_id=task_id("http://origin.invalid/other"),
                                       peer_id="o", host_id="other",
                                       url="http://origin.invalid/other"))
    assert other.recv().WhichOneof("msg") == "back_to_source"
    other.close()
