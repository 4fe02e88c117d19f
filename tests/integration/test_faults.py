"""Parents that die or lie: downloads still complete with the right bytes."""

import pytest

from harness import (MiB, FakeParent, describe, proto_modules, run_get, scaled, sha256_file,
                     spawn_get, start_cluster, stat_task, task_id, wait_gets, wait_until)


@pytest.mark.deadline(240)
def test_parent_killed_mid_download(tmp_path, origin, need_binary):
    size = 24 * MiB
    sha = origin.add_random("/victim.bin", size, tmp_path / "origin")
    url = origin.url("/victim.bin")
    origin.throttle = 6 * MiB  # ~4 s for the seed's fetch: the daemons overlap in time
    c = start_cluster(tmp_path, daemons=4,
                      scheduler_flags={"host_timeout": "3s"},
                      daemon_flags={"announce_interval": "1s"})

    outs = {d.name: tmp_path / f"out-{d.name}" for d in c.daemons}
    gets = {d.name: spawn_get(d, url, outs[d.name], log_dir=tmp_path, name=f"get-{d.name}")
            for d in c.daemons}

    # The victim: a daemon that is still downloading and has already served pieces to
    # another daemon, i.e. a parent caught mid-transfer.
    def pick_victim():
        for d in c.daemons:
            if gets[d.name].poll() is not None:
                continue
            try:
                m = d.metrics()
            except OSError:
                continue
            if m.value("damselfly_upload_bytes_total") > 0:
                return d
        if all(g.poll() is not None for g in gets.values()):
            raise AssertionError("every get ended before any daemon uploaded a piece to "
                                 "another: no parent to kill")
        return None

    victim = wait_until(pick_victim, scaled(60), interval=0.05,
                        what="a daemon that uploads while still downloading")
    print(f"killing {victim.name} (uploaded {victim.upload_bytes():.0f} bytes)")
    victim.kill9()

    others = [d for d in c.daemons if d is not victim]
    results = wait_gets([gets[d.name] for d in others], 150)
    for d, cp in zip(others, results):
        assert cp.returncode == 0, f"get on {d.name} after {victim.name} died: {describe(cp)}"
        assert sha256_file(outs[d.name]) == sha, f"{d.name}: content differs from the origin's"

    # The victim's own get lost its daemon: it must end, and either fail leaving no file or
    # (had it fallen back to the origin) succeed with the right bytes.
    vcp = wait_gets([gets[victim.name]], 60)[0]
    if vcp.returncode == 0:
        assert sha256_file(outs[victim.name]) == sha, "the killed daemon's get: wrong content"
    else:
        assert not outs[victim.name].exists(), "a failed get left its output file"


@pytest.mark.deadline(300)
def test_corrupting_parent_detected_and_excluded(tmp_path, origin, need_binary):
    size = 16 * MiB + 777
    sha = origin.add_random("/lie.bin", size, tmp_path / "origin")
    content = origin.files["/lie.bin"].path.read_bytes()
    url = origin.url("/lie.bin")
    tid = task_id(url)
    c = start_cluster(tmp_path, daemons=5,
                      scheduler_flags={"bad_parent_threshold": 2, "candidate_limit": 8})
    first, *rest = c.daemons

    cp = run_get(first, url, tmp_path / "out-d1", timeout=90)
    assert cp.returncode == 0, f"get on d1: {describe(cp)}"
    assert sha256_file(tmp_path / "out-d1") == sha

    succeeded = proto_modules().scheduler_pb2.PEER_STATE_SUCCEEDED

    def seed_holds_task():
        try:
            st = stat_task(c.scheduler, tid)
        except Exception:
            return False
        return any(p.host_id == c.seed.host_id and p.state == succeeded for p in st.peers)

    wait_until(seed_holds_task, scaled(30), interval=0.2,
               what="the scheduler to report the seed's peer as succeeded")

    fake = FakeParent(c.scheduler, tid, url, content, host_id="liar").start()
    try:
        def fake_registered():
            try:
                st = stat_task(c.scheduler, tid)
            except Exception:
                return False
            return any(p.peer_id == fake.peer_id for p in st.peers)

        wait_until(fake_registered, scaled(15), interval=0.2,
                   what="the scheduler to list the fake parent's peer")

        reporters = []
        used = []
        for d in rest[:-1]:
            out = tmp_path / f"out-{d.name}"
            before = fake.request_count()
            cp = run_get(d, url, out, timeout=90)
            assert cp.returncode == 0, f"get on {d.name} with a lying parent: {describe(cp)}"
            assert sha256_file(out) == sha, f"{d.name}: content differs from the origin's"
            if fake.request_count() > before:
                used.append(d.name)
            if d.metrics().value("damselfly_piece_verify_failures_total") > 0:
                reporters.append(d.name)
            if len(reporters) >= 2:
                break

        print(f"detected by {reporters}; fetched from the liar: {used}; "
              f"liar requests: {fake.request_count()}")
        assert len(reporters) >= 2, \
            f"fewer than two daemons detected the corrupt parent (detected: {reporters}; " \
            f"fetched from it: {used}; it got {fake.request_count()} requests)"
        reports = c.scheduler.metrics().value("damselfly_scheduler_bad_parent_reports_total")
        assert reports >= 2, f"scheduler counted {reports} bad-parent reports"

        last = rest[-1]
        before = fake.request_count()
        out = tmp_path / f"out-{last.name}"
        cp = run_get(last, url, out, timeout=90)
        assert cp.returncode == 0, f"get on {last.name}: {describe(cp)}"
        assert sha256_file(out) == sha
        after = fake.request_count()
        assert after == before, \
            f"{last.name} still asked the reported parent: {fake.requests[before:after]}"
    finally:
        fake.stop()
