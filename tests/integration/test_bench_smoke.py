"""Smoke run of the cluster benchmark (bench/cluster), so it cannot rot: N=2 hosts, a 4 MiB
file, one repetition of every scenario (direct, bittorrent, damselfly, damselfly-limited) in
network namespaces. Needs root, `ip netns` and the benchmark's tools (scripts/install-deps.sh
installs them); skipped with the reason otherwise."""

import json
import os
import shutil
import signal
import subprocess

import pytest

from harness import binary, repo_root, scaled

TOOLS = ("ip", "tc", "curl", "nginx", "aria2c", "opentracker", "mktorrent")


def _tool(name):
    return shutil.which(name) or next(
        (p for p in (f"/usr/sbin/{name}", f"/sbin/{name}") if os.access(p, os.X_OK)), None)


def _skip_reason():
    if os.geteuid() != 0:
        return "bench/cluster smoke run needs root (it creates network namespaces)"
    if _tool("ip") is None:
        return "bench/cluster smoke run needs iproute2 (`ip`)"
    try:
        cp = subprocess.run(["ip", "netns", "list"], capture_output=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"`ip netns` is not usable here: {e}"
    if cp.returncode != 0:
        return f"`ip netns` is not usable here: {cp.stderr.decode(errors='replace').strip()}"
    missing = [t for t in TOOLS if _tool(t) is None]
    if missing:
        return (f"bench/cluster smoke run needs {', '.join(missing)} "
                f"(scripts/install-deps.sh installs them)")
    return None


@pytest.mark.deadline(120)
def test_bench_cluster_smoke_every_scenario_completes_and_verifies(tmp_path, need_binary):
    reason = _skip_reason()
    if reason:
        pytest.skip(reason)
    out = tmp_path / "cluster.json"
    log = tmp_path / "cluster.log"
    args = [str(repo_root() / "bench" / "cluster"), "-n", "2", "--size-mib", "4", "--reps", "1",
            "--origin-up", "200", "--host-up", "100", "--host-down", "200",
            "--scenarios", "direct,bittorrent,damselfly,damselfly-limited", "--timeout", str(scaled(30)),
            "--damselfly", str(binary()), "--workdir", str(tmp_path / "work"), "--json", str(out)]
    with open(log, "wb") as f:
        p = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=f, stderr=subprocess.STDOUT)
        try:
            rc = p.wait(timeout=scaled(100))
        except BaseException:
            # Deadline or timeout: let the benchmark tear its namespaces down (SIGTERM), then
            # sweep whatever a stuck run left.
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(timeout=60)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(timeout=10)
            subprocess.run([args[0], "--cleanup"], capture_output=True, timeout=120)
            raise
    text = log.read_text(errors="replace")
    print(text)  # the table, in the test's captured output
    assert rc == 0, f"bench/cluster exited with {rc}:\n{text[-3000:]}"
    data = json.loads(out.read_text())
    for sc in ("direct", "bittorrent", "damselfly", "damselfly-limited"):
        s = data["summary"].get(sc)
        assert s is not None, f"no {sc} row in the results:\n{text[-3000:]}"
        assert all(w is not None and w > 0 for w in s["walls"]), f"{sc} did not complete: {s}"
        assert s["sha_total"] == 2 and s["sha_ok"] == 2, \
            f"{sc}: {s['sha_ok']} of {s['sha_total']} copies verified"
    assert "damselfly-limited: host limits at 0.5 of the link caps" in text, text[-3000:]
    leftover = [ns for ns in subprocess.run(["ip", "netns", "list"], capture_output=True,
                                            text=True, timeout=10).stdout.split()
                if ns.startswith(f"dmfb-{p.pid % 100000}-")]
    assert not leftover, f"namespaces left behind: {leftover}"


@pytest.mark.deadline(90)
def test_bench_soak_smoke_samples_and_counts(tmp_path, need_binary):
    """bench/soak for a few seconds with 2 daemons: it samples every process, downloads
    exact bytes through get and the proxy, prints its slope table and cleans up."""
    args = [str(repo_root() / "bench" / "soak"), "--duration", "8s", "--interval", "4s",
            "--daemons", "2", "--files", "2", "--versions", "3", "--damselfly", str(binary())]
    cp = subprocess.run(args, capture_output=True, text=True, timeout=scaled(80),
                        stdin=subprocess.DEVNULL, env=dict(os.environ, TMPDIR=str(tmp_path)))
    print(cp.stdout)
    assert cp.returncode == 0, cp.stdout[-3000:] + cp.stderr[-2000:]
    for label in ("scheduler", "seed", "d1", "d2"):
        assert any(line.startswith(label) for line in cp.stdout.splitlines()), cp.stdout
    done = [line for line in cp.stdout.splitlines() if line.startswith("downloads:")]
    assert done and " 0 failed, 0 wrong bytes" in done[0], cp.stdout
    assert int(done[0].split()[1]) > 0, cp.stdout
    assert not list(tmp_path.glob("dmf-soak-*")), "bench/soak left its directory behind"
