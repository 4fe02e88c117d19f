"""A daemon that is shutting down makes no task any more: while it says goodbye to a
scheduler that does not answer, its piece server still listens, and a request for a task
it had freed must not bring the task back (it would be leaked: nobody frees it after)."""

import os
import signal
import time
import urllib.error
import urllib.request

import pytest

from harness import MiB, run_get, scaled, start_daemon, start_scheduler, task_id, wait_hosts


@pytest.mark.deadline(90)
def test_no_task_is_loaded_during_shutdown(tmp_path, origin, need_binary):
    origin.add_random("/held.bin", 1 * MiB, tmp_path / "origin")
    url = origin.url("/held.bin")
    sched = start_scheduler(tmp_path)
    d = start_daemon(tmp_path, "d1", scheduler=sched)
    wait_hosts(sched, 1)
    cp = run_get(d, url, tmp_path / "out")
    assert cp.returncode == 0, cp.stderr
    piece = f"http://127.0.0.1:{d.piece_port}/pieces/{task_id(url)}/0"
    with urllib.request.urlopen(piece, timeout=scaled(5)) as r:
        assert r.status == 200

    # The scheduler stops answering: the daemon's LeaveHost waits out its deadline (~1 s).
    os.kill(sched.proc.pid, signal.SIGSTOP)
    try:
        os.kill(d.proc.pid, signal.SIGTERM)
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
    finally:
        os.kill(sched.proc.pid, signal.SIGCONT)
    answered = [s for s in statuses if s != "closed"]
    # Once the tasks are freed the piece is unknown (404), never served again from a task
    # loaded back from the store.
    assert 404 in answered, statuses
    assert 200 not in answered[answered.index(404):], statuses
    assert d.proc.returncode == 0
    assert b"shutting down" in d.log_bytes()
