"""A 4 GiB task through a seed and a daemon, both with --memory-limit 256m: the resident
memory of each stays under the limit plus a fixed overhead, and the bytes `get` writes are
exactly the origin's. The origin makes its content on the fly (scripts/origin.py
Generated): nothing of 4 GiB is kept on disk by the test or in its memory; the two piece
stores (4 GiB each) are deleted after the test with the test's other large files.

This download holds at most 188 MiB of pieces (the seed; the daemon 128 MiB): 256 MiB is
never reached here, so this test shows that the rest of a daemon does not grow with the
task. test_memory_limit.py shows the limit binding (32 MiB against 188 MiB held without)."""

import threading
import time

import pytest

from harness import (DAEMON_RSS_OVERHEAD, MiB, RssSampler, get_sha256, sanitized, scaled,
                     start_daemon, start_scheduler, status_kib, wait_hosts)

SIZE = 4 << 30
LIMIT = 256 * MiB
OVERHEAD = DAEMON_RSS_OVERHEAD  # measured here: see harness.py


@pytest.mark.serial
@pytest.mark.deadline(150)
def test_4gib_task_with_memory_limit_256m(tmp_path, origin, need_binary):
    gen = origin.add_generated("/big.bin", SIZE, seed=15)
    expected = {}
    hasher = threading.Thread(target=lambda: expected.setdefault("sha", gen.sha256()),
                              daemon=True)
    hasher.start()

    sched = start_scheduler(tmp_path)
    # The most parallel fetches each allows, so that as many piece buffers as the daemon
    # would ever hold are in flight.
    seed = start_daemon(tmp_path, "seed", scheduler=sched, seed=True, memory_limit="256m",
                        source_concurrency=16, log_level="info")
    d = start_daemon(tmp_path, "d1", scheduler=sched, memory_limit="256m",
                     parent_concurrency=16, log_level="info")
    wait_hosts(sched, 2)
    idle = {n: status_kib(p.proc.pid, "VmRSS") * 1024 for n, p in (("seed", seed), ("d1", d))}

    sampler = RssSampler({"seed": seed.proc.pid, "d1": d.proc.pid})
    sampler.start()
    started = time.monotonic()
    rc, got, sha = get_sha256(d, origin.url("/big.bin"), tmp_path / "get.stderr", timeout=30)
    elapsed = time.monotonic() - started
    peak = sampler.finish()
    hasher.join(timeout=scaled(60))

    print(f"4 GiB in {elapsed:.1f} s; idle RSS seed {idle['seed'] / MiB:.1f} MiB, "
          f"d1 {idle['d1'] / MiB:.1f} MiB; peak RSS seed {peak['seed'] / MiB:.1f} MiB, "
          f"d1 {peak['d1'] / MiB:.1f} MiB (bound {(LIMIT + OVERHEAD) / MiB:.0f} MiB)")
    assert rc == 0, f"get exited {rc}: {(tmp_path / 'get.stderr').read_bytes()[-2000:]!r}"
    assert got == SIZE, f"get wrote {got} bytes of {SIZE}"
    assert sha == expected["sha"], "the 4 GiB written differ from the origin's"
    assert seed.metric("damselfly_download_bytes_total", source="origin") >= SIZE
    assert d.metric("damselfly_download_bytes_total", source="origin") == 0, \
        "the daemon went to the origin: the seed path was not exercised"
    for name in ("seed", "d1"):
        m = (seed if name == "seed" else d).metrics()
        print(f"{name}: piece buffers peak {m.value('damselfly_piece_buffer_peak_bytes') / MiB:.1f}"
              f" MiB, {m.value('damselfly_piece_buffer_waits_total'):.0f} waits")
        assert m.value("damselfly_piece_buffer_peak_bytes") <= LIMIT + 4 * MiB
    if sanitized():
        pytest.skip("RSS is not bounded under ASan (freed memory stays in quarantine)")
    for name in ("seed", "d1"):
        assert peak[name] <= LIMIT + OVERHEAD, \
            f"{name}: peak RSS {peak[name] / MiB:.1f} MiB with --memory-limit 256m"
