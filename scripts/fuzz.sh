#!/usr/bin/env bash
# Builds the libFuzzer harnesses in fuzz/ with clang under ASan+UBSan (build-fuzz/) and runs
# each one for a bounded time on its corpus.
#
#   ./scripts/fuzz.sh [SECONDS_PER_HARNESS]   default 60 s each
#   ./scripts/fuzz.sh --total SECONDS         SECONDS shared by all harnesses (CI: .ci/run)
#
# New inputs that libFuzzer finds go to build-fuzz/corpus/<name>/; a crash stops the run
# (exit non-zero) and leaves crash-* in build-fuzz/. Each harness is also replayed on its
# corpus by CTest in every build (fuzz/runner.c).
set -euo pipefail
cd "$(dirname "$0")/.."
secs=60
if [ "${1:-}" = "--total" ]; then
    total="${2:?--total needs SECONDS}"
    n=$(ls fuzz/fuzz_*.c | wc -l)
    secs=$(( total / n ))
    [ "$secs" -ge 1 ] || secs=1
elif [ $# -gt 0 ]; then
    secs="$1"
fi
./scripts/install-deps.sh
command -v clang >/dev/null || { echo "fuzz.sh: clang is required (apt-get install clang)" >&2; exit 1; }
CC=clang cmake -S . -B build-fuzz -G Ninja -DDMF_FUZZ=ON -DDMF_STATIC_GRPC=OFF >/dev/null
harnesses=$(cd fuzz && ls fuzz_*.c | sed 's/\.c$//')
# shellcheck disable=SC2086
ninja -C build-fuzz $harnesses
for name in $harnesses; do
    corpus=${name#fuzz_}
    mkdir -p "build-fuzz/corpus/$corpus"
    echo "== $name for ${secs}s"
    (cd build-fuzz && "./$name" -max_total_time="$secs" -max_len=65536 -timeout=10 \
        -print_final_stats=1 "corpus/$corpus" "../fuzz/corpus/$corpus")
done
