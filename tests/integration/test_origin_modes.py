"""Awkward origins: no Range, no Content-Length, empty files, headers and secrets."""

import secrets

import pytest

from harness import (MiB, describe, run_get, sha256_file, spawn_get, start_cluster,
                     start_daemon, wait_gets)


def _setup(tmp_path, topology):
    """(daemons to run get on, every damselfly process) for a topology."""
    if topology == "standalone":
        d = start_daemon(tmp_path, "d1")
        return [d], [d]
    c = start_cluster(tmp_path, daemons=2)
    return c.daemons, [c.scheduler] + c.all


def _get_all(tmp_path, daemons, url, *args):
    outs = [tmp_path / f"out-{d.name}" for d in daemons]
    gets = [spawn_get(d, url, out, *args, log_dir=tmp_path, name=f"get-{d.name}")
            for d, out in zip(daemons, outs)]
    return outs, wait_gets(gets, 90)


@pytest.mark.parametrize("topology", ["standalone", "cluster"])
@pytest.mark.parametrize("length_mode", ["close", "chunked"])
def test_no_range_no_content_length(tmp_path, origin, need_binary, topology, length_mode):
    size = 5 * MiB + 777
    sha = origin.add_random("/stream.bin", size, tmp_path / "origin", ranges=False,
                            length_mode=length_mode)
    daemons, _ = _setup(tmp_path, topology)
    outs, results = _get_all(tmp_path, daemons, origin.url("/stream.bin"))
    for d, cp, out in zip(daemons, results, outs):
        assert cp.returncode == 0, f"get on {d.name} ({length_mode} body): {describe(cp)}"
        assert sha256_file(out) == sha, f"{d.name}: content differs from the origin's"
    for r in origin.requests_for("/stream.bin"):
        assert r.status == 200, f"unexpected origin answer {r}"


@pytest.mark.parametrize("topology", ["standalone", "cluster"])
def test_zero_byte_file(tmp_path, origin, need_binary, topology):
    origin.add_bytes("/empty", b"")
    daemons, _ = _setup(tmp_path, topology)
    outs, results = _get_all(tmp_path, daemons, origin.url("/empty"))
    for d, cp, out in zip(daemons, results, outs):
        assert cp.returncode == 0, f"get of a 0-byte file on {d.name}: {describe(cp)}"
        assert out.exists() and out.stat().st_size == 0, f"{d.name}: output is not an empty file"


@pytest.mark.parametrize("topology", ["standalone", "cluster"])
def test_headers_reach_origin(tmp_path, origin, need_binary, topology):
    size = 2 * MiB + 9
    # The origin answers 401 without the header: success proves it arrived.
    sha = origin.add_random("/hdr.bin", size, tmp_path / "origin",
                            require={"X-Damselfly-Test": "hello-origin"})
    daemons, _ = _setup(tmp_path, topology)
    d = daemons[0]
    out = tmp_path / "out"
    cp = run_get(d, origin.url("/hdr.bin"), out, "-H", "X-Damselfly-Test: hello-origin",
                 "-H", "Accept-Language: tlh", timeout=90)
    assert cp.returncode == 0, f"get with -H: {describe(cp)}"
    assert sha256_file(out) == sha
    reqs = origin.requests_for("/hdr.bin")
    assert reqs, "the origin saw no request"
    for r in reqs:
        assert r.headers.get("x-damselfly-test") == "hello-origin", f"header missing in {r}"
        assert r.headers.get("accept-language") == "tlh", f"header missing in {r}"


@pytest.mark.parametrize("topology", ["standalone", "cluster"])
def test_authorization_reaches_origin_but_no_log(tmp_path, origin, need_binary, topology):
    # Never print the secret: assertions below compare without showing values.
    secret = "dmf-" + secrets.token_hex(24)
    auth = f"Bearer {secret}"
    size = 2 * MiB + 17
    sha = origin.add_random("/private.bin", size, tmp_path / "origin",
                            require={"Authorization": auth})
    daemons, everyone = _setup(tmp_path, topology)
    d = daemons[0]
    out = tmp_path / "out"
    cp = run_get(d, origin.url("/private.bin"), out, "-H", f"Authorization: {auth}", timeout=90)
    ok = cp.returncode == 0
    assert ok, "get with an Authorization header failed (exit %d)" % cp.returncode
    assert sha256_file(out) == sha
    reqs = origin.requests_for("/private.bin")
    assert reqs, "the origin saw no request"
    missing = sum(1 for r in reqs if r.headers.get("authorization") != auth)
    assert missing == 0, f"{missing} of {len(reqs)} origin requests lacked the Authorization"

    for p in everyone:
        p.stop()  # flush every log before reading
    leaked_in_get = secret.encode() in cp.stdout or secret.encode() in cp.stderr
    assert not leaked_in_get, "the secret appears in get's output"
    leaks = []
    for f in sorted(tmp_path.rglob("*")):
        if f.is_file() and f.suffix in (".log", ".stderr", ".stdout"):
            if secret.encode() in f.read_bytes():
                leaks.append(f.name)
    assert not leaks, f"the Authorization secret appears in: {leaks}"
