"""--memory-limit: the piece bytes a daemon holds between the network and the disk stay
within the bound (plus one piece: a task with nothing in flight may always start one), and
the download is exact and not starved; the same download without the bound holds more,
so the bound is what keeps it down."""

import pytest

from harness import MiB, describe, run_get, sha256_file, start_daemon

PIECE = 256 << 10  # the piece length of a 64 MiB task


def _peak_of_a_download(tmp_path, origin, name, url, sha, memory_limit):
    d = start_daemon(tmp_path, name, memory_limit=memory_limit, source_concurrency=16)
    out = tmp_path / f"out-{name}"
    cp = run_get(d, url, out, timeout=90)
    assert cp.returncode == 0, f"get with --memory-limit {memory_limit}: {describe(cp)}"
    assert sha256_file(out) == sha
    m = d.metrics()
    assert m.value("damselfly_piece_buffer_bytes") == 0, "piece buffers left after the download"
    return m.value("damselfly_piece_buffer_peak_bytes"), m.value(
        "damselfly_piece_buffer_waits_total")


@pytest.mark.deadline(120)
def test_piece_memory_stays_within_the_limit(tmp_path, origin, need_binary):
    size = 64 * MiB
    sha = origin.add_random("/mem.bin", size, tmp_path / "origin")
    url = origin.url("/mem.bin")
    free_peak, free_waits = _peak_of_a_download(tmp_path, origin, "free", url, sha, "0")
    peak, waits = _peak_of_a_download(tmp_path, origin, "bounded", url, sha, "512k")
    print(f"peak piece memory: {free_peak / MiB:.2f} MiB unbounded, {peak / MiB:.2f} MiB "
          f"with --memory-limit 512k ({waits:.0f} waits)")
    assert free_waits == 0
    assert free_peak > 512 * 1024 + PIECE, \
        f"the unbounded download held only {free_peak} bytes: the test proves nothing"
    assert peak <= 512 * 1024 + PIECE, f"{peak} bytes held with --memory-limit 512k"
    assert waits > 0
