"""A daemon killed mid-download resumes on restart without refetching verified pieces."""

import pytest

from harness import (MiB, describe, run_get, scaled, sha256_file, spawn_get, start_daemon,
                     wait_gets, wait_until, piece_length_for)


@pytest.mark.deadline(200)
def test_restarted_daemon_resumes(tmp_path, origin, need_binary):
    size = 32 * MiB
    piece = piece_length_for(size)
    sha = origin.add_random("/resume.bin", size, tmp_path / "origin")
    url = origin.url("/resume.bin")
    origin.throttle = 8 * MiB  # about 4 s for the whole file
    d = start_daemon(tmp_path, "d1")

    out = tmp_path / "out"
    g = spawn_get(d, url, out, log_dir=tmp_path, name="get-first")

    def some_pieces_in():
        if g.poll() is not None:
            raise AssertionError(f"the first get ended early: {describe(g.result())}")
        return d.metrics().value("damselfly_download_bytes_total", source="origin") >= 8 * piece

    wait_until(some_pieces_in, scaled(60), interval=0.05, what="8 pieces from the origin")
    d.kill9()
    first = wait_gets([g], 30)[0]
    assert first.returncode != 0, "get succeeded although its daemon was killed"
    assert not out.exists(), "a failed get left its output file"
    sent_first = origin.sent("/resume.bin")
    assert sent_first < size, "the whole file was fetched before the kill; nothing to resume"

    origin.throttle = None
    d.restart()
    cp = run_get(d, url, out, timeout=90)
    assert cp.returncode == 0, f"get after restart: {describe(cp)}"
    assert sha256_file(out) == sha
    total = origin.sent("/resume.bin")
    second = total - sent_first
    assert second < size, f"the second run fetched {second} bytes: the whole file again"
    assert total < size + 8 * piece, \
        f"origin sent {total} bytes over both runs for a {size}-byte file " \
        f"(first run {sent_first}, second {second}): verified pieces were refetched"
