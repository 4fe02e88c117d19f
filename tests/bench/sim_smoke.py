#!/usr/bin/python3
"""CTest smoke test of dmf-sim (bench/sim.c): a tiny swarm must be simulated sanely.

Runs 20 hosts on an 8 MiB file (mesh, then the DAG graph, then hosts arriving over 2 s) and
checks what any correct run satisfies: every host completes, no host before the fluid bound
(last >= T* when all start at once, first >= F/d: times count from each host's arrival), the origin sends at least one copy, the scheduler failed nobody,
and the same seed gives the same curve twice (the simulator is deterministic)."""
import re
import subprocess
import sys


def run(sim, *extra):
    args = [sim, "-q", "-n", "20", "--size-mib", "8", "--origin-up", "100", "--host-up", "50",
            "--host-down", "100", *extra]
    cp = subprocess.run(args, capture_output=True, text=True, timeout=60)
    line = next((l for l in cp.stdout.splitlines() if l.startswith("sim: ")), None)
    assert line is not None, f"{args}: no result line (exit {cp.returncode}): {cp.stderr}"
    r = {k: float(v) for k, v in re.findall(r"(\w+)=([-\d.naif]+)", line)}
    assert cp.returncode == 0, f"{args}: exit {cp.returncode}: {cp.stdout}{cp.stderr}"
    return r, line


def main(sim):
    F = 8 * 1048576
    d = 100e6 / 8 * 1448 / 1514
    for extra in ([], ["--dag"], ["--arrival-s", "2"], ["--layers", "2"]):
        r, line = run(sim, *extra)
        what = " ".join(extra) or "mesh"
        assert r["done"] == r["n"] == 20, f"{what}: not every host completed: {line}"
        if "--arrival-s" not in extra:  # T* assumes every host starts at 0
            assert r["last"] >= r["tstar"] * (1 - 1e-9), f"{what}: last before T*: {line}"
        assert r["first"] >= F / d * (1 - 1e-9), f"{what}: a host faster than its link: {line}"
        assert r["p50"] <= r["p99"] <= r["last"], f"{what}: curve not monotonic: {line}"
        assert r["egress"] >= 1 - 1e-6, f"{what}: origin sent less than one copy: {line}"
        assert r["last"] < 20 * r["tstar"], f"{what}: absurdly slow: {line}"
        assert r["failed"] == 0 and r["gone"] == 0, f"{what}: peers failed: {line}"
        print(f"ok {what}: {line}")
    a, la = run(sim, "--seed", "7")
    b, lb = run(sim, "--seed", "7")
    strip = lambda l: re.sub(r" (sched_)?cpu=\S+", "", l)
    assert strip(la) == strip(lb), f"not deterministic:\n{la}\n{lb}"
    print("ok deterministic")


if __name__ == "__main__":
    main(sys.argv[1])
