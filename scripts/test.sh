#!/usr/bin/env bash
# Builds damselfly and runs the whole test suite: unit tests (CTest), then the integration
# tests (pytest, real processes on 127.0.0.1).
#
#   ./scripts/test.sh                 build/ (RelWithDebInfo)
#   ./scripts/test.sh --sanitize      build-asan/ with AddressSanitizer + UBSan, same suite
#   ./scripts/test.sh --tsan          build-tsan/ with ThreadSanitizer, unit tests only
#   ./scripts/test.sh -- -k faults    anything after -- goes to pytest
#
# DMF_BUILD_DIR overrides the build directory; DMF_TEST_JOBS (default 3) is how many pytest
# workers run the integration tests not marked `serial` (1: all in one process, in order).
# Exits non-zero when anything failed.
set -uo pipefail
cd "$(dirname "$0")/.."

sanitize=0
tsan=0
pytest_args=()
while [ $# -gt 0 ]; do
    case "$1" in
        --sanitize) sanitize=1 ;;
        --tsan) tsan=1 ;;
        --) shift; pytest_args=("$@"); break ;;
        -h|--help) sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "test.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
    esac
    shift
done

cmake_args=(-G Ninja)
if [ "$tsan" -eq 1 ] && [ "$sanitize" -eq 1 ]; then
    echo "test.sh: --tsan and --sanitize exclude each other (run them one after the other)" >&2
    exit 2
fi
if [ "$tsan" -eq 1 ]; then
    # Only the unit tests: the integration suite's processes are gRPC-heavy, and Debian's
    # gRPC and abseil are not built with TSan: their own locking (futexes) is invisible to
    # it, and every hand-over through them reads as a race inside them. test_rpc and
    # test_rpc_tls, which drive gRPC core, are left out for that reason. One test at a time:
    # TSan slows each test down several times over, and some wait with deadlines.
    build="${DMF_BUILD_DIR:-build-tsan}"
    cmake -S . -B "$build" -G Ninja -DDMF_TSAN=ON >/dev/null && ninja -C "$build" || exit 1
    export TSAN_OPTIONS="halt_on_error=1 second_deadlock_stack=1"
    echo "== unit tests under ThreadSanitizer ($build)"
    ctest --test-dir "$build" --output-on-failure -j1 -E '^common/test_rpc(_tls)?$'
    exit $?
fi
if [ "$sanitize" -eq 1 ]; then
    build="${DMF_BUILD_DIR:-build-asan}"
    cmake_args+=(-DDMF_SANITIZE=ON)
    export ASAN_OPTIONS="detect_leaks=1"
    export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1"
    export DMF_TEST_TIME_SCALE="${DMF_TEST_TIME_SCALE:-3}"
else
    build="${DMF_BUILD_DIR:-build}"
fi
export DMF_BUILD_DIR="$(cd "$(dirname "$build")" && pwd)/$(basename "$build")"

status_deps="-" status_build="-" status_unit="-" status_integration="-"
summary() {
    echo
    echo "== damselfly test summary ($([ "$sanitize" -eq 1 ] && echo "ASan+UBSan, " )$DMF_BUILD_DIR)"
    printf '   %-12s %s\n' deps "$status_deps" build "$status_build" \
        unit "$status_unit" integration "$status_integration"
}

echo "== dependencies"
if ./scripts/install-deps.sh; then status_deps=ok; else status_deps=FAILED; summary; exit 1; fi

echo "== build ($DMF_BUILD_DIR)"
if cmake -S . -B "$DMF_BUILD_DIR" "${cmake_args[@]}" >/dev/null && ninja -C "$DMF_BUILD_DIR"; then
    status_build=ok
else
    status_build=FAILED; summary; exit 1
fi

rc=0
echo "== unit tests (ctest)"
if ctest --test-dir "$DMF_BUILD_DIR" --output-on-failure -j2; then
    status_unit=passed
else
    status_unit=FAILED; rc=1
fi

# Two parts: the tests that only wait on processes run on DMF_TEST_JOBS workers at once
# (pytest-xdist); those marked `serial` (they measure time or CPU) run after, alone.
# Exit code 5 is pytest's "nothing selected" (a -k that matches only one part).
jobs="${DMF_TEST_JOBS:-3}"
pytest_part() {
    local what="$1"; shift
    echo "== integration tests, $what (pytest)"
    /usr/bin/python3 -m pytest -q -rfEs -p no:cacheprovider tests/integration "$@" \
        "${pytest_args[@]}"
    local r=$?
    [ "$r" -eq 0 ] || [ "$r" -eq 5 ]
}
status_integration=passed
if [ "$jobs" -gt 1 ]; then
    pytest_part "parallel on $jobs workers" -n "$jobs" -m "not serial" || status_integration=FAILED
    pytest_part "serial" -m serial || status_integration=FAILED
else
    pytest_part "one at a time" || status_integration=FAILED
fi
[ "$status_integration" = passed ] || rc=1

summary
exit $rc
