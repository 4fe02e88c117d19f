"""The cache is verified, not trusted: cached data altered on disk (a flipped byte, a deleted
or truncated data file, a user editing an output hard-linked to it), with or without a
daemon restart, never reaches `get`, a proxy client or another host; the pieces are dropped
and fetched again. --digest is checked on every cache hit. On the data dir's filesystem the
output shares the cache's blocks instead of being a second copy."""

import hashlib
import os

import pytest

from harness import (MiB, describe, piece_count, piece_length_for, run_get, sha256_file,
                     start_daemon, start_scheduler, task_id, wait_hosts)
from test_proxy_integrity import read_response
from test_proxy_mirror import raw_get

RULES = """proxy-rules:
  - regex: '.*'
    p2p: true
"""


def data_file(d, tid):
    return d.data_dir / "tasks" / tid[:3] / tid / "data"


def flip_byte(path, offset):
    with open(path, "r+b") as f:
        f.seek(offset)
        b = f.read(1)
        f.seek(offset)
        f.write(bytes([b[0] ^ 0xFF]))


def two_daemons(tmp_path, origin, name, size):
    """A scheduler, d1 and d2, and a file of size random bytes at /name: (d1, d2, url, sha)."""
    sha = origin.add_random(f"/{name}", size, tmp_path / "origin")
    s = start_scheduler(tmp_path)
    d1 = start_daemon(tmp_path, "d1", scheduler=s)
    d2 = start_daemon(tmp_path, "d2", scheduler=s)
    wait_hosts(s, 2)
    return s, d1, d2, origin.url(f"/{name}"), sha


def assert_original_or_failed(what, got_sha, sha, complete):
    """Either the original bytes, or a failure the client can see; never other bytes."""
    assert not complete or got_sha == sha, f"{what}: altered bytes were handed out"


def tamper_three(d, tids, size):
    """One flipped byte in the first, the second's data file deleted, the third truncated."""
    flip_byte(data_file(d, tids[0]), size // 2)
    os.unlink(data_file(d, tids[1]))
    os.truncate(data_file(d, tids[2]), size // 3)


def three_cached(tmp_path, origin, d, size):
    urls, shas = [], []
    for name in ("flip", "gone", "short"):
        shas.append(origin.add_random(f"/{name}.bin", size, tmp_path / "origin"))
        urls.append(origin.url(f"/{name}.bin"))
    for i, url in enumerate(urls):
        cp = run_get(d, url, tmp_path / f"first-{i}", timeout=60)
        assert cp.returncode == 0, describe(cp)
    return urls, shas, [task_id(u) for u in urls]


@pytest.mark.deadline(120)
@pytest.mark.parametrize("restart", [True, False], ids=["restart", "no-restart"])
def test_tampered_cache_never_reaches_get_or_proxy(tmp_path, origin, need_binary, restart):
    size = 3 * MiB + 1234
    cfg = tmp_path / "daemon.yaml"
    cfg.write_text(RULES)
    d = start_daemon(tmp_path, "d1", config=cfg)
    urls, shas, tids = three_cached(tmp_path, origin, d, size)
    sent_before = origin.sent()
    if restart:
        d.stop()
    tamper_three(d, tids, size)
    if restart:
        d.restart()
    for i, (url, sha) in enumerate(zip(urls, shas)):
        out = tmp_path / f"again-{i}"
        cp = run_get(d, url, out, timeout=60)
        assert cp.returncode == 0, f"get of {url} after tampering: {describe(cp)}"
        assert sha256_file(out) == sha, f"get of {url}: altered bytes after tampering"
        status, length, body = read_response(d.proxy_port, url)  # a forward-proxy GET
        assert_original_or_failed(f"proxy {url}", hashlib.sha256(body).hexdigest(), sha,
                                  status == 200 and len(body) == length)
        assert status == 200 and hashlib.sha256(body).hexdigest() == sha, \
            f"proxy {url}: status {status}, {len(body)} of {size} bytes"
    failures = d.metric("damselfly_cache_verify_failures_total")
    refetched = origin.sent() - sent_before
    print(f"restart={restart}: {failures} cached pieces dropped, {refetched} bytes refetched")
    assert failures >= 3, "the daemon did not count the altered pieces"
    # The flipped piece, the whole deleted file and the truncated tail came again; the
    # rest of the cache was kept.
    assert size * 2 // 3 <= refetched < 3 * size, refetched
    if restart:
        assert d.metric("damselfly_cache_pieces_verified_total") > 0


@pytest.mark.deadline(150)
@pytest.mark.parametrize("restart", [True, False], ids=["restart", "no-restart"])
def test_peer_never_receives_tampered_pieces(tmp_path, origin, need_binary, restart):
    size = 4 * MiB + 77
    s, d1, d2, url, sha = two_daemons(tmp_path, origin, "shared.bin", size)
    tid = task_id(url)
    # To stdout: d1's data file is not shared with an output (see the hard-link test).
    cp = run_get(d1, url, "-", timeout=60)
    assert cp.returncode == 0 and hashlib.sha256(cp.stdout).hexdigest() == sha, describe(cp)
    if restart:
        d1.stop()
    # Bytes changed in three pieces (256 KiB each here), the digests left as they were.
    for off in (10, size // 2, size - 5):
        flip_byte(data_file(d1, tid), off)
    if restart:
        d1.restart()
        wait_hosts(s, 2)
    # On the wire, as a child asks: every piece d1 sends is the original; the altered ones
    # are refused (404) and dropped.
    original = (tmp_path / "origin" / "origin-shared.bin").read_bytes()
    plen = piece_length_for(size)
    refused = []
    for n in range(piece_count(size)):
        status, _, body = raw_get(d1.piece_port, f"/pieces/{tid}/{n}")
        if status == 404:
            refused.append(n)
            continue
        assert status == 200, f"piece {n}: status {status}"
        assert body == original[n * plen:(n + 1) * plen], f"d1 sent altered piece {n}"
    assert refused == sorted({10 // plen, (size // 2) // plen, (size - 5) // plen}), refused
    out2 = tmp_path / "out2"
    cp = run_get(d2, url, out2, timeout=90)
    assert cp.returncode == 0, describe(cp)
    assert sha256_file(out2) == sha
    rejected = d2.metric("damselfly_piece_verify_failures_total")
    dropped = d1.metric("damselfly_cache_verify_failures_total")
    print(f"d1 dropped {dropped} cached pieces; d2 rejected {rejected}")
    assert rejected == 0, "d2 received pieces that did not match their digest from d1"
    assert dropped == 3


@pytest.mark.deadline(90)
def test_digest_checked_on_every_cache_hit(tmp_path, origin, need_binary):
    size = 2 * MiB + 99
    sha = origin.add_random("/dig.bin", size, tmp_path / "origin")
    url = origin.url("/dig.bin")
    d = start_daemon(tmp_path, "d1")
    digest = f"sha256:{sha}"
    cp = run_get(d, url, tmp_path / "first", "--digest", digest, timeout=60)
    assert cp.returncode == 0, describe(cp)
    # Altered without a restart and without changing the size or the mtime.
    path = data_file(d, task_id(digest=digest))
    st = os.stat(path)
    flip_byte(path, size // 3)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    out = tmp_path / "second"
    cp = run_get(d, url, out, "--digest", digest, timeout=60)
    assert cp.returncode == 0, describe(cp)
    assert sha256_file(out) == sha, "a cache hit with --digest handed out altered bytes"
    assert d.metric("damselfly_cache_verify_failures_total") >= 1
    # A wrong digest: the download fails, nothing is written.
    wrong = "sha256:" + "ab" * 32
    bad = tmp_path / "wrong"
    cp = run_get(d, url, bad, "--digest", wrong, timeout=60)
    assert cp.returncode == 7, describe(cp)
    assert "digest" in cp.stderr.decode()
    assert not bad.exists()
    assert [p for p in tmp_path.iterdir() if p.name.startswith(".wrong")] == []


def blocks(paths):
    """Disk bytes of the files, each inode counted once (a hard link is not a copy)."""
    inodes = {}
    for p in paths:
        st = os.lstat(p)
        inodes[(st.st_dev, st.st_ino)] = st.st_blocks * 512
    return sum(inodes.values())


def files_under(root):
    return [os.path.join(dp, f) for dp, _, fs in os.walk(root) for f in fs]


@pytest.mark.deadline(90)
def test_output_shares_blocks_and_user_edits_never_leak(tmp_path, origin, need_binary):
    size = 8 * MiB + 5
    s, d1, d2, url, sha = two_daemons(tmp_path, origin, "linked.bin", size)
    tid = task_id(url)
    out = tmp_path / "out"   # on the data dir's filesystem
    cp = run_get(d1, url, out, timeout=60)
    assert cp.returncode == 0, describe(cp)
    assert sha256_file(out) == sha
    data = data_file(d1, tid)
    total = blocks(files_under(d1.data_dir) + [out])
    print(f"data dir + output: {total} bytes of disk blocks for a {size}-byte file "
          f"(output inode {'shared' if os.path.samefile(out, data) else 'own'})")
    assert total < 1.2 * size, f"data dir + output use {total} bytes: two copies"
    assert oct(os.stat(out).st_mode & 0o777) == oct(0o666 & ~current_umask())

    # The user edits their output (the daemon's inode, when hard-linked) and truncates it.
    flip_byte(out, size // 2)
    edited = open(out, "rb").read()
    again = tmp_path / "again"
    cp = run_get(d1, url, again, timeout=60)
    assert cp.returncode == 0, describe(cp)
    assert sha256_file(again) == sha, "the daemon handed out the user's edit"
    assert open(out, "rb").read() == edited, "the daemon wrote into the user's file"
    # Another host fetching from d1 gets the original too.
    out2 = tmp_path / "out2"
    cp = run_get(d2, url, out2, timeout=60)
    assert cp.returncode == 0, describe(cp)
    assert sha256_file(out2) == sha
    assert d2.metric("damselfly_piece_verify_failures_total") == 0

    os.truncate(again, size // 4)
    third = tmp_path / "third"
    cp = run_get(d1, url, third, timeout=60)
    assert cp.returncode == 0, describe(cp)
    assert sha256_file(third) == sha
    assert os.path.getsize(again) == size // 4, "the daemon refilled the user's truncated file"


def current_umask():
    u = os.umask(0)
    os.umask(u)
    return u


@pytest.mark.deadline(90)
def test_blob_digest_checked_on_every_proxy_cache_hit(tmp_path, need_binary):
    from proxy_support import Registry, build_oci_image, push_image
    reg = Registry(tmp_path).start()
    img = build_oci_image(tmp_path / "layout", layer_sizes=(2 << 20,), seed=b"cache")
    push_image(tmp_path, img, reg)
    layer = img.layers[0]
    content = (img.layout / "blobs" / "sha256" / layer["digest"][7:]).read_bytes()
    d = start_daemon(tmp_path, "d1", registry_mirror=reg.url)
    path = f"/v2/test/img/blobs/{layer['digest']}"
    status, _, body = raw_get(d.proxy_port, path)
    assert status == 200 and body == content
    # Altered in place, no restart: the next pull gets the blob's true bytes.
    flip_byte(data_file(d, task_id(digest=layer["digest"])), len(content) // 2)
    status, _, body = raw_get(d.proxy_port, path)
    assert status == 200 and body == content, "the proxy served altered cached bytes"
    assert d.metric("damselfly_cache_verify_failures_total") >= 1
