#!/usr/bin/env bash
# damselfly demo: one 256 MiB file to three hosts, the origin hit about once.
#
# Builds damselfly, then on 127.0.0.1 starts a local origin serving a generated 256 MiB
# file, a scheduler, a seed peer and three daemons (free ports, a temp dir); runs
# `damselfly get` on the three daemons at once; prints per-host time, bytes from the origin
# vs from the seed and other daemons, and the verified SHA-256. Stops everything it started
# (by PID), also on Ctrl-C or error. Exits non-zero if anything failed.
#
# DMF_BUILD_DIR overrides the build directory (default build/); DEMO_SIZE_MIB the file size.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)

size_mib="${DEMO_SIZE_MIB:-256}"
build="${DMF_BUILD_DIR:-build}"
bin="$build/damselfly"

say() { printf '%s\n' "$*"; }
die() { printf 'demo: %s\n' "$*" >&2; exit 1; }

say "== building"
./scripts/install-deps.sh
cmake -S . -B "$build" -G Ninja >/dev/null
ninja -C "$build" damselfly
[ -x "$bin" ] || die "no binary at $bin"
bin=$(cd "$(dirname "$bin")" && pwd)/damselfly

work=$(mktemp -d /tmp/damselfly-demo.XXXXXX)
logs="$work/logs"
mkdir -p "$logs" "$work/origin" "$work/out"
pids=()
ok=0

cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    for _ in $(seq 50); do
        local alive=0
        for pid in "${pids[@]}"; do kill -0 "$pid" 2>/dev/null && alive=1; done
        [ "$alive" -eq 0 ] && break
        sleep 0.1
    done
    for pid in "${pids[@]}"; do kill -KILL "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    if [ "$ok" -eq 1 ]; then
        rm -rf "$work"
    else
        say "demo: FAILED; logs kept in $logs" >&2
        [ "$rc" -eq 0 ] && rc=1
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# Free ports, all distinct: origin, scheduler (2), and piece + rpc for each of four daemons.
read -r -a ports < <(/usr/bin/python3 - <<'EOF'
import socket
socks = [socket.socket() for _ in range(11)]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(" ".join(str(s.getsockname()[1]) for s in socks))
for s in socks:
    s.close()
EOF
)
origin_port=${ports[0]} sched_port=${ports[1]} sched_metrics=${ports[2]}

wait_for() { # wait_for SECONDS DESCRIPTION COMMAND...
    local secs=$1 what=$2; shift 2
    local deadline=$((SECONDS + secs))
    until "$@" >/dev/null 2>&1; do
        [ "$SECONDS" -lt "$deadline" ] || die "timed out waiting for $what"
        sleep 0.1
    done
}
listening() { curl -s -o /dev/null --max-time 1 "http://127.0.0.1:$1/metrics"; }

say "== generating a ${size_mib} MiB file"
head -c "$((size_mib * 1024 * 1024))" /dev/urandom > "$work/origin/blob.bin"
origin_sha=$(sha256sum "$work/origin/blob.bin" | cut -d' ' -f1)
url="http://127.0.0.1:$origin_port/blob.bin"

say "== starting origin, scheduler, seed and three daemons in $work"
/usr/bin/python3 "$repo/scripts/origin.py" --dir "$work/origin" --port "$origin_port" \
    >"$logs/origin.log" 2>&1 &
pids+=($!)
wait_for 10 "the origin" curl -s -o /dev/null --max-time 1 "http://127.0.0.1:$origin_port/__origin/stats"

# Seeds are known, not claimed: the scheduler trusts as a seed only the host listed in
# --seed-hosts (id|ip:rpc port; the seed's rpc port is ports[4], given to it below).
"$bin" scheduler --listen "127.0.0.1:$sched_port" --metrics-listen "127.0.0.1:$sched_metrics" \
    --seed-hosts "seed|127.0.0.1:${ports[4]}" >"$logs/scheduler.log" 2>&1 &
pids+=($!)
wait_for 10 "the scheduler" listening "$sched_metrics"

hosts=(seed d1 d2 d3)
declare -A piece_port sock
i=3
for h in "${hosts[@]}"; do
    piece_port[$h]=${ports[$i]}
    rpc=${ports[$((i + 1))]}
    i=$((i + 2))
    sock[$h]="$work/$h.sock"
    mkdir -p "$work/$h"
    seedflag=()
    # The seed fetches what the scheduler asks for; the demo's origin is on loopback, which
    # the origin policy refuses unless allowed (deliberately, for this one-machine cluster).
    [ "$h" = seed ] && seedflag=(--seed --origin-allow 127.0.0.0/8)
    "$bin" daemon --scheduler "127.0.0.1:$sched_port" --data-dir "$work/$h" --ip 127.0.0.1 \
        --piece-listen "127.0.0.1:${piece_port[$h]}" --rpc-listen "127.0.0.1:$rpc" \
        --socket "${sock[$h]}" --host-id "$h" --proxy-listen off "${seedflag[@]}" >"$logs/$h.log" 2>&1 &
    pids+=($!)
done
for h in "${hosts[@]}"; do
    wait_for 20 "daemon $h" listening "${piece_port[$h]}"
    wait_for 20 "daemon $h's socket" test -S "${sock[$h]}"
done
known_hosts() {
    curl -s --max-time 1 "http://127.0.0.1:$sched_metrics/metrics" |
        awk '$1 == "damselfly_scheduler_hosts" { exit !($2 >= 4) } END { if (NR == 0) exit 1 }'
}
wait_for 15 "the scheduler to know all four hosts" known_hosts

say "== damselfly get on d1, d2 and d3 at once"
gets=()
for h in d1 d2 d3; do
    (
        start=$(date +%s.%N)
        rc=0
        timeout 110 "$bin" get "$url" -O "$work/out/$h" --socket "${sock[$h]}" --quiet \
            2>"$logs/get-$h.stderr" || rc=$?
        end=$(date +%s.%N)
        echo "$rc $start $end" >"$work/out/$h.result"
    ) &
    gets+=($!)
done
pids+=("${gets[@]}")
failed=0
for pid in "${gets[@]}"; do wait "$pid" || true; done

metric() { # metric PORT SOURCE -> bytes (0 when absent)
    curl -s --max-time 2 "http://127.0.0.1:$1/metrics" |
        awk -v src="source=\"$2\"" 'index($0, "damselfly_download_bytes_total{") == 1 &&
            index($0, src) { v = $2 } END { printf "%d", v + 0 }'
}
mib() { awk -v b="$1" 'BEGIN { printf "%.1f", b / 1048576 }'; }

say
printf '%-6s %8s %12s %12s %12s  %s\n' host time origin seed peers "sha256"
printf '%-6s %8s %12s %12s %12s  %s\n' ---- ---- "(MiB)" "(MiB)" "(MiB)" ------
tot_origin=0 tot_seed=0 tot_peer=0
for h in "${hosts[@]}"; do
    o=$(metric "${piece_port[$h]}" origin)
    s=$(metric "${piece_port[$h]}" seed)
    p=$(metric "${piece_port[$h]}" peer)
    if [ "$h" = seed ]; then
        t="-" verdict="(seed: cache)"
    else
        tot_origin=$((tot_origin + o)) tot_seed=$((tot_seed + s)) tot_peer=$((tot_peer + p))
        read -r rc start end <"$work/out/$h.result"
        t=$(awk -v a="$start" -v b="$end" 'BEGIN { printf "%.2fs", b - a }')
        if [ "$rc" -ne 0 ]; then
            verdict="FAILED (exit $rc): $(tail -n 1 "$logs/get-$h.stderr")"
            failed=1
        elif [ "$(sha256sum "$work/out/$h" | cut -d' ' -f1)" = "$origin_sha" ]; then
            verdict="ok"
        else
            verdict="MISMATCH"
            failed=1
        fi
    fi
    printf '%-6s %8s %12s %12s %12s  %s\n' "$h" "$t" "$(mib "$o")" "$(mib "$s")" "$(mib "$p")" \
        "$verdict"
done

stats=$(curl -s --max-time 2 "http://127.0.0.1:$origin_port/__origin/stats")
read -r origin_bytes origin_reqs < <(printf '%s' "$stats" | /usr/bin/python3 -c \
    'import json,sys; s=json.load(sys.stdin); print(s["bytes_sent"], s["requests"])')
size_bytes=$((size_mib * 1024 * 1024))

say
say "origin served $(mib "$origin_bytes") MiB in $origin_reqs requests" \
    "($(awk -v a="$origin_bytes" -v b="$size_bytes" 'BEGIN { printf "%.2f", a / b }')x the file)"
say "the three daemons received $(mib "$tot_peer") MiB from each other," \
    "$(mib "$tot_seed") MiB from the seed, $(mib "$tot_origin") MiB from the origin"
say "origin sha256:   $origin_sha"
if [ "$failed" -eq 0 ]; then
    say "verified sha256: $origin_sha on d1, d2, d3 (matches the origin)"
    ok=1
else
    say "demo: at least one download failed or differs" >&2
    exit 1
fi
