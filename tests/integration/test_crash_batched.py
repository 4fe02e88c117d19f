"""A daemon SIGKILLed while its store's writer records pieces in batches: the store knows
fewer pieces than were downloaded, never one it does not hold correctly, and the restarted
daemon resumes the download exactly (docs/internals/STORE.md, "Batched piece rows")."""

import hashlib
import sqlite3

import pytest

from harness import (MiB, describe, piece_length_for, read_have, run_get, scaled, sha256_file,
                     spawn_get, start_daemon, task_id, wait_until)


def recorded_pieces(data_dir, tid):
    """{piece number: digest} the store holds for task tid (read with the daemon dead)."""
    db = sqlite3.connect(str(data_dir / "meta.db"))
    try:
        return {n: bytes(d) for n, d in
                db.execute("SELECT num, digest FROM pieces WHERE task_id = ?", (tid,))}
    finally:
        db.close()


@pytest.mark.deadline(200)
def test_sigkill_with_batched_rows_resumes_exactly(tmp_path, origin, need_binary):
    size = 64 * MiB
    piece = piece_length_for(size)
    sha = origin.add_random("/crash.bin", size, tmp_path / "origin")
    truth = (tmp_path / "origin" / "origin-crash.bin").read_bytes()
    url = origin.url("/crash.bin")
    # About 2 s for the file: pieces come every few ms, so the writer batches them.
    origin.throttle = 32 * MiB
    d = start_daemon(tmp_path, "d1")
    tid = task_id(url)
    g = spawn_get(d, url, tmp_path / "out-first", log_dir=tmp_path, name="get-first")

    seen = {}

    def mid_download():
        if g.poll() is not None:
            raise AssertionError(f"the first get ended early: {describe(g.result())}")
        try:
            have, _ = read_have(d.piece_port, tid, 64, 0.3)
        except (OSError, RuntimeError, TimeoutError):
            return False
        if len(have) < 64:
            return False
        m = d.metrics()
        seen["rows"] = m.value("damselfly_store_rows_total", result="committed")
        seen["batches"] = m.value("damselfly_store_batches_total")
        return True

    wait_until(mid_download, scaled(60), interval=0.02, what="64 verified pieces")
    d.kill9()  # no clean shutdown: whatever the writer had queued is lost
    g.kill()
    sent_first = origin.sent("/crash.bin")
    assert sent_first < size, "the whole file was fetched before the kill; nothing to resume"
    print(f"before the kill: {seen['rows']:.0f} rows in {seen['batches']:.0f} batches")
    assert seen["batches"] < seen["rows"], "the rows were not committed in batches"

    # What the store says after the crash: only pieces whose bytes are in the data file and
    # match the content.
    rows = recorded_pieces(d.data_dir, tid)
    assert rows, "no piece was recorded before the kill"
    data_file = d.data_dir / "tasks" / tid[:3] / tid / "data"
    with open(data_file, "rb") as f:
        for n, digest in sorted(rows.items()):
            want = hashlib.sha256(truth[n * piece:(n + 1) * piece]).digest()
            assert digest == want, f"piece {n} is recorded with a wrong digest"
            f.seek(n * piece)
            assert hashlib.sha256(f.read(piece)).digest() == want, \
                f"piece {n} is recorded but its bytes are not in the data file"
    print(f"the store knows {len(rows)} pieces of {size // piece} after the kill")

    origin.throttle = None
    d.restart()
    n_before = len(origin.requests_for("/crash.bin"))  # the first run's (still counted)
    out = tmp_path / "out"
    cp = run_get(d, url, out, timeout=90)
    assert cp.returncode == 0, f"get after restart: {describe(cp)}"
    assert sha256_file(out) == sha
    # No recorded piece was asked of the origin again.
    ranged = 0
    for r in origin.requests_for("/crash.bin")[n_before:]:
        if not r.range or not r.range.startswith("bytes="):
            assert r.method == "HEAD", f"the second run fetched the whole file: {r}"
            continue
        first, _, last = r.range[len("bytes="):].partition("-")
        lo, hi = int(first), int(last) if last else size - 1
        if hi - lo < 1024:
            continue  # the probe of range support
        ranged += 1
        again = [n for n in rows if n * piece <= hi and lo < (n + 1) * piece]
        assert not again, f"recorded pieces {again[:5]} fetched again ({r.range})"
    assert ranged > 0, "the second run asked the origin for no range"
    # The cache check re-hashed the recorded pieces before using them and found none bad.
    m = d.metrics()
    assert m.value("damselfly_cache_pieces_verified_total") >= len(rows)
    assert m.value("damselfly_cache_verify_failures_total") == 0
    assert m.value("damselfly_piece_verify_failures_total") == 0
