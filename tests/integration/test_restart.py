"""A daemon killed mid-download resumes on restart without refetching verified pieces."""

import pytest

from harness import (MiB, describe, piece_length_for, read_have, run_get, scaled, sha256_file,
                     spawn_get, start_daemon, task_id, wait_until)


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

    tid = task_id(url)

    def some_pieces_in():
        """4 verified pieces listed by the piece server's /have and recorded in the store (or,
        should that stream not answer, half the file received from the origin)."""
        if g.poll() is not None:
            raise AssertionError(f"the first get ended early: {describe(g.result())}")
        try:
            # Verified, and recorded by the store's writer (which commits within 50 ms of
            # a piece: a kill before that loses the piece's row, and it is fetched again).
            if len(read_have(d.piece_port, tid, 4, 0.3)[0]) >= 4 and \
                    d.metric("damselfly_store_rows_total", result="committed") >= 4:
                return True
        except (OSError, RuntimeError, TimeoutError):
            pass
        return d.metrics().value("damselfly_download_bytes_total", source="origin") >= size / 2

    wait_until(some_pieces_in, scaled(60), interval=0.05, what="4 verified pieces")
    # The host "crashes": daemon and client die together (so the client cannot fall back to
    # the origin by itself and blur the count of what the daemon fetched).
    d.kill9()
    g.kill()
    sent_first = origin.sent("/resume.bin")
    assert sent_first < size, "the whole file was fetched before the kill; nothing to resume"

    origin.throttle = None
    d.restart()
    cp = run_get(d, url, out, timeout=90)
    assert cp.returncode == 0, f"get after restart: {describe(cp)}"
    assert sha256_file(out) == sha
    total = origin.sent("/resume.bin")
    second = total - sent_first
    print(f"origin sent {sent_first} before the kill, {second} after, of {size}")
    assert second < size, f"the second run fetched {second} bytes: the whole file again"
    assert total < size + 8 * piece, \
        f"origin sent {total} bytes over both runs for a {size}-byte file " \
        f"(first run {sent_first}, second {second}): verified pieces were refetched"
