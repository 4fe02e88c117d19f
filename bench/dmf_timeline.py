#!/usr/bin/python3
"""Per-host timeline of one damselfly download, from the daemons' logs.

Reads a damselfly run directory kept by `bench/cluster --keep --log-level debug`
(<workdir>/runs/NN-damselfly: seed.log, h1.log, ... scheduler.log) and prints, for each
host: when it registered, the parents it was given (at registration and later), how many
pieces it received from each parent (the parents' piece-server debug lines, which name the
receiving address), when its first and last piece left a parent, and when it finished.
Times are seconds after the first registration.

    bench/dmf_timeline.py /tmp/dmf-bench-XXXX/runs/01-damselfly
"""

import re
import sys
from datetime import datetime, timezone
from pathlib import Path

TS = r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3})Z"
READY = re.compile(TS + r" \S+ info  (?:seed peer|daemon) ready: host (\S+), pieces on ([\d.]+):")
STATE = re.compile(TS + r" \S+ info  task \S+ peer \S+: (\S+) -> (\S+)$")
PARENT = re.compile(TS + r" \S+ info  task \S+ peer \S+: parent \S+ \((\S+?)(?:, seed)?\) at ")
OFFER = re.compile(TS + r" \S+ info  task \S+ peer \S+: scheduler offers (\d+) parent")
SEND = re.compile(TS + r" \S+ debug piece server: piece (\d+) of task \S+ to ([\d.]+):\d+: (\d+) bytes")


def t(s):
    return datetime.strptime(s, "%Y-%m-%dT%H:%M:%S.%f").replace(tzinfo=timezone.utc).timestamp()


def analyze(run_dir):
    run_dir = Path(run_dir)
    logs = {}
    for f in sorted(run_dir.glob("*.log")):
        if f.name.startswith(("get-", "scheduler", "perf")):
            continue
        logs[f.stem if f.stem != "seed" else "o"] = f.read_text(errors="replace").splitlines()
    ip_host = {}
    for name, lines in logs.items():
        for l in lines:
            m = READY.match(l)
            if m:
                ip_host[m.group(3)] = m.group(2)
                break
    hosts = {}
    for name, lines in logs.items():
        h = hosts.setdefault(name, {"parents": [], "offers": [], "from": {}, "first": None,
                                    "last": None, "reg": None, "done": None, "sent": 0})
        for l in lines:
            m = STATE.match(l)
            if m:
                if m.group(3) == "REGISTERING" and h["reg"] is None:
                    h["reg"] = t(m.group(1))
                if m.group(3) == "SUCCEEDED":
                    h["done"] = t(m.group(1))
                continue
            m = PARENT.match(l)
            if m:
                h["parents"].append((t(m.group(1)), m.group(2)))
                continue
            m = OFFER.match(l)
            if m:
                h["offers"].append(t(m.group(1)))
    for name, lines in logs.items():
        for l in lines:
            m = SEND.match(l)
            if not m:
                continue
            child = ip_host.get(m.group(3), m.group(3))
            ch = hosts.setdefault(child, {"parents": [], "offers": [], "from": {}, "first": None,
                                          "last": None, "reg": None, "done": None, "sent": 0})
            ch["from"][name] = ch["from"].get(name, 0) + 1
            ts = t(m.group(1))
            ch["first"] = ts if ch["first"] is None else min(ch["first"], ts)
            ch["last"] = ts if ch["last"] is None else max(ch["last"], ts)
            hosts[name]["sent"] += 1
    regs = [h["reg"] for n, h in hosts.items() if h["reg"] is not None and n != "o"]
    if not regs:
        return "no registrations found (run with --log-level debug and --keep)"
    t0 = min(regs)
    names = ["o"] + sorted((n for n in hosts if n != "o"), key=lambda s: (len(s), s))
    uploaders = [n for n in names if hosts[n]["sent"]] or ["o"]

    def rel(x):
        return f"{x - t0:6.2f}" if x is not None else "     -"

    out = [f"timeline of {run_dir} (seconds after the first host registered; pieces "
           f"received from each parent; 'o' is the seed on the origin host)"]
    head = (f"{'host':>4} {'reg':>6} {'first':>6} {'last':>6} {'done':>6} {'sent':>5}  "
            + " ".join(f"{'<' + u:>5}" for u in uploaders) + "  parents given (time: host)")
    out.append(head)
    for n in names:
        h = hosts[n]
        if n == "o":
            out.append(f"{'o':>4} {'':>6} {'':>6} {'':>6} {'':>6} {h['sent']:>5}  (seed)")
            continue
        par = ", ".join(f"{p[0] - t0:.1f}: {p[1]}" for p in h["parents"])
        out.append(f"{n:>4} {rel(h['reg'])} {rel(h['first'])} {rel(h['last'])} {rel(h['done'])} "
                   f"{h['sent']:>5}  " + " ".join(f"{h['from'].get(u, 0):>5}" for u in uploaders)
                   + f"  {par}")
    return "\n".join(out)


if __name__ == "__main__":
    if len(sys.argv) != 2:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    print(analyze(sys.argv[1]))
