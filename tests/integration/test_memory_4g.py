"""A 4 GiB task through a seed and a daemon, both with --memory-limit 256m: the resident
memory of each stays under the limit plus a fixed overhead, and the bytes `get` writes are
exactly the origin's. The origin makes its content on the fly (scripts/origin.py
Generated): nothing of 4 GiB is kept on disk by the test or in its memory; the two piece
stores (4 GiB each) are deleted after the test with the test's other large files."""

import hashlib
import subprocess
import threading
import time
from pathlib import Path

import pytest

from harness import (MiB, _get_args, sanitized, scaled, start_daemon, start_scheduler,
                     wait_hosts)

SIZE = 4 << 30
LIMIT = 256 * MiB
# What a daemon holds besides piece buffers, measured (RelWithDebInfo, glibc malloc): an
# idle daemon is about 18.5 MiB (code, gRPC/absl/OpenSSL/SQLite state, thread stacks); at
# the peak of this download RSS was 20-25 MiB above the piece buffers held (seed: 211.5
# MiB RSS with 188 MiB of buffers; daemon: 147.4 MiB with 128 MiB). 64 MiB leaves room for
# malloc's per-thread arenas and one piece beyond the budget (a task with nothing in
# flight may always start one: 4 MiB here).
OVERHEAD = 64 * MiB


def status_kib(pid, field):
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


class RssSampler(threading.Thread):
    """Samples VmRSS of some processes every 100 ms; VmHWM is read at the end as well."""

    def __init__(self, procs):
        super().__init__(daemon=True)
        self.procs = procs
        self.peak = {name: 0 for name in procs}
        self.stopping = threading.Event()

    def run(self):
        while not self.stopping.is_set():
            for name, pid in self.procs.items():
                self.peak[name] = max(self.peak[name], status_kib(pid, "VmRSS") * 1024)
            self.stopping.wait(0.1)

    def finish(self):
        self.stopping.set()
        self.join(timeout=5)
        for name, pid in self.procs.items():
            self.peak[name] = max(self.peak[name], status_kib(pid, "VmHWM") * 1024)
        return self.peak


@pytest.mark.serial
@pytest.mark.deadline(150)
def test_4gib_task_with_memory_limit_256m(tmp_path, origin, need_binary):
    gen = origin.add_generated("/big.bin", SIZE, seed=15)
    expected = {}
    hasher = threading.Thread(target=lambda: expected.setdefault("sha", gen.sha256()),
                              daemon=True)
    hasher.start()

    sched = start_scheduler(tmp_path)
    # The most parallel fetches each allows, so that as many piece buffers as the daemon
    # would ever hold are in flight.
    seed = start_daemon(tmp_path, "seed", scheduler=sched, seed=True, memory_limit="256m",
                        source_concurrency=16, log_level="info")
    d = start_daemon(tmp_path, "d1", scheduler=sched, memory_limit="256m",
                     parent_concurrency=16, log_level="info")
    wait_hosts(sched, 2)
    idle = {n: status_kib(p.proc.pid, "VmRSS") * 1024 for n, p in (("seed", seed), ("d1", d))}

    sampler = RssSampler({"seed": seed.proc.pid, "d1": d.proc.pid})
    sampler.start()
    started = time.monotonic()
    err = open(tmp_path / "get.stderr", "wb")
    get = subprocess.Popen(_get_args(d, origin.url("/big.bin"), "-", ["-q"]),
                           stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=err)
    h, got = hashlib.sha256(), 0
    try:
        while True:
            chunk = get.stdout.read(4 * MiB)
            if not chunk:
                break
            h.update(chunk)
            got += len(chunk)
        rc = get.wait(timeout=scaled(30))
    finally:
        if get.poll() is None:
            get.kill()
            get.wait(timeout=10)
        err.close()
    elapsed = time.monotonic() - started
    peak = sampler.finish()
    hasher.join(timeout=scaled(60))

    print(f"4 GiB in {elapsed:.1f} s; idle RSS seed {idle['seed'] / MiB:.1f} MiB, "
          f"d1 {idle['d1'] / MiB:.1f} MiB; peak RSS seed {peak['seed'] / MiB:.1f} MiB, "
          f"d1 {peak['d1'] / MiB:.1f} MiB (bound {(LIMIT + OVERHEAD) / MiB:.0f} MiB)")
    assert rc == 0, f"get exited {rc}: {(tmp_path / 'get.stderr').read_bytes()[-2000:]!r}"
    assert got == SIZE, f"get wrote {got} bytes of {SIZE}"
    assert h.hexdigest() == expected["sha"], "the 4 GiB written differ from the origin's"
    assert seed.metric("damselfly_download_bytes_total", source="origin") >= SIZE
    assert d.metric("damselfly_download_bytes_total", source="origin") == 0, \
        "the daemon went to the origin: the seed path was not exercised"
    for name in ("seed", "d1"):
        m = (seed if name == "seed" else d).metrics()
        print(f"{name}: piece buffers peak {m.value('damselfly_piece_buffer_peak_bytes') / MiB:.1f}"
              f" MiB, {m.value('damselfly_piece_buffer_waits_total'):.0f} waits")
        assert m.value("damselfly_piece_buffer_peak_bytes") <= LIMIT + 4 * MiB
    if sanitized():
        pytest.skip("RSS is not bounded under ASan (freed memory stays in quarantine)")
    for name in ("seed", "d1"):
        assert peak[name] <= LIMIT + OVERHEAD, \
            f"{name}: peak RSS {peak[name] / MiB:.1f} MiB with --memory-limit 256m"
