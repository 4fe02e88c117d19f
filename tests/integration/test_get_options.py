"""`get` options a user relies on: --timeout, --tag and --filter-query shape what is
downloaded and when it gives up."""
import time

from harness import MiB, describe, get_error_lines, run_get, sha256_file, start_daemon


def test_timeout_gives_up_with_a_reason_and_no_file(tmp_path, origin, need_binary):
    origin.add_random("/slow.bin", 8 * MiB, tmp_path / "origin")
    origin.throttle = 512 * 1024  # 16 s for the whole file
    d = start_daemon(tmp_path, "d1")
    out = tmp_path / "out"
    t0 = time.monotonic()
    cp = run_get(d, origin.url("/slow.bin"), out, "--timeout", "1s", timeout=60)
    took = time.monotonic() - t0
    assert cp.returncode != 0, f"get --timeout 1s on a 16 s download: {describe(cp)}"
    assert took < 8, f"get --timeout 1s took {took:.1f} s"
    lines = get_error_lines(cp)
    assert len(lines) == 1 and "timed out" in lines[0], describe(cp)
    assert not out.exists()


def test_filtered_query_parameters_share_one_task(tmp_path, origin, need_binary):
    sha = origin.add_random("/signed.bin", 2 * MiB + 5, tmp_path / "origin")
    d = start_daemon(tmp_path, "d1")
    for sig in ("aaa", "bbb"):
        out = tmp_path / f"out-{sig}"
        url = origin.url("/signed.bin") + f"?Signature={sig}&v=1"
        cp = run_get(d, url, out, "--filter-query", "Signature", timeout=60)
        assert cp.returncode == 0, describe(cp)
        assert sha256_file(out) == sha
    # The second URL differs only in a filtered parameter: the same task, from the cache.
    sent = origin.sent("/signed.bin")
    assert sent <= 2 * MiB + 5 + 1, f"origin sent {sent} bytes: the second get was not a cache hit"
    assert d.download_bytes("local") >= 2 * MiB + 5


def test_unfiltered_query_and_tags_make_different_tasks(tmp_path, origin, need_binary):
    size = 1 * MiB + 7
    sha = origin.add_random("/tagged.bin", size, tmp_path / "origin")
    d = start_daemon(tmp_path, "d1")
    for i, extra in enumerate((["--tag", "a"], ["--tag", "b"])):
        out = tmp_path / f"out-{i}"
        cp = run_get(d, origin.url("/tagged.bin"), out, *extra, timeout=60)
        assert cp.returncode == 0, describe(cp)
        assert sha256_file(out) == sha
    # Two tags, two tasks: the origin served the file twice.
    assert origin.sent("/tagged.bin") >= 2 * size


def test_output_replaces_a_file_but_never_a_directory(tmp_path, origin, need_binary):
    sha = origin.add_random("/over.bin", 300 * 1024 + 3, tmp_path / "origin")
    d = start_daemon(tmp_path, "d1")
    out = tmp_path / "existing"
    out.write_bytes(b"old content")
    # dfget's rule: an existing file is replaced only with --overwrite.
    cp = run_get(d, origin.url("/over.bin"), out, timeout=60)
    assert cp.returncode == 3 and "--overwrite" in cp.stderr.decode(), describe(cp)
    assert out.read_bytes() == b"old content"
    cp = run_get(d, origin.url("/over.bin"), out, "--overwrite", timeout=60)
    assert cp.returncode == 0, describe(cp)
    assert sha256_file(out) == sha
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".existing")] == [], \
        "a temporary file was left next to the output"
    folder = tmp_path / "folder"
    folder.mkdir()
    (folder / "keep").write_text("x")
    cp = run_get(d, origin.url("/over.bin"), folder, "--overwrite", timeout=60)
    assert cp.returncode != 0, f"get -O <directory> succeeded: {describe(cp)}"
    assert folder.is_dir() and (folder / "keep").read_text() == "x"
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".folder")] == []
