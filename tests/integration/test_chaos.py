"""The chaos test (issue 10): a seed, a scheduler and 6 daemons; 20 downloads of several
files while a driver SIGKILLs and restarts random daemons, the seed and the scheduler.
Every `get` either succeeds with exact bytes or fails with a clear message, none hangs
past its timeout, and the count of each is printed. Bounded well under 2 minutes."""

import os
import random
import time

import pytest

from harness import (MiB, get_error_lines, scaled, sha256_file, spawn_get, start_daemon,
                     start_scheduler, wait_hosts, wait_until)

GETS = 20
GET_TIMEOUT = 45  # seconds, each get's own --timeout (scaled)
CHAOS_SECONDS = 30


@pytest.mark.deadline(115)
def test_chaos(tmp_path, origin, need_binary):
    rng = random.Random(int(os.environ.get("DMF_CHAOS_SEED", "10")))
    sizes = [8, 12, 16, 24, 32]
    files = {f"/c{i}.bin": origin.add_random(f"/c{i}.bin", s * MiB, tmp_path / "origin")
             for i, s in enumerate(sizes)}
    origin.throttle = 12 * MiB  # fetches take seconds: kills land mid-transfer

    flags = {"host_timeout": "3s"}
    sched = start_scheduler(tmp_path, name="scheduler", **flags)
    port, mport = sched.port, sched.metrics_port
    dflags = {"announce_interval": "1s"}
    seed = start_daemon(tmp_path, "seed", scheduler=sched.addr, seed=True, **dflags)
    daemons = [start_daemon(tmp_path, f"d{i}", scheduler=sched.addr, **dflags)
               for i in range(1, 7)]
    wait_hosts(sched, 7)

    gets = []  # (name, path, out, GetProc)
    kills = {"daemon": 0, "seed": 0, "scheduler": 0}
    start = time.monotonic()
    next_get = start
    next_kill = start + 2.0
    restarts = []  # (when, what)
    n_sched = 1

    def alive(d):
        return d.proc is not None and d.proc.alive()

    def bring_back(what):
        nonlocal sched, n_sched
        if what == "scheduler":
            n_sched += 1
            sched = start_scheduler(tmp_path, name=f"scheduler{n_sched}", port=port,
                                    metrics_port=mport, **flags)
        elif not alive(what):
            what.restart()

    while time.monotonic() - start < scaled(CHAOS_SECONDS) or len(gets) < GETS:
        now = time.monotonic()
        if len(gets) < GETS and now >= next_get:
            up = [d for d in daemons if alive(d)]
            if up:
                d = rng.choice(up)
                path = rng.choice(sorted(files))
                i = len(gets)
                out = tmp_path / f"out-{i}-{d.name}"
                gets.append((d.name, path, out,
                             spawn_get(d, origin.url(path), out, "--timeout",
                                       f"{scaled(GET_TIMEOUT):.0f}s", log_dir=tmp_path,
                                       name=f"get-{i}-{d.name}")))
            next_get = now + rng.uniform(0.3, 1.8)
        if now >= next_kill and now - start < scaled(CHAOS_SECONDS):
            what = rng.choice(["daemon", "daemon", "seed", "scheduler"])
            if what == "daemon":
                victim = rng.choice([d for d in daemons if alive(d)] or daemons)
                if alive(victim):
                    victim.kill9()
                    restarts.append((now + rng.uniform(0.5, 2.0), victim))
                    kills["daemon"] += 1
            elif what == "seed" and alive(seed):
                seed.kill9()
                restarts.append((now + rng.uniform(0.5, 2.0), seed))
                kills["seed"] += 1
            elif what == "scheduler" and sched.proc.alive():
                sched.kill9()
                restarts.append((now + rng.uniform(0.5, 1.5), "scheduler"))
                kills["scheduler"] += 1
            next_kill = now + rng.uniform(1.5, 4.0)
        for item in list(restarts):
            when, what = item
            if time.monotonic() < when:
                continue
            restarts.remove(item)
            bring_back(what)
        time.sleep(0.05)
    for when, what in restarts:  # whatever is still down comes back now
        bring_back(what)

    # Every get ends by itself within its timeout (plus a margin for the CLI to exit).
    deadline = time.monotonic() + scaled(GET_TIMEOUT + 10)
    ok = failed = hung = 0
    reasons = {}
    for name, path, out, g in gets:
        try:
            cp = g.wait(max(0.0, deadline - time.monotonic()))
        except Exception:
            hung += 1
            continue
        if cp.returncode == 0:
            assert sha256_file(out) == files[path], f"get of {path} on {name}: wrong bytes"
            ok += 1
        else:
            lines = get_error_lines(cp)
            assert lines, f"get of {path} on {name} failed without a message: {cp.stderr!r}"
            assert not out.exists(), f"a failed get of {path} on {name} left its output"
            failed += 1
            key = lines[-1][:90]
            reasons[key] = reasons.get(key, 0) + 1
    took = time.monotonic() - start
    print(f"chaos: {len(gets)} gets in {took:.1f} s: {ok} succeeded, {failed} failed, {hung} "
          f"hung; kills: {kills}; failures: {reasons}")
    assert hung == 0, f"{hung} gets hung past their timeout"

    # Afterwards the cluster works: every file on a daemon that survived, exactly.
    wait_hosts(sched, 7, timeout=30)
    d = daemons[0]
    for path, sha in files.items():
        out = tmp_path / f"after-{path.strip('/')}"
        g = spawn_get(d, origin.url(path), out, "--timeout", f"{scaled(30):.0f}s",
                      log_dir=tmp_path, name=f"after-{path.strip('/')}")
        cp = g.wait(scaled(40))
        assert cp.returncode == 0, f"after the chaos, {path}: {get_error_lines(cp)}"
        assert sha256_file(out) == sha
