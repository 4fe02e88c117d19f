"""A 4 GiB task through a seed and a daemon, both with --memory-limit 256m: the resident
memory of each stays under the limit plus a fixed overhead, and the bytes `get` writes are
exactly the origin's. The origin makes its content on the fly (scripts/origin.py
Generated): nothing of 4 GiB is kept on disk by the test or in its memory; the two piece
stores (4 GiB each) are deleted after the test with the test's other large files.

This download holds at most 188 MiB of pieces (the seed; the daemon 128 MiB): 256 MiB is
never reached here, so this test shows that the rest of a daemon does not grow with the
task. test_memory_limit.py shows the limit binding (32 MiB against 188 MiB held without)."""

import pytest

from harness import DAEMON_RSS_OVERHEAD, MiB, generated_through_a_seed, sanitized

SIZE = 4 << 30
LIMIT = 256 * MiB
OVERHEAD = DAEMON_RSS_OVERHEAD  # measured here: see harness.py


@pytest.mark.serial
@pytest.mark.deadline(150)
def test_4gib_task_with_memory_limit_256m(tmp_path, origin, need_binary):
    # 16 fetches at once on each: as many piece buffers as a daemon would ever hold.
    procs, peak, elapsed, idle = generated_through_a_seed(tmp_path, origin, SIZE, 15, "256m",
                                                          log_level="info")
    print(f"4 GiB in {elapsed:.1f} s; idle RSS seed {idle['seed'] / MiB:.1f} MiB, "
          f"d1 {idle['d1'] / MiB:.1f} MiB; peak RSS seed {peak['seed'] / MiB:.1f} MiB, "
          f"d1 {peak['d1'] / MiB:.1f} MiB (bound {(LIMIT + OVERHEAD) / MiB:.0f} MiB)")
    for name, p in procs.items():
        m = p.metrics()
        print(f"{name}: piece buffers peak {m.value('damselfly_piece_buffer_peak_bytes') / MiB:.1f}"
              f" MiB, {m.value('damselfly_piece_buffer_waits_total'):.0f} waits")
        assert m.value("damselfly_piece_buffer_peak_bytes") <= LIMIT + 4 * MiB
    if sanitized():
        pytest.skip("RSS is not bounded under ASan (freed memory stays in quarantine)")
    for name in ("seed", "d1"):
        assert peak[name] <= LIMIT + OVERHEAD, \
            f"{name}: peak RSS {peak[name] / MiB:.1f} MiB with --memory-limit 256m"
