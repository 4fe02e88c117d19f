"""Whole-content verifications run on the daemon's worker pool, one at a time: several
cached tasks handed out at once after a restart all pass their check and come out exact,
and a download going on meanwhile is not held up by them."""

import pytest

from harness import MiB, describe, run_get, sha256_file, spawn_get, start_daemon, scaled


@pytest.mark.deadline(150)
def test_concurrent_verifications_after_restart(tmp_path, origin, need_binary):
    files = {f"/v{i}.bin": origin.add_random(f"/v{i}.bin", 24 * MiB, tmp_path / "origin")
             for i in range(3)}
    d = start_daemon(tmp_path, "d1")
    for path in files:
        cp = run_get(d, origin.url(path), tmp_path / "warm", "--overwrite", timeout=60)
        assert cp.returncode == 0, f"get {path}: {describe(cp)}"
    d.stop()
    d.restart()  # the pieces are no longer verified in this session
    fresh = origin.add_random("/fresh.bin", 8 * MiB, tmp_path / "origin")
    gets = [spawn_get(d, origin.url(path), tmp_path / f"out{i}", log_dir=tmp_path,
                      name=f"get{i}") for i, path in enumerate(files)]
    # A new download while the three checks queue on the pool: its pieces still find a worker.
    g = spawn_get(d, origin.url("/fresh.bin"), tmp_path / "out-fresh", log_dir=tmp_path,
                  name="get-fresh")
    for i, (path, sha) in enumerate(files.items()):
        cp = gets[i].wait(scaled(90))
        assert cp.returncode == 0, f"get {path} after restart: {describe(cp)}"
        assert sha256_file(tmp_path / f"out{i}") == sha
    cp = g.wait(scaled(90))
    assert cp.returncode == 0, f"the fresh download: {describe(cp)}"
    assert sha256_file(tmp_path / "out-fresh") == fresh
    m = d.metrics()
    assert m.value("damselfly_cache_pieces_verified_total") >= 3 * 24 * MiB // (256 * 1024) * 0.99
    assert m.value("damselfly_cache_verify_failures_total") == 0
    log = d.log_path.read_text(errors="replace")
    assert log.count("VERIFYING -> SUCCEEDED") >= 3, "the three tasks were not all verified"
