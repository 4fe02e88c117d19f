"""What a user sees from the command line: help, version, errors, atomic output, stdout."""

import hashlib
import subprocess

import pytest

from harness import (MiB, binary, describe, get_error_lines, run_get, scaled, sha256_file,
                     start_daemon)

HELP_FLAGS = {
    "scheduler": ["--listen", "--metrics-listen", "--candidate-limit", "--host-timeout",
                  "--bad-parent-threshold", "--log-level"],
    "daemon": ["--scheduler", "--data-dir", "--ip", "--piece-listen", "--rpc-listen", "--socket",
               "--seed", "--host-id", "--announce-interval", "--log-level", "--cache-limit",
               "--task-ttl", "--gc-interval", "--max-open-files"],
    "get": ["-O", "--socket", "-H", "--digest", "--tag", "--filter-query", "--timeout",
            "--no-back-to-source", "--quiet"],
    "cache": ["--socket", "ls", "rm ID|URL", "gc"],
}


def dmf(*args, timeout=10):
    return subprocess.run([str(binary()), *map(str, args)], stdin=subprocess.DEVNULL,
                          capture_output=True, timeout=scaled(timeout))


def test_version(need_binary):
    cp = dmf("--version")
    assert cp.returncode == 0
    assert cp.stdout.decode().strip() == "damselfly 0.1.0"


def test_top_level_help_lists_subcommands(need_binary):
    cp = dmf("--help")
    assert cp.returncode == 0
    text = cp.stdout.decode()
    for sub in HELP_FLAGS:
        assert sub in text, f"`damselfly --help` does not mention {sub}"


@pytest.mark.parametrize("sub", sorted(HELP_FLAGS))
def test_subcommand_help_lists_flags(need_binary, sub):
    cp = dmf(sub, "--help")
    assert cp.returncode == 0, f"`damselfly {sub} --help` exited {cp.returncode}"
    text = cp.stdout.decode() + cp.stderr.decode()
    missing = [f for f in HELP_FLAGS[sub] if f not in text]
    assert not missing, f"`damselfly {sub} --help` does not list {missing}"


@pytest.mark.parametrize("sub", sorted(HELP_FLAGS))
def test_unknown_flag_is_an_error(tmp_path, need_binary, sub):
    cp = dmf(sub, "--no-such-flag")
    assert cp.returncode != 0, f"`damselfly {sub} --no-such-flag` exited 0"
    assert b"--no-such-flag" in cp.stderr, \
        f"the error does not name the flag: {cp.stderr.decode(errors='replace').strip()!r}"


def test_unknown_subcommand_is_an_error(need_binary):
    cp = dmf("frobnicate")
    assert cp.returncode != 0
    assert b"frobnicate" in cp.stderr


def test_digest_mismatch_fails_and_leaves_no_file(tmp_path, origin, need_binary):
    data = bytes(range(256)) * 4096 + b"tail"
    sha = origin.add_bytes("/digest.bin", data)
    d = start_daemon(tmp_path, "d1")
    outdir = tmp_path / "outdir"
    outdir.mkdir()
    out = outdir / "file"
    wrong = "sha256:" + hashlib.sha256(b"something else").hexdigest()
    cp = run_get(d, origin.url("/digest.bin"), out, "--digest", wrong, timeout=60)
    assert cp.returncode != 0, "a digest mismatch exited 0"
    lines = cp.stderr.decode("utf-8", "replace").strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("damselfly get: "), \
        f"expected one 'damselfly get: <reason>' line: {describe(cp)}"
    assert list(outdir.iterdir()) == [], \
        f"a failed get left files behind: {[p.name for p in outdir.iterdir()]}"

    cp = run_get(d, origin.url("/digest.bin"), out, "--digest", f"sha256:{sha}", timeout=60)
    assert cp.returncode == 0, f"get with the right digest: {describe(cp)}"
    assert sha256_file(out) == sha


def test_failed_get_leaves_no_file(tmp_path, origin, need_binary):
    d = start_daemon(tmp_path, "d1")
    outdir = tmp_path / "outdir"
    outdir.mkdir()
    cp = run_get(d, origin.url("/no-such-file"), outdir / "file", timeout=60)
    assert cp.returncode != 0, "a 404 from the origin exited 0"
    lines = cp.stderr.decode("utf-8", "replace").strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("damselfly get: "), \
        f"expected one 'damselfly get: <reason>' line: {describe(cp)}"
    assert list(outdir.iterdir()) == [], "a failed get left files behind"


def test_output_to_stdout_is_byte_exact(tmp_path, origin, need_binary):
    size = 3 * MiB + 5
    sha = origin.add_random("/stdout.bin", size, tmp_path / "origin")
    d = start_daemon(tmp_path, "d1")
    cp = run_get(d, origin.url("/stdout.bin"), "-", "--quiet", timeout=60)
    assert cp.returncode == 0, f"get -O -: {describe(cp)}"
    assert len(cp.stdout) == size, f"stdout has {len(cp.stdout)} bytes, expected {size}"
    assert hashlib.sha256(cp.stdout).hexdigest() == sha, "stdout differs from the origin's file"


def test_no_daemon_downloads_directly(tmp_path, origin, need_binary):
    size = 1 * MiB + 3
    sha = origin.add_random("/direct.bin", size, tmp_path / "origin")
    out = tmp_path / "out"
    cp = run_get(tmp_path / "nobody-here.sock", origin.url("/direct.bin"), out, timeout=60)
    assert cp.returncode == 0, f"get without a daemon: {describe(cp)}"
    assert sha256_file(out) == sha
    assert b"daemon" in cp.stderr.lower(), \
        f"get did not say that no daemon was reachable: {cp.stderr.decode(errors='replace')!r}"
    assert origin.request_count("/direct.bin") > 0


def test_no_daemon_no_back_to_source_fails_without_origin_request(tmp_path, origin, need_binary):
    origin.add_bytes("/direct.bin", b"x" * 1000)
    out = tmp_path / "out"
    cp = run_get(tmp_path / "nobody-here.sock", origin.url("/direct.bin"), out,
                 "--no-back-to-source", timeout=60)
    assert cp.returncode != 0, "get --no-back-to-source without a daemon exited 0"
    assert get_error_lines(cp), f"no 'damselfly get: <reason>' line: {describe(cp)}"
    assert origin.request_count() == 0, f"origin saw {origin.request_count()} requests"
    assert not out.exists()
