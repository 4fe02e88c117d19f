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


def _announce(scheduler, host_id):
    pb = proto_modules()
    host = pb.scheduler_pb2.Host(id=host_id, hostname=host_id, ip="127.0.0.1", piece_port=9,
                                 rpc_port=0, type=pb.scheduler_pb2.HOST_TYPE_NORMAL,
                                 upload_capacity=1 << 30)
    scheduler.stub().AnnounceHost(pb.scheduler_pb2.AnnounceHostRequest(host=host),
                                  timeout=scaled(5))


def _spend_trigger_budget(scheduler, host_id, url):
    """The rogue registers for a task nobody holds, so the scheduler triggers the seed for
    it and takes the host's one seed trigger (--seed-trigger-burst 1): the rogue's next
    register is sent to the origin, which makes its digests count."""
    pb = proto_modules()
    s = pb.scheduler_pb2
    _announce(scheduler, host_id)
    tid = os.urandom(32).hex()
    reg = s.AnnouncePeerRequest(register=s.RegisterPeer(task_id=tid, peer_id=f"{host_id}-spend",
                                                        host_id=host_id, url=url))
    first = next(iter(scheduler.stub().AnnouncePeer(iter([reg]), timeout=scaled(5))))
    assert first.HasField("candidates") and first.candidates.seed_triggered, first


def _peer_state(scheduler, tid, host_id):
    try:
        for p in stat_task(scheduler, tid).peers:
            if p.host_id == host_id:
                return p.state
    except Exception:
        return None
    return None


@pytest.mark.deadline(150)
def test_conflicting_sources_are_reverified_by_a_seed(tmp_path, origin, need_binary):
    """Two rogues that are not seeds are sent to the origin (no seed has announced yet) and
    report digests of two different made-up contents; the second reports once the seed
    has announced: the task is conflicted. The scheduler has the seed fetch the task from
    the origin and hands out only its digests: every honest get afterwards returns the
    origin's bytes (before, the task failed for everyone for the negative-cache TTL)."""
    import threading

    size = 2 * MiB + 777
    real = origin.add_random("/conflict.bin", size, tmp_path / "origin")
    url = origin.url("/conflict.bin")
    tid = task_id(url)
    c = start_cluster(tmp_path, daemons=3, daemon_flags={"progress_timeout": "5s"}, seed=False)
    pb = proto_modules()
    bytes_a, bytes_b = os.urandom(size), os.urandom(size)
    fakes = {sha256_bytes(bytes_a), sha256_bytes(bytes_b)}
    gate = threading.Event()
    rogue_a = FakeParent(c.scheduler, tid, url, bytes_a, host_id="rogue-a", corrupt=False,
                         report_digests=True)
    rogue_b = FakeParent(c.scheduler, tid, url, bytes_b, host_id="rogue-b", corrupt=False,
                         report_digests=True, register_kw={"stalled": True},
                         progress_gate=gate)
    outcomes = {}
    try:
        rogue_a.start()
        wait_until(lambda: _peer_state(c.scheduler, tid, "rogue-a") == pb.scheduler_pb2.
                   PEER_STATE_SUCCEEDED, scaled(10), interval=0.1,
                   what="rogue-a to be the task's first fetcher")
        rogue_b.start()
        wait_until(lambda: _peer_state(c.scheduler, tid, "rogue-b") == pb.scheduler_pb2.
                   PEER_STATE_BACK_TO_SOURCE, scaled(10), interval=0.1,
                   what="rogue-b to be sent to the origin")
        start_daemon(tmp_path, "seed", scheduler=c.scheduler, seed=True,
                     progress_timeout="5s")
        wait_hosts(c.scheduler, 6)
        gate.set()
        wait_until(lambda: b"from host rogue-b (conflict" in c.scheduler.log_path.read_bytes(),
                   scaled(10), interval=0.1, what="the scheduler to see the conflict")
        outs = [tmp_path / f"out-{d.name}" for d in c.daemons]
        gets = [spawn_get(d, url, out, log_dir=tmp_path, name=f"get-{d.name}")
                for d, out in zip(c.daemons, outs)]
        for d, cp, out in zip(c.daemons, wait_gets(gets, 60), outs):
            got = sha256_file(out) if out.exists() else None
            outcomes[d.name] = ("ROGUE BYTES" if got in fakes else
                                "real" if cp.returncode == 0 and got == real else describe(cp))
    finally:
        rogue_a.stop()
        rogue_b.stop()
    log = c.scheduler.log_path.read_bytes()
    print(f"outcomes {outcomes}; rogue-a served {rogue_a.request_count()}, rogue-b "
          f"{rogue_b.request_count()} requests")
    assert all(o == "real" for o in outcomes.values()), outcomes
    assert b"from host rogue-a and " in log and b"from host rogue-b (conflict" in log
    assert b"conflicted -> re-verifying: seed host" in log
    assert b"re-verifying -> verified" in log
    assert b"conflicted -> failed" not in log


@pytest.mark.deadline(150)
def test_spending_the_trigger_budget_does_not_make_a_digest_source(tmp_path, origin,
                                                                   need_binary):
    """A rogue spends its budget of seed triggers on purpose (--seed-trigger-burst 1), then
    registers first for a task, so the scheduler sends it to the origin instead of
    triggering the seed, and reports the digests of its own bytes. While a seed could
    fetch, such a peer's digests do not count: the honest gets stall on it, get the seed,
    and return the origin's bytes (before, they returned the rogue's)."""
    size = 2 * MiB + 555
    real = origin.add_random("/budget.bin", size, tmp_path / "origin")
    origin.add_random("/spend.bin", 1000, tmp_path / "origin")
    url = origin.url("/budget.bin")
    tid = task_id(url)
    c = start_cluster(tmp_path, daemons=2, daemon_flags={"progress_timeout": "3s"},
                      scheduler_flags={"seed_triggers_per_min": 1, "seed_trigger_burst": 1})
    pb = proto_modules()
    rogue_bytes = os.urandom(size)
    fake = sha256_bytes(rogue_bytes)
    _spend_trigger_budget(c.scheduler, "rogue", origin.url("/spend.bin"))
    rogue = FakeParent(c.scheduler, tid, url, rogue_bytes, host_id="rogue", corrupt=False,
                       report_digests=True)
    outcomes = {}
    try:
        rogue.start()
        wait_until(lambda: _peer_state(c.scheduler, tid, "rogue") == pb.scheduler_pb2.
                   PEER_STATE_SUCCEEDED, scaled(10), interval=0.1,
                   what="the rogue to be the task's first registrant")
        for d in c.daemons:
            out = tmp_path / f"out-{d.name}"
            cp = run_get(d, url, out, timeout=60)
            got = sha256_file(out) if out.exists() else None
            outcomes[d.name] = ("ROGUE BYTES" if got == fake else
                                "real" if cp.returncode == 0 and got == real else describe(cp))
    finally:
        rogue.stop()
    print(f"outcomes {outcomes}; the rogue served {rogue.request_count()} requests")
    assert all(o == "real" for o in outcomes.values()), outcomes
    log = c.scheduler.log_path.read_bytes()
    assert b"host rogue: fetches from the origin for itself" in log


@pytest.mark.deadline(120)
@pytest.mark.parametrize("where", ["progress", "register_and_progress"])
def test_p2p_peer_cannot_pin_a_false_etag(tmp_path, need_binary, where):
    """A rogue registers first (the scheduler triggers the seed and gives the rogue the seed
    as its parent: P2P mode) and reports an ETag of its own. Before, that ETag was the
    task's: the seed's progress with the origin's ETag was refused as another version and
    honest gets failed. Now validators are pinned only from digest sources."""
    from test_freshness import FreshOrigin  # an origin with ETag and Last-Modified

    o = FreshOrigin()
    try:
        data = os.urandom(2 * MiB + 99)
        o.set("/etag.bin", data, '"real-v1"', "Wed, 21 Oct 2026 07:28:00 GMT")
        url = o.url("/etag.bin")
        tid = task_id(url)
        c = start_cluster(tmp_path, daemons=2, daemon_flags={"progress_timeout": "5s"})
        kw = {"register_kw": {"etag": '"bogus"'}} if where != "progress" else {}
        rogue = FakeParent(c.scheduler, tid, url, os.urandom(len(data)), host_id="rogue",
                           corrupt=False, progress_kw={"etag": '"bogus"'}, **kw)
        try:
            rogue.start()
            wait_until(lambda: _peer_state(c.scheduler, tid, "rogue") is not None, scaled(10),
                       interval=0.1, what="the rogue's register")
            results = []
            for d in c.daemons:
                cp = run_get(d, url, tmp_path / f"out-{d.name}", timeout=60)
                out = tmp_path / f"out-{d.name}"
                results.append("real" if cp.returncode == 0 and out.read_bytes() == data
                               else describe(cp))
        finally:
            rogue.stop()
        print(f"{where}: {results}")
        assert results == ["real", "real"], results
        log = c.scheduler.log_path.read_bytes()
        assert b"another version" not in log, "an honest host's progress was refused"
    finally:
        o.close()
