#!/usr/bin/env bash
# Builds the libFuzzer harnesses in fuzz/ with clang (build-fuzz/) and runs each one for
# a while on its corpus. Usage: ./scripts/fuzz.sh [SECONDS_PER_HARNESS (default 60)]
# New inputs that libFuzzer finds go to build-fuzz/corpus/<name>/; crashes stop the run.
set -euo pipefail
cd "$(dirname "$0")/.."
secs="${1:-60}"
./scripts/install-deps.sh
command -v clang >/dev/null || { echo "fuzz.sh: clang is required (apt-get install clang)" >&2; exit 1; }
CC=clang cmake -S . -B build-fuzz -G Ninja -DDMF_FUZZ=ON -DDMF_STATIC_GRPC=OFF >/dev/null
ninja -C build-fuzz
for h in build-fuzz/fuzz_*; do
    case "$h" in *_replay) continue ;; esac
    name=$(basename "$h"); corpus=${name#fuzz_}
    mkdir -p "build-fuzz/corpus/$corpus"
    echo "== $name for ${secs}s"
    "$h" -max_total_time="$secs" -max_len=65536 "build-fuzz/corpus/$corpus" "fuzz/corpus/$corpus"
done
