"""Bandwidth limits: host-wide buckets shared by every transfer (--download-limit,
--origin-limit, --upload-limit), a task's own limit (get --limit), fair sharing and priority
between tasks, and limits changed at runtime (SIGHUP).

Every rate is measured over at least 5 s of transfer, after a ramp-up second, from bytes a
user sees: `get -O -` streams the verified content in order, and a reader thread here
timestamps what arrives; uploads from the parent's piece-server counter."""

import os
import signal
import subprocess
import threading
import time

import pytest

from harness import (MiB, binary, describe, require_binary, run_get, scaled, sha256_file,
                     spawn_get, start_daemon, start_scheduler, time_scale, wait_gets,
                     wait_hosts, wait_until)

RAMP = 1.0    # s: connections open, buffers fill; not measured
# Enough range requests per task that the limit, not the per-request round trips of a busy
# machine, is what holds a download back.
SOURCE = {"source_concurrency": 8}
WINDOW = 5.0  # s: the measured span (the issue asks for at least 5 s of transfer)


class Stream:
    """`damselfly get URL -O - --socket S args...`, its stdout counted as it arrives."""

    def __init__(self, daemon, url, *args):
        require_binary()
        self.samples = [(time.monotonic(), 0)]
        self.total = 0
        self.popen = subprocess.Popen(
            [str(binary()), "get", str(url), "-O", "-", "--socket", str(daemon.socket), "-q"] +
            [str(a) for a in args],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self):
        while True:
            b = self.popen.stdout.read1(256 << 10)
            if not b:
                break
            self.total += len(b)
            self.samples.append((time.monotonic(), self.total))

    def at(self, t):
        """Bytes received by time t, interpolated between the samples around it: output
        comes in steps (several pieces verified at once are written in order), and a step
        just inside or outside a window edge must not count whole."""
        prev = self.samples[0]
        for ts, n in self.samples[1:]:
            if ts >= t:
                if ts == prev[0]:
                    return n
                return prev[1] + (n - prev[1]) * (t - prev[0]) / (ts - prev[0])
            prev = (ts, n)
        return prev[1]

    def between(self, t0, t1):
        return self.at(t1) - self.at(t0)

    def wait(self, timeout):
        try:
            self.popen.wait(timeout=scaled(timeout))
        finally:
            self.kill()
        self.thread.join(timeout=5)
        return self.popen.returncode

    def kill(self):
        if self.popen.poll() is None:
            self.popen.kill()
            self.popen.wait(timeout=10)

    def stderr(self):
        return self.popen.stderr.read().decode(errors="replace") if self.popen.stderr else ""


def sleep_until(t):
    d = t - time.monotonic()
    if d > 0:
        time.sleep(d)


def within(rate, target, tol=0.05):
    return abs(rate - target) <= tol * target


# A sanitizer build (DMF_TEST_TIME_SCALE > 1) on a shared 2-core machine may not have the
# CPU to reach a limit (an ASan daemon, get and origin at 16 MiB/s): there a test checks
# only that no limit is exceeded; shares and priorities, which need the limit to be the
# bottleneck, are checked in the normal build.
SLOW_BUILD = time_scale() > 1


def holds(rate, target):
    """The limit holds: within 5 %. Slow build: at most 15 % above it, as the client sees
    it: a starved `get` lags behind the daemon and then catches up within the window."""
    if SLOW_BUILD:
        return 0 < rate <= 1.15 * target
    return within(rate, target)


def fmt(rate):
    return f"{rate / MiB:.2f} MiB/s"


@pytest.fixture
def streams():
    made = []
    yield made
    for s in made:
        s.kill()


@pytest.mark.serial  # measures rates
@pytest.mark.deadline(60)
def test_download_limit_shared_fairly_by_three_downloads(tmp_path, origin, need_binary, streams):
    """--download-limit 16m, three concurrent downloads of different files: the total is
    within 5 % of 16 MiB/s and each gets 25-42 % of it."""
    size = 40 * MiB  # 120 MiB at 16 MiB/s: all three still running at the window's end
    for i in range(3):
        origin.add_random(f"/f{i}.bin", size, tmp_path / "origin")
    d = start_daemon(tmp_path, "d1", download_limit="16m", **SOURCE)
    t0 = time.monotonic()
    streams += [Stream(d, origin.url(f"/f{i}.bin")) for i in range(3)]
    sleep_until(t0 + RAMP + WINDOW + 0.2)
    got = [s.between(t0 + RAMP, t0 + RAMP + WINDOW) for s in streams]
    total = sum(got) / WINDOW
    shares = [g / sum(got) for g in got]
    print(f"total {fmt(total)}, shares {[f'{x:.1%}' for x in shares]}")
    assert holds(total, 16 * MiB), f"total {fmt(total)}, want 16 MiB/s +-5%"
    for i, sh in enumerate(shares):
        assert SLOW_BUILD or 0.25 <= sh <= 0.42, f"download {i} got {sh:.1%} of the total {shares}"
    m = d.metrics()
    assert m.value("damselfly_bandwidth_limit_bytes", limit="download") == 16 * MiB
    assert m.value("damselfly_throttled_bytes_total", limit="download") > 0
    for s in streams:
        assert s.wait(30) == 0, s.stderr()
        assert s.total == size


@pytest.mark.serial  # measures rates
@pytest.mark.deadline(60)
def test_origin_limit_within_download_limit(tmp_path, origin, need_binary, streams):
    """--origin-limit 8m under --download-limit 16m: a back-to-source download runs at
    8 MiB/s within 5 %."""
    size = 56 * MiB
    sha = origin.add_random("/o.bin", size, tmp_path / "origin")
    d = start_daemon(tmp_path, "d1", download_limit="16m", origin_limit="8m", **SOURCE)
    t0 = time.monotonic()
    s = Stream(d, origin.url("/o.bin"))
    streams.append(s)
    sleep_until(t0 + RAMP + WINDOW + 0.2)
    rate = s.between(t0 + RAMP, t0 + RAMP + WINDOW) / WINDOW
    print(f"origin download {fmt(rate)}")
    assert holds(rate, 8 * MiB), f"{fmt(rate)}, want 8 MiB/s +-5%"
    assert d.metric("damselfly_throttled_bytes_total", limit="origin") > 0
    assert s.wait(30) == 0, s.stderr()
    # The content is whole and right, and the cache serves it again at once.
    out = tmp_path / "again"
    cp = run_get(d, origin.url("/o.bin"), out, timeout=30)
    assert cp.returncode == 0, describe(cp)
    assert sha256_file(out) == sha


@pytest.mark.serial  # measures rates
@pytest.mark.deadline(90)
def test_upload_limit_on_parent_serving_three_children(tmp_path, origin, need_binary):
    """--upload-limit 8m on a parent that holds a file, three children fetching it: the
    parent's upload is within 5 % of 8 MiB/s, and it announces 8 MiB/s as its capacity."""
    size = 64 * MiB  # every piece leaves the parent at least once: >= 8 s at 8 MiB/s
    sha = origin.add_random("/u.bin", size, tmp_path / "origin")
    sched = start_scheduler(tmp_path)
    p = start_daemon(tmp_path, "parent", scheduler=sched, upload_limit="8m")
    cp = run_get(p, origin.url("/u.bin"), tmp_path / "parent-out", timeout=60)
    assert cp.returncode == 0, describe(cp)
    kids = [start_daemon(tmp_path, f"c{i}", scheduler=sched, parent_stall_timeout="30s",
                         progress_timeout="60s")
            for i in range(3)]
    wait_hosts(sched, 4)
    from_origin = origin.sent("/u.bin")
    up0 = p.upload_bytes()
    t0 = time.monotonic()
    gets = [spawn_get(k, origin.url("/u.bin"), tmp_path / f"out-{k.name}", log_dir=tmp_path,
                      name=f"get-{k.name}") for k in kids]
    sleep_until(t0 + RAMP + 0.5)
    a = p.upload_bytes()
    ta = time.monotonic()
    sleep_until(ta + WINDOW)
    b = p.upload_bytes()
    tb = time.monotonic()
    rate = (b - a) / (tb - ta)
    print(f"parent upload {fmt(rate)} over {tb - ta:.2f}s (before: {up0} bytes)")
    assert holds(rate, 8 * MiB), f"parent uploaded {fmt(rate)}, want 8 MiB/s +-5%"
    for g, k in zip(wait_gets(gets, 60), kids):
        assert g.returncode == 0, f"{k.name}: {describe(g)}"
        assert sha256_file(tmp_path / f"out-{k.name}") == sha
    assert origin.sent("/u.bin") == from_origin, "a child went to the origin"
    assert p.metric("damselfly_bandwidth_limit_bytes", limit="upload") == 8 * MiB
    assert b"upload-limit unlimited -> 8388608 B/s" in p.proc.log_bytes()


@pytest.mark.serial  # measures rates
@pytest.mark.deadline(60)
def test_get_limit_caps_one_task_others_unaffected(tmp_path, origin, need_binary, streams):
    """get --limit 4m: that task runs within 5 % of 4 MiB/s; a task beside it without a
    limit runs at about the speed it has alone (measured in the same run)."""
    origin.add_random("/slow.bin", 28 * MiB, tmp_path / "origin")
    origin.add_random("/alone.bin", 48 * MiB, tmp_path / "origin")
    origin.add_random("/beside.bin", 48 * MiB, tmp_path / "origin")
    d = start_daemon(tmp_path, "d1", **SOURCE)
    t = time.monotonic()
    cp = run_get(d, origin.url("/alone.bin"), tmp_path / "alone", timeout=30)
    alone = time.monotonic() - t
    assert cp.returncode == 0, describe(cp)

    t0 = time.monotonic()
    slow = Stream(d, origin.url("/slow.bin"), "--limit", "4m")
    streams.append(slow)
    sleep_until(t0 + 2.0)
    t = time.monotonic()
    cp = run_get(d, origin.url("/beside.bin"), tmp_path / "beside", timeout=30)
    beside = time.monotonic() - t
    assert cp.returncode == 0, describe(cp)
    sleep_until(t0 + RAMP + WINDOW + 0.2)
    rate = slow.between(t0 + RAMP, t0 + RAMP + WINDOW) / WINDOW
    print(f"limited task {fmt(rate)}; 48 MiB alone {alone:.2f}s, beside it {beside:.2f}s")
    assert holds(rate, 4 * MiB), f"the limited task ran at {fmt(rate)}, want 4 MiB/s +-5%"
    assert SLOW_BUILD or 48 * MiB / beside > 4 * 4 * MiB, \
        f"the other task ran at {fmt(48 * MiB / beside)}"
    assert SLOW_BUILD or beside <= 2.0 * alone + 0.5, \
        f"the unlimited task took {beside:.2f}s beside the limited one, {alone:.2f}s alone"
    assert slow.wait(30) == 0, slow.stderr()


@pytest.mark.serial  # measures rates
@pytest.mark.deadline(60)
def test_foreground_over_background_without_starving_it(tmp_path, origin, need_binary, streams):
    """Under --download-limit 8m, a foreground task gets most of the bandwidth and a
    background one beside it still moves (weights 16 and 1: 94 % and 6 %)."""
    origin.add_random("/bg.bin", 24 * MiB, tmp_path / "origin")
    origin.add_random("/fg.bin", 56 * MiB, tmp_path / "origin")
    d = start_daemon(tmp_path, "d1", download_limit="8m", **SOURCE)
    t0 = time.monotonic()
    bg = Stream(d, origin.url("/bg.bin"), "--priority", "background")
    fg = Stream(d, origin.url("/fg.bin"), "--priority", "foreground")
    streams += [bg, fg]
    sleep_until(t0 + RAMP + WINDOW + 0.2)
    b = bg.between(t0 + RAMP, t0 + RAMP + WINDOW)
    f = fg.between(t0 + RAMP, t0 + RAMP + WINDOW)
    total = (b + f) / WINDOW
    print(f"total {fmt(total)}: foreground {f / (b + f):.1%}, background {b / (b + f):.1%}")
    assert holds(total, 8 * MiB), f"total {fmt(total)}, want 8 MiB/s +-5%"
    assert SLOW_BUILD or f >= 0.85 * (b + f), f"foreground got {f / (b + f):.1%}"
    assert SLOW_BUILD or b >= 0.02 * (b + f), \
        f"background starved: {b / (b + f):.1%}"


@pytest.mark.serial  # measures rates
@pytest.mark.deadline(60)
def test_sighup_lowers_limit_mid_transfer_within_a_second(tmp_path, origin, need_binary,
                                                          streams):
    """The YAML config's download-limit goes from 16m to 4m and the daemon gets SIGHUP
    while a download runs: from one second later the download runs at 4 MiB/s (5 %)."""
    origin.add_random("/h.bin", 64 * MiB, tmp_path / "origin")
    conf = tmp_path / "daemon.yaml"
    conf.write_text("download-limit: 16m\n")
    d = start_daemon(tmp_path, "d1", config=conf, **SOURCE)
    t0 = time.monotonic()
    s = Stream(d, origin.url("/h.bin"))
    streams.append(s)
    sleep_until(t0 + 2.5)
    before = s.between(t0 + RAMP, t0 + 2.5) / (2.5 - RAMP)
    conf.write_text("download-limit: 4m\n")
    th = time.monotonic()
    os.kill(d.proc.popen.pid, signal.SIGHUP)
    sleep_until(th + 1.0 + WINDOW + 0.2)
    after = s.between(th + 1.0, th + 1.0 + WINDOW) / WINDOW
    print(f"before SIGHUP {fmt(before)}, from 1 s after it {fmt(after)}")
    # Before the reload only a sanity check (short, and a loaded machine may lag a little).
    assert (0 if SLOW_BUILD else 0.85) * 16 * MiB < before <= 1.05 * 16 * MiB, \
        f"before the reload: {fmt(before)}"
    assert holds(after, 4 * MiB), f"from 1 s after SIGHUP: {fmt(after)}, want 4 MiB/s +-5%"
    log = d.proc.log_bytes()
    assert b"download-limit 16777216 B/s -> 4194304 B/s" in log, "the change was not logged"
    assert d.metric("damselfly_bandwidth_limit_bytes", limit="download") == 4 * MiB


def test_bad_limits_are_refused_and_a_bad_reload_keeps_the_limits(tmp_path, origin,
                                                                   need_binary):
    """Limits are validated: get --limit below 64k, an unknown --priority, a daemon rate
    that is no size; a config broken before SIGHUP leaves the limits as they were."""
    origin.add_bytes("/x", b"x" * 1000)
    conf = tmp_path / "daemon.yaml"
    conf.write_text("download-limit: 2m\n")
    d = start_daemon(tmp_path, "d1", config=conf)
    for args, word in ((["--limit", "60k"], "--limit"), (["--priority", "urgent"], "--priority")):
        cp = run_get(d, origin.url("/x"), tmp_path / "out", *args, timeout=20)
        assert cp.returncode != 0 and word.encode() in cp.stderr, describe(cp)
    cp = subprocess.run([str(binary()), "daemon", "--download-limit", "fast"],
                        capture_output=True, timeout=scaled(10))
    assert cp.returncode == 2 and b"download-limit" in cp.stderr, cp.stderr
    cp = subprocess.run([str(binary()), "daemon", "--upload-limit", "1k"],
                        capture_output=True, timeout=scaled(10))
    assert cp.returncode != 0 and b"--upload-limit: a limit is at least 64k" in cp.stderr, \
        cp.stderr
    conf.write_text("download-limit: [\n")
    os.kill(d.proc.popen.pid, signal.SIGHUP)
    wait_until(lambda: b"SIGHUP: config not reloaded" in d.proc.log_bytes(), scaled(5),
               what="the reload's refusal in the log")
    assert d.metric("damselfly_bandwidth_limit_bytes", limit="download") == 2 * MiB
    conf.write_text("download-limit: 1k\n")  # parses, but below the floor
    os.kill(d.proc.popen.pid, signal.SIGHUP)
    wait_until(lambda: b"limits unchanged: --download-limit: a limit is at least 64k"
               in d.proc.log_bytes(), scaled(5), what="the too-low limit's refusal")
    assert d.metric("damselfly_bandwidth_limit_bytes", limit="download") == 2 * MiB
    cp = run_get(d, origin.url("/x"), tmp_path / "out2", timeout=20)
    assert cp.returncode == 0, describe(cp)


@pytest.mark.deadline(90)
def test_manager_limits_applied_and_upload_limit_announced(tmp_path, need_binary):
    """The upload limit is the capacity the daemon announces (the scheduler ranks parents by
    it); the manager's dynamic config sets limits through the same hook as SIGHUP, the lower
    of the manager's and the local one applying."""
    import manager_support as ms
    m = ms.start_manager(tmp_path, config_interval="1s")
    root = m.signin()
    s = start_scheduler(tmp_path, manager=m.grpc_addr)
    ms.wait_for(lambda: [x["state"] for x in m.ok("GET", "/api/v1/schedulers", token=root)]
                == ["active"], 10, "scheduler registered")
    d = start_daemon(tmp_path, "d1", scheduler=None, manager=m.grpc_addr, upload_limit="8m",
                     upload_capacity="100m")
    wait_hosts(s, 1)
    sid = m.ok("GET", "/api/v1/schedulers", token=root)[0]["id"]

    def capacity():
        live = m.ok("GET", f"/api/v1/schedulers/{sid}/live", token=root)
        return [h["upload_capacity"] for h in live["hosts"] if h["id"] == "d1"]

    ms.wait_for(lambda: capacity() == [8 * MiB], 10, "the scheduler to know 8 MiB/s")
    m.ok("PATCH", "/api/v1/clusters/1",
         {"config": {"download_rate_limit": 4 * MiB, "upload_rate_limit": 2 * MiB}}, root)
    ms.wait_for(lambda: d.metric("damselfly_bandwidth_limit_bytes", limit="download") == 4 * MiB,
                10, "the manager's download limit applied")
    assert d.metric("damselfly_bandwidth_limit_bytes", limit="upload") == 2 * MiB
    assert b"limits (manager): download-limit unlimited -> 4194304 B/s" in d.log_bytes()
    ms.wait_for(lambda: capacity() == [2 * MiB], 10, "the scheduler to know 2 MiB/s")
    # A manager limit above the local one leaves the local one in force.
    m.ok("PATCH", "/api/v1/clusters/1",
         {"config": {"download_rate_limit": 0, "upload_rate_limit": 64 * MiB}}, root)
    ms.wait_for(lambda: d.metric("damselfly_bandwidth_limit_bytes", limit="download") == 0,
                10, "the manager's download limit lifted")
    assert d.metric("damselfly_bandwidth_limit_bytes", limit="upload") == 8 * MiB


@pytest.mark.serial  # measures rates
@pytest.mark.deadline(60)
def test_proxy_rule_limit_and_priority(tmp_path, origin, need_binary):
    """A forward-proxy rule's `limit` and `priority` apply to the task it sends through P2P:
    12 MiB under `limit: 2m` takes 6 s (within 5 %), a rule without them leaves a task
    unlimited."""
    sha = origin.add_random("/slow/a.bin", 12 * MiB, tmp_path / "origin")
    origin.add_random("/fast/b.bin", 12 * MiB, tmp_path / "origin")
    conf = tmp_path / "daemon.yaml"
    conf.write_text("proxy-rules:\n"
                    "  - regex: '/slow/'\n    limit: 2m\n    priority: background\n"
                    "  - regex: '/fast/'\n    p2p: true\n")
    d = start_daemon(tmp_path, "d1", config=conf)
    env = dict(os.environ, http_proxy=f"http://127.0.0.1:{d.proxy_port}")
    times = {}
    for path in ("/slow/a.bin", "/fast/b.bin"):
        t = time.monotonic()
        cp = subprocess.run(["curl", "-sS", "--noproxy", "", "-o", tmp_path / "out",
                             origin.url(path)], env=env, capture_output=True,
                            timeout=scaled(30))
        times[path] = time.monotonic() - t
        assert cp.returncode == 0, cp.stderr
    rate = 12 * MiB / times["/slow/a.bin"]
    print(f"through the proxy: limited {fmt(rate)}, unlimited {times['/fast/b.bin']:.2f}s")
    assert holds(rate, 2 * MiB), f"the rule's task ran at {fmt(rate)}, want 2 MiB/s +-5%"
    assert SLOW_BUILD or times["/fast/b.bin"] < 2.0, times
    assert b"limit 2097152 B/s (0 = none), priority background" in d.log_bytes()
    cp = run_get(d, origin.url("/slow/a.bin"), tmp_path / "cached", timeout=20)
    assert cp.returncode == 0 and sha256_file(tmp_path / "cached") == sha
