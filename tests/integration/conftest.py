"""Fixtures for the integration tests. See harness.py for the helpers themselves.

scripts/test.sh runs the suite in two parts: the tests not marked `serial` on several pytest
workers at once (pytest-xdist; most of a test's time is waiting on processes and timers),
then the `serial` ones (timing and CPU measurements) alone.

Every test body runs under a deadline (SIGALRM; default 120 s, `@pytest.mark.deadline(s)`
to change, both scaled by DMF_TEST_TIME_SCALE). Whatever a test started is stopped by PID
afterwards, and a process that crashed by itself or left a sanitizer report fails the test.
"""

import signal
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import harness  # noqa: E402

DEFAULT_DEADLINE = 120


class TestDeadline(Exception):
    pass


def pytest_configure(config):
    config.addinivalue_line("markers", "deadline(seconds): bound on the test body's run time")
    config.addinivalue_line(
        "markers", "serial: measures time or CPU, so it runs alone (scripts/test.sh runs "
        "these after the parallel part, one at a time)")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_call(item):
    m = item.get_closest_marker("deadline")
    seconds = harness.scaled(m.args[0] if m else DEFAULT_DEADLINE)

    def on_alarm(signum, frame):
        raise TestDeadline(f"{item.name} ran longer than {seconds:.0f}s")

    old = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


KEEP_SUFFIXES = (".log", ".stderr", ".stdout")
BIG_FILE = 256 << 10


def _drop_big_files(root):
    """Deletes the test's large files (origin content, outputs, piece stores), keeping logs
    for a post-mortem: pytest keeps the last runs' temp dirs, and they add up to gigabytes."""
    for p in root.rglob("*"):
        try:
            if (p.is_file() and not p.is_symlink() and not p.name.endswith(KEEP_SUFFIXES)
                    and p.stat().st_blocks * 512 >= BIG_FILE):
                p.unlink()
        except OSError:
            pass


@pytest.fixture(autouse=True)
def _stop_everything(tmp_path):
    """Stops every process the test started (by PID), fails on crashes and sanitizer
    reports, then deletes the test's large files."""
    yield
    harness.kill_gets()
    problems = harness.stop_all()
    _drop_big_files(tmp_path)
    if problems:
        pytest.fail("\n\n".join(problems), pytrace=False)


@pytest.fixture
def need_binary():
    b = harness.binary()
    if not b.exists():
        pytest.fail(f"no damselfly binary at {b} (build it, or set DMF_BUILD_DIR)",
                    pytrace=False)
    return b


@pytest.fixture
def origin():
    o = harness.Origin().start()
    try:
        yield o
    finally:
        o.stop()


@pytest.fixture
def pb():
    return harness.proto_modules()
