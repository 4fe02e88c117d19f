"""The daemon's shutdown sequence: every listener (proxy, local API, rpc port, piece server)
closes before the tasks are freed, so no request can bring a freed task back (it would be
leaked: nobody frees it after); then LeaveHost, whose answer or timeout ends the loop, so a
scheduler that does not answer delays the exit by a bounded time only."""

import http.client
import os
import signal
import threading
import time
import urllib.error
import urllib.request

import pytest

from harness import (MiB, run_get, scaled, spawn_get, start_daemon, start_scheduler, task_id,
                     wait_hosts)


def holding_daemon(tmp_path, origin, size):
    """A scheduler and a daemon that holds the task of /held.bin (size bytes)."""
    origin.add_random("/held.bin", size, tmp_path / "origin")
    url = origin.url("/held.bin")
    sched = start_scheduler(tmp_path)
    d = start_daemon(tmp_path, "d1", scheduler=sched)
    wait_hosts(sched, 1)
    cp = run_get(d, url, tmp_path / "out")
    assert cp.returncode == 0, cp.stderr
    return sched, d, url


@pytest.mark.deadline(90)
def test_no_task_is_loaded_during_shutdown(tmp_path, origin, need_binary):
    sched, d, url = holding_daemon(tmp_path, origin, 1 * MiB)
    piece = f"http://127.0.0.1:{d.piece_port}/pieces/{task_id(url)}/0"
    with urllib.request.urlopen(piece, timeout=scaled(5)) as r:
        assert r.status == 200

    # The scheduler stops answering: the daemon's LeaveHost waits out its deadline (~1 s).
    os.kill(sched.proc.pid, signal.SIGSTOP)
    try:
        os.kill(d.proc.pid, signal.SIGTERM)
        signalled = time.monotonic()
        statuses = []
        deadline = time.monotonic() + scaled(10)
        while d.proc.poll() is None and time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(piece, timeout=scaled(2)) as r:
                    statuses.append(r.status)
            except urllib.error.HTTPError as e:
                statuses.append(e.code)
            except OSError:
                statuses.append("closed")
            time.sleep(0.01)
        d.proc.wait(scaled(10))
        took = time.monotonic() - signalled
    finally:
        os.kill(sched.proc.pid, signal.SIGCONT)
    # The piece port closes before the tasks go: once it refused, nothing answers any more
    # (a 404 would mean a listener outlived the tasks; a 200 after it, a task loaded back).
    assert "closed" in statuses, statuses
    first_closed = statuses.index("closed")
    assert all(s == "closed" for s in statuses[first_closed:]), statuses
    assert 404 not in statuses, statuses
    assert d.proc.returncode == 0
    # LeaveHost's deadline (1 s) and the sequence's bound (1.5 s), not the 5 s of gRPC's
    # drain or a hang: the exit comes within 5 s of the signal.
    assert took < scaled(5), f"the daemon took {took:.1f} s to exit"
    log = d.log_bytes()
    assert b"shutting down" in log
    phases = [b"daemon: serving -> stopping", b"scheduler client: running -> leaving",
              b"daemon: stopping -> leaving", b"scheduler client: leaving -> left",
              b"daemon: leaving -> done"]
    at = [log.find(p) for p in phases]
    assert all(i >= 0 for i in at) and at == sorted(at), dict(zip(phases, at))


@pytest.mark.deadline(90)
def test_requests_during_sigterm_end_cleanly(tmp_path, origin, need_binary):
    """Piece requests, /have streams and gets hammer the daemon while SIGTERM arrives: it
    exits 0 within a bounded time, with no crash (and, under ASan, no leak: conftest fails
    the test on a sanitizer report)."""
    sched, d, held = holding_daemon(tmp_path, origin, 4 * MiB)
    origin.add_random("/new.bin", 8 * MiB, tmp_path / "origin")
    tid = task_id(held)
    stop = threading.Event()
    counts = {"answered": 0, "refused": 0}

    def hammer(path):
        while not stop.is_set():
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{d.piece_port}{path}",
                                            timeout=scaled(2)) as r:
                    r.read()
                counts["answered"] += 1
            except urllib.error.HTTPError:
                counts["answered"] += 1
            except (OSError, http.client.HTTPException):
                # refused, reset, or a body cut off by the shutdown (IncompleteRead)
                counts["refused"] += 1
                time.sleep(0.005)

    threads = [threading.Thread(target=hammer, args=(p,), daemon=True)
               for p in (f"/pieces/{tid}/0", f"/pieces/{tid}/0", f"/pieces/{'ab' * 32}/0",
                         f"/have/{tid}")]
    for t in threads:
        t.start()
    gets = [spawn_get(d, origin.url("/new.bin"), tmp_path / f"new{i}", log_dir=tmp_path,
                      name=f"get{i}") for i in range(3)]
    time.sleep(0.3)
    os.kill(d.proc.pid, signal.SIGTERM)
    signalled = time.monotonic()
    d.proc.wait(scaled(15))
    took = time.monotonic() - signalled
    stop.set()
    for t in threads:
        t.join(scaled(5))
    for g in gets:
        g.wait(scaled(10))  # each ends: done before the signal, or told the daemon went
    assert d.proc.returncode == 0, d.proc.log_tail()
    assert counts["answered"] > 0, counts
    assert took < scaled(5), f"the daemon took {took:.1f} s to exit"
    assert b"daemon: leaving -> done" in d.log_bytes()
