"""Without a scheduler a daemon still downloads (from the origin), unless told not to."""

import pytest

from harness import (MiB, describe, free_port, get_error_lines, run_get, sha256_file,
                     start_daemon)


@pytest.mark.parametrize("how", ["omitted", "unreachable"])
def test_get_without_scheduler_downloads_from_origin(tmp_path, origin, need_binary, how):
    size = 3 * MiB + 123
    sha = origin.add_random("/solo.bin", size, tmp_path / "origin")
    # "unreachable": --scheduler names a port nothing listens on.
    sched = None if how == "omitted" else f"127.0.0.1:{free_port()}"
    d = start_daemon(tmp_path, "d1", scheduler=sched)
    out = tmp_path / "out"
    cp = run_get(d, origin.url("/solo.bin"), out, timeout=60)
    assert cp.returncode == 0, f"get with scheduler {how}: {describe(cp)}"
    assert sha256_file(out) == sha
    assert origin.request_count("/solo.bin") > 0
    got = d.metrics().value("damselfly_download_bytes_total", source="origin")
    assert got >= size, f"damselfly_download_bytes_total{{source=\"origin\"}} is {got}"


def test_no_back_to_source_without_scheduler_fails_cleanly(tmp_path, origin, need_binary):
    origin.add_random("/forbidden.bin", 1 * MiB, tmp_path / "origin")
    d = start_daemon(tmp_path, "d1")
    out = tmp_path / "out"
    cp = run_get(d, origin.url("/forbidden.bin"), out, "--no-back-to-source", timeout=60)
    assert cp.returncode != 0, f"get --no-back-to-source without a scheduler: {describe(cp)}"
    lines = get_error_lines(cp)
    assert len(lines) == 1, f"expected one 'damselfly get: <reason>' line: {describe(cp)}"
    reason = lines[0][len("damselfly get:"):].strip().lower()
    assert any(w in reason for w in ("source", "scheduler", "parent", "peer")), \
        f"the reason does not say why: {lines[0]!r}"
    assert origin.request_count() == 0, \
        f"origin saw {origin.request_count()} requests: {origin.requests_for()}"
    assert not out.exists(), "a failed get left its output file"
