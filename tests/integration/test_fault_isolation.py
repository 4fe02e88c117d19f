"""Fault isolation (issue 10): no download hangs when a seed, a scheduler, a parent or the
origin fails or restarts. Every test starts real processes on 127.0.0.1 and checks what a
user sees: the bytes of every `get`, how long it took, and what the origin served."""

import os
import signal
import time

import pytest

from harness import (MiB, describe, run_get, scaled, sha256_file, spawn_get, start_cluster,
                     start_daemon, start_scheduler, wait_gets, wait_hosts, wait_until)


def _received(d):
    """Bytes of verified pieces a daemon has, from anywhere (its metrics)."""
    try:
        return sum(d.download_bytes(s) for s in ("origin", "seed", "peer"))
    except OSError:
        return 0


def _peer_bytes(d):
    return d.download_bytes("peer") + d.download_bytes("seed")


@pytest.mark.deadline(180)
def test_seed_killed_at_a_third(tmp_path, origin, need_binary):
    """SIGKILL the seed a third into a 64 MiB transfer to 4 daemons: all 4 finish with the
    right bytes within 10 s of the kill; after the seed restarts, a new host's get is
    served by peers."""
    size = 64 * MiB
    sha = origin.add_random("/big.bin", size, tmp_path / "origin")
    url = origin.url("/big.bin")
    origin.throttle = 16 * MiB  # ~4 s for the seed's fetch: the kill lands mid-transfer
    c = start_cluster(tmp_path, daemons=4, scheduler_flags={"host_timeout": "3s"},
                      daemon_flags={"announce_interval": "1s"})
    outs = {d.name: tmp_path / f"out-{d.name}" for d in c.daemons}
    gets = [spawn_get(d, url, outs[d.name], log_dir=tmp_path, name=f"get-{d.name}")
            for d in c.daemons]

    wait_until(lambda: max(_received(d) for d in c.daemons) >= size // 3, scaled(60),
               interval=0.02, what="a daemon a third of the way")
    held = [_received(d) // MiB for d in c.daemons]
    c.seed.kill9()
    killed = time.monotonic()
    print(f"seed killed with the daemons at {held} MiB")

    results = wait_gets(gets, 60)
    took = time.monotonic() - killed
    for d, cp in zip(c.daemons, results):
        assert cp.returncode == 0, f"get on {d.name} after the seed died: {describe(cp)}"
        assert sha256_file(outs[d.name]) == sha, f"{d.name}: content differs from the origin's"
    print(f"all 4 finished {took:.2f} s after the kill; origin sent {origin.sent() / MiB:.1f} MiB")
    assert took <= scaled(10), f"the downloads took {took:.1f} s after the seed died"

    # The seed comes back with what it had; a new host still gets the file through P2P.
    c.seed.restart()
    wait_hosts(c.scheduler, 5)
    new = start_daemon(tmp_path, "d5", scheduler=c.scheduler, announce_interval="1s")
    wait_hosts(c.scheduler, 6)
    sent_before = origin.sent()
    cp = run_get(new, url, tmp_path / "out-d5", timeout=60)
    assert cp.returncode == 0, f"get on a new host after the seed restarted: {describe(cp)}"
    assert sha256_file(tmp_path / "out-d5") == sha
    assert new.download_bytes("origin") == 0, "the new host went to the origin"
    assert _peer_bytes(new) >= size, "the new host was not served by peers"
    assert origin.sent() == sent_before, "the origin was asked again"


@pytest.mark.deadline(180)
def test_scheduler_killed_and_restarted(tmp_path, origin, need_binary):
    """SIGKILL the scheduler mid-transfer and restart it on the same address: every download
    completes with the right bytes, and a new host's get afterwards is served by peers (the
    restarted scheduler learnt who holds what from the daemons' re-registrations)."""
    size = 64 * MiB
    sha = origin.add_random("/s.bin", size, tmp_path / "origin")
    url = origin.url("/s.bin")
    origin.throttle = 16 * MiB
    c = start_cluster(tmp_path, daemons=4, scheduler_flags={"host_timeout": "3s"},
                      daemon_flags={"announce_interval": "1s"})
    outs = {d.name: tmp_path / f"out-{d.name}" for d in c.daemons}
    gets = [spawn_get(d, url, outs[d.name], log_dir=tmp_path, name=f"get-{d.name}")
            for d in c.daemons]
    wait_until(lambda: max(_received(d) for d in c.daemons) >= size // 3, scaled(60),
               interval=0.02, what="a daemon a third of the way")
    port, mport = c.scheduler.port, c.scheduler.metrics_port
    c.scheduler.kill9()
    killed = time.monotonic()
    time.sleep(1.0)
    sched = start_scheduler(tmp_path, name="scheduler2", port=port, metrics_port=mport,
                            host_timeout="3s")
    results = wait_gets(gets, 90)
    took = time.monotonic() - killed
    for d, cp in zip(c.daemons, results):
        assert cp.returncode == 0, f"get on {d.name} across the restart: {describe(cp)}"
        assert sha256_file(outs[d.name]) == sha, f"{d.name}: content differs from the origin's"
    print(f"all 4 finished {took:.2f} s after the scheduler was killed; origin sent "
          f"{origin.sent() / MiB:.1f} MiB; from origin per daemon: "
          f"{[round(d.download_bytes('origin') / MiB, 1) for d in c.daemons]} MiB")

    wait_hosts(sched, 5)
    new = start_daemon(tmp_path, "d5", scheduler=sched, announce_interval="1s")
    wait_hosts(sched, 6)
    sent_before = origin.sent()
    cp = run_get(new, url, tmp_path / "out-d5", timeout=60)
    assert cp.returncode == 0, f"get on a new host after the restart: {describe(cp)}"
    assert sha256_file(tmp_path / "out-d5") == sha
    assert new.download_bytes("origin") == 0, "the new host went to the origin"
    assert _peer_bytes(new) >= size, "the new host was not served by peers"
    assert origin.sent() == sent_before, "the origin was asked again"
