"""`get`'s output as curl, wget and dfget users expect: refusals leave the path alone and
download nothing, -O DIR/ names the file from the URL, symlinks are written through, modes
follow the umask (or the replaced file), signals leave no temp file, exit codes tell what
failed; and a non-root user in the socket's group gets P2P without reading the data dir."""

import os
import shutil
import signal
import stat
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from harness import (MiB, Daemon, binary, describe, free_port, run_get, scaled, sha256_file,
                     spawn_get, start_daemon, start_scheduler, wait_hosts, wait_until)


def temps(directory):
    return [p.name for p in Path(directory).iterdir() if ".damselfly-" in p.name]


@pytest.mark.deadline(90)
def test_refusals_leave_the_path_alone_and_download_nothing(tmp_path, origin, need_binary):
    origin.add_random("/f.bin", 300 * 1024, tmp_path / "origin")
    url = origin.url("/f.bin")
    d = start_daemon(tmp_path, "d1")
    work = tmp_path / "work"
    work.mkdir()
    fifo = work / "fifo"
    os.mkfifo(fifo)
    folder = work / "folder"
    folder.mkdir()
    (folder / "keep").write_text("x")
    node = work / "null"
    os.mknod(node, stat.S_IFCHR | 0o600, os.makedev(1, 3))
    sock = work / "sock"
    import socket
    s = socket.socket(socket.AF_UNIX)
    s.bind(str(sock))
    existing = work / "existing"
    existing.write_bytes(b"mine")
    dangling = work / "dangling"
    os.symlink(work / "nowhere", dangling)
    cases = {
        "FIFO": (fifo, "FIFO"),
        "directory without a slash": (folder, "directory"),
        "device": (node, "device"),
        "socket": (sock, "socket"),
        "existing file": (existing, "--overwrite"),
        "dangling symlink": (dangling, "symlink"),
        "missing directory": (str(work / "no-such-dir") + "/", "not a directory"),
    }
    for what, (path, word) in cases.items():
        before = os.lstat(path) if os.path.lexists(path) else None
        cp = run_get(d, url, path, timeout=30)
        lines = cp.stderr.decode().strip().splitlines()
        assert cp.returncode == 3, f"{what}: {describe(cp)}"
        assert len(lines) == 1 and word in lines[0], f"{what}: {describe(cp)}"
        if before is not None:
            after = os.lstat(path)
            assert (after.st_ino, after.st_mode, after.st_size) == \
                (before.st_ino, before.st_mode, before.st_size), f"{what}: the path changed"
        assert temps(work) == [], f"{what}: a temp file was left"
    s.close()
    assert (folder / "keep").read_text() == "x" and existing.read_bytes() == b"mine"
    assert origin.sent("/f.bin") == 0, "something was downloaded before a refusal"


@pytest.mark.deadline(90)
def test_directory_slash_symlink_and_modes(tmp_path, origin, need_binary):
    sha = origin.add_random("/dir/name.bin", 300 * 1024 + 1, tmp_path / "origin")
    url = origin.url("/dir/name.bin") + "?x=1"
    d = start_daemon(tmp_path, "d1")
    folder = tmp_path / "folder"
    folder.mkdir()
    # -O DIR/ writes DIR/<last segment of the URL's path> (wget), with 0666 & ~umask.
    env_umask = ["sh", "-c", 'umask 027; exec "$@"', "sh"]
    cp = subprocess.run(env_umask + [str(binary()), "get", url, "-O", f"{folder}/", "--socket",
                                     str(d.socket)], capture_output=True, timeout=scaled(60))
    assert cp.returncode == 0, describe(cp)
    out = folder / "name.bin"
    assert sha256_file(out) == sha
    assert stat.S_IMODE(os.stat(out).st_mode) == 0o640
    # A URL whose path names no file cannot be written into a directory.
    origin.add_random("/", 10, tmp_path / "origin-root")
    cp = run_get(d, origin.url("/"), f"{folder}/", timeout=30)
    assert cp.returncode == 3 and "names no file" in cp.stderr.decode(), describe(cp)
    # A symlink is written through to its target (curl), which keeps its mode.
    target = tmp_path / "target"
    target.write_bytes(b"old")
    os.chmod(target, 0o600)
    link = tmp_path / "link"
    os.symlink(target, link)
    cp = run_get(d, url, link, "--overwrite", timeout=60)
    assert cp.returncode == 0, describe(cp)
    assert os.path.islink(link) and os.readlink(link) == str(target)
    assert sha256_file(target) == sha
    assert stat.S_IMODE(os.stat(target).st_mode) == 0o600
    assert temps(tmp_path) == []


def wait_temp(directory, g):
    def appeared():
        if g.poll() is not None:
            raise AssertionError(f"get ended early: {describe(g.result())}")
        return temps(directory) != []
    wait_until(appeared, scaled(20), what="the temp file")


@pytest.mark.deadline(120)
@pytest.mark.parametrize("sig,code", [(signal.SIGINT, 130), (signal.SIGTERM, 143),
                                      (signal.SIGHUP, 129)])
def test_signal_removes_the_temp_file(tmp_path, origin, need_binary, sig, code):
    origin.add_random("/slow.bin", 8 * MiB, tmp_path / "origin")
    origin.throttle = 512 * 1024
    d = start_daemon(tmp_path, "d1")
    work = tmp_path / "work"
    work.mkdir()
    g = spawn_get(d, origin.url("/slow.bin"), work / "out", log_dir=tmp_path, name="get")
    wait_temp(work, g)
    time.sleep(0.3)
    g.popen.send_signal(sig)
    rc = g.wait(scaled(20)).returncode
    assert rc == code, f"exit {rc} after {sig.name}"
    assert list(work.iterdir()) == [], f"left behind: {list(work.iterdir())}"


@pytest.mark.deadline(120)
def test_exit_codes(tmp_path, origin, need_binary):
    sha = origin.add_random("/ok.bin", 100 * 1024, tmp_path / "origin")
    d = start_daemon(tmp_path, "d1")
    cp = run_get(d, origin.url("/missing.bin"), tmp_path / "o1", timeout=60)
    assert cp.returncode == 4 and "404" in cp.stderr.decode(), describe(cp)
    cp = run_get(d, f"http://127.0.0.1:{free_port()}/x.bin", tmp_path / "o2", timeout=60)
    assert cp.returncode == 5, describe(cp)
    cp = run_get(d, origin.url("/ok.bin"), tmp_path / "o3", "--digest", "sha256:" + "0" * 64,
                 timeout=60)
    assert cp.returncode == 7, describe(cp)
    assert not (tmp_path / "o3").exists()
    cp = run_get(tmp_path / "no.sock", origin.url("/ok.bin"), tmp_path / "o4",
                 "--no-back-to-source", timeout=60)
    assert cp.returncode == 9, describe(cp)
    # Without a daemon, the same codes from the direct download.
    cp = run_get(tmp_path / "no.sock", origin.url("/missing.bin"), tmp_path / "o5", timeout=60)
    assert cp.returncode == 4, describe(cp)
    origin.add_random("/slow.bin", 8 * MiB, tmp_path / "origin")
    origin.throttle = 512 * 1024
    cp = run_get(d, origin.url("/slow.bin"), tmp_path / "o6", "--timeout", "1s", timeout=60)
    assert cp.returncode == 6, describe(cp)
    origin.throttle = None
    cp = run_get(d, origin.url("/ok.bin"), tmp_path / "o7", timeout=60)
    assert cp.returncode == 0 and sha256_file(tmp_path / "o7") == sha
    help_text = subprocess.run([str(binary()), "get", "--help"], capture_output=True,
                               timeout=10).stdout.decode()
    for code in (2, 3, 4, 5, 6, 7, 8, 9, 10, 130, 143):
        assert f"{code}" in help_text


NOBODY = 65534


def as_user(gid, groups, cmd, umask="022"):
    """Runs cmd as uid 65534 with primary group gid and supplementary groups (or none)."""
    args = ["setpriv", f"--reuid={NOBODY}", f"--regid={gid}"]
    args += [f"--groups={','.join(map(str, groups))}"] if groups else ["--clear-groups"]
    return subprocess.run(args + ["sh", "-c", f'umask {umask}; exec "$@"', "sh"] +
                          [str(c) for c in cmd], capture_output=True, timeout=scaled(90),
                          stdin=subprocess.DEVNULL)


@pytest.mark.deadline(150)
def test_socket_group_gives_a_user_p2p_but_not_the_data_dir(tmp_path, origin, need_binary):
    if shutil.which("setpriv") is None:
        pytest.skip("setpriv (util-linux) is not installed: cannot run get as another user")
    if os.geteuid() != 0:
        pytest.skip("needs root to start processes as another user")
    # Everything the other user needs to reach lies outside pytest's private tmp dirs.
    top = Path(tempfile.mkdtemp(prefix="dmf-users-", dir="/tmp"))
    d1 = None
    try:
        os.chmod(top, 0o755)
        group = 54321  # a GID with no name: --socket-group takes numbers
        size = 3 * MiB + 3
        sha = origin.add_random("/shared.bin", size, tmp_path / "origin")
        url = origin.url("/shared.bin")
        s = start_scheduler(tmp_path)
        seed = start_daemon(tmp_path, "seed", scheduler=s, seed=True)
        ddir = top / "d1"
        ddir.mkdir()
        os.chmod(ddir, 0o755)
        d1 = Daemon(name="d1", dir=ddir, data_dir=ddir / "data", socket_path=ddir / "d1.sock",
                    piece_port=free_port(), rpc_port=free_port(),
                    log_path=tmp_path / "d1.log", host_id="d1", seed=False, scheduler=s,
                    extra={"proxy_listen": "off", "socket_group": str(group)})
        d1._start(20)
        wait_hosts(s, 2)
        st = os.stat(d1.socket)
        assert stat.S_IMODE(st.st_mode) == 0o660 and st.st_gid == group
        assert stat.S_IMODE(os.stat(d1.data_dir).st_mode) == 0o700
        outdir = top / "home"
        outdir.mkdir()
        os.chown(outdir, NOBODY, group)

        # Not in the group: a clear error, and no silent download around the daemon.
        cp = as_user(NOBODY, [], [binary(), "get", url, "-O", outdir / "denied",
                                  "--socket", d1.socket])
        assert cp.returncode == 10, describe(cp)
        assert "permission denied" in cp.stderr.decode().lower()
        assert not (outdir / "denied").exists()
        assert origin.sent("/shared.bin") == 0

        # In the group, but the output directory is not writable for the user: refused
        # before anything is downloaded.
        cp = as_user(NOBODY, [group], [binary(), "get", url, "-O", ddir / "not-mine",
                                       "--socket", d1.socket])
        assert cp.returncode == 3 and "cannot write in" in cp.stderr.decode(), describe(cp)
        assert origin.sent("/shared.bin") == 0 and not (ddir / "not-mine").exists()

        # In the group: P2P through the daemon (the seed's bytes), the user's umask.
        out = outdir / "out"
        cp = as_user(NOBODY, [group], [binary(), "get", url, "-O", out, "--socket", d1.socket],
                     umask="027")
        assert cp.returncode == 0, describe(cp)
        assert sha256_file(out) == sha
        ost = os.stat(out)
        assert ost.st_uid == NOBODY and stat.S_IMODE(ost.st_mode) == 0o640
        from_cluster = d1.download_bytes("seed") + d1.download_bytes("peer")
        assert from_cluster >= size, f"d1 got {from_cluster} bytes from the seed/peers"
        # The user cannot read the cache itself.
        data_files = [p for p in (d1.data_dir / "tasks").rglob("data")]
        assert data_files
        cp = as_user(NOBODY, [group], ["cat", data_files[0]])
        assert cp.returncode != 0 and b"Permission denied" in cp.stderr, describe(cp)
        cp = as_user(NOBODY, [group], ["ls", d1.data_dir])
        assert cp.returncode != 0, describe(cp)
    finally:
        if d1 is not None and d1.proc is not None:
            d1.stop()
        shutil.rmtree(top, ignore_errors=True)
