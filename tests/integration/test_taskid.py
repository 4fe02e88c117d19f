"""Task IDs: the Python reimplementation (harness.task_id) agrees with the C vectors, and the
daemon files a download under that ID."""

import hashlib
from pathlib import Path

import pytest

from harness import (MiB, describe, normalize_url, piece_count, piece_length_for, read_have,
                     repo_root, run_get, scaled, start_daemon, task_id)

VECTORS = repo_root() / "tests" / "unit" / "common" / "taskid_vectors.txt"


def load_vectors():
    if not VECTORS.exists():
        pytest.skip(f"{VECTORS.relative_to(repo_root())} is not there yet (written with the "
                    f"C task-ID module)")
    rows = []
    for i, line in enumerate(VECTORS.read_text().splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        f = line.split("\t")
        assert len(f) == 4, f"{VECTORS.name}:{i}: expected 4 tab-separated fields"
        rows.append((i, *f))
    assert rows, f"{VECTORS.name} has no vectors"
    return rows


def test_vectors_match_python_reimplementation():
    bad = []
    for i, a, b, c, want in load_vectors():
        if a == "digest":
            got = task_id(digest=b)
        else:
            filt = [x for x in c.split(",") if x]
            got = task_id(a, tag=b, filter_query=filt)
        if got != want:
            bad.append(f"line {i}: {a!r} tag={b!r} filter={c!r}: python {got}, file {want}")
    assert not bad, "task IDs differ:\n" + "\n".join(bad)


def test_reimplementation_follows_the_contract():
    # Spelled out by hand from the contract, so a bug in the helper cannot hide.
    url = "http://example.com/a"
    blob = (b"url=20:http://example.com/a\n" b"tag=0:\n" b"application=0:\n"
            b"piece_length=1:0\n")
    assert task_id(url) == hashlib.sha256(blob).hexdigest()
    assert task_id(digest="sha256:" + "AB" * 32) == \
        hashlib.sha256(b"digest=71:sha256:" + b"ab" * 32 + b"\n").hexdigest()
    assert normalize_url("HTTP://Example.COM:80/p?b=2&a=1&x=9#frag", ["x"]) == \
        "http://example.com/p?a=1&b=2"
    assert normalize_url("https://h:443/p?a=2&a=1") == "https://h/p?a=1&a=2"
    assert normalize_url("https://h:8443/P") == "https://h:8443/P"
    assert piece_length_for(64 * MiB) == 256 * 1024
    assert piece_length_for(256 * MiB) == 256 * 1024
    assert piece_length_for(256 * MiB + 1) == 512 * 1024
    assert piece_length_for(1024 * MiB) == MiB
    assert piece_length_for(1024 * MiB + 1) == 2 * MiB
    assert piece_length_for(0) == 256 * 1024
    assert piece_length_for(-1) == 4 * MiB


def test_daemon_files_task_under_derived_id(tmp_path, origin, need_binary):
    size = 2 * MiB + 1
    data = bytes(range(256)) * (size // 256) + b"z" * (size % 256)
    sha = origin.add_bytes("/ID.bin", data)
    d = start_daemon(tmp_path, "d1")

    # Same content under a URL whose normal form differs from its spelling.
    url = f"HTTP://127.0.0.1:{origin.port}/ID.bin?b=2&token=zzz&a=1#part"
    cp = run_get(d, url, tmp_path / "out1", "--tag", "t1", "--filter-query", "token", timeout=60)
    assert cp.returncode == 0, f"get: {describe(cp)}"
    tid = task_id(url, tag="t1", filter_query=["token"])
    have, done = read_have(d.piece_port, tid, piece_count(size), scaled(10))
    assert done == piece_count(size), f"/have/{tid}: done={done}, have={sorted(have)}"

    cp = run_get(d, origin.url("/ID.bin"), tmp_path / "out2", "--digest", f"sha256:{sha}",
                 timeout=60)
    assert cp.returncode == 0, f"get --digest: {describe(cp)}"
    tid = task_id(digest=f"sha256:{sha}")
    have, done = read_have(d.piece_port, tid, piece_count(size), scaled(10))
    assert done == piece_count(size), f"/have/{tid}: done={done}, have={sorted(have)}"
