"""Trust: one rogue host must not change what anyone downloads (issue 12).

The rogue is a small Python client that speaks the scheduler's gRPC API like a daemon
(harness.FakeParent): it announces a host, registers for the task before anyone else,
reports the digests of its own bytes (and puts them in made-up digest headers of its piece
responses), and serves those bytes from its own piece server. Every honest `get` must
return the origin's bytes (the goal) or fail cleanly; none may return the rogue's."""

import os

import pytest

from harness import (FakeParent, MiB, describe, proto_modules, run_get, scaled, sha256_bytes,
                     sha256_file, spawn_get, start_cluster, start_daemon, stat_task, task_id,
                     wait_gets, wait_hosts, wait_until)


def _outcome(cp, out, real, fake):
    """'real', 'failed' (non-zero exit, not the rogue's bytes) or what went wrong."""
    got = sha256_file(out) if out.exists() else None
    if got == fake:
        return f"ROGUE BYTES (exit {cp.returncode})"
    if cp.returncode == 0:
        return "real" if got == real else f"exit 0 with other bytes ({got})"
    return "failed"


@pytest.mark.deadline(150)
@pytest.mark.parametrize("claim", ["p2p", "claims_source"])
def test_rogue_cannot_substitute_content(tmp_path, origin, need_binary, claim):
    size = 2 * MiB + 12345
    real = origin.add_random("/substitute.bin", size, tmp_path / "origin")
    url = origin.url("/substitute.bin")
    tid = task_id(url)
    c = start_cluster(tmp_path, daemons=4, daemon_flags={"progress_timeout": "5s"})
    rogue_bytes = os.urandom(size)
    fake = sha256_bytes(rogue_bytes)
    rogue = FakeParent(c.scheduler, tid, url, rogue_bytes, host_id="rogue", corrupt=False,
                       report_digests=True,
                       register_kw={"from_source": True} if claim == "claims_source" else None)
    rogue.start()
    outcomes = {}
    try:
        def rogue_registered():
            try:
                return any(p.host_id == "rogue" for p in stat_task(c.scheduler, tid).peers)
            except Exception:
                return False

        wait_until(rogue_registered, scaled(10), interval=0.1,
                   what="the scheduler to list the rogue's peer first")

        outs = [tmp_path / f"out-{d.name}" for d in c.daemons]
        gets = [spawn_get(d, url, out, log_dir=tmp_path, name=f"get-{d.name}")
                for d, out in zip(c.daemons, outs)]
        for d, cp, out in zip(c.daemons, wait_gets(gets, 60), outs):
            outcomes[d.name] = _outcome(cp, out, real, fake)

        late = start_daemon(tmp_path, "late", scheduler=c.scheduler, progress_timeout="5s")
        wait_hosts(c.scheduler, 7)
        cp = run_get(late, url, tmp_path / "out-late", timeout=60)
        outcomes["late"] = _outcome(cp, tmp_path / "out-late", real, fake)
        asked = rogue.request_count()
    finally:
        rogue.stop()
    # The rogue leaves; a second get on a daemon that holds the task, and one on a fresh
    # daemon.
    pb = proto_modules()
    c.scheduler.stub().LeaveHost(pb.scheduler_pb2.LeaveHostRequest(host_id="rogue"),
                                 timeout=scaled(5))
    d1 = c.daemons[0]
    cp = run_get(d1, url, tmp_path / "again-d1", timeout=60)
    outcomes["d1 again"] = _outcome(cp, tmp_path / "again-d1", real, fake)
    fresh = start_daemon(tmp_path, "fresh", scheduler=c.scheduler, progress_timeout="5s")
    cp = run_get(fresh, url, tmp_path / "out-fresh", timeout=60)
    outcomes["fresh"] = _outcome(cp, tmp_path / "out-fresh", real, fake)

    print(f"{claim}: outcomes {outcomes}; the rogue served {asked} requests")
    assert all(o in ("real", "failed") for o in outcomes.values()), outcomes
    # The goal is the real bytes, not just a refusal.
    assert all(o == "real" for o in outcomes.values()), outcomes
    log = c.scheduler.log_path.read_bytes()
    assert b"host rogue: its piece digests are ignored" in log
    assert b"conflicted" not in log  # the rogue's digests never even competed
