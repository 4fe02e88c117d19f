"""The manager and its components: schedulers and seeds register and hold a KeepAlive
stream (inactive at once when it ends, or when it goes quiet past --keepalive-timeout),
daemons find their cluster's schedulers by scopes, a cluster of daemons started with
--manager only downloads P2P, and a scheduler that dies is left out and replaced."""

import http.client
import queue
import threading
import time

import grpc
import pytest

import harness
import manager_support as ms
from harness import MiB, describe, run_get, sha256_file, start_daemon, start_scheduler


class Component:
    """A fake scheduler or seed holding a KeepAlive stream from Python."""

    def __init__(self, mgr, ip="127.0.0.9", port=7000, seed=False, cluster_id=0, ping=True):
        self.pb, self.pbg = ms.manager_pb()
        self.q = queue.Queue()
        self.answers = queue.Queue()
        self.channel = grpc.insecure_channel(mgr.grpc_addr)
        stub = self.pbg.ManagerStub(self.channel)
        t = self.pb.COMPONENT_TYPE_SEED_PEER if seed else self.pb.COMPONENT_TYPE_SCHEDULER
        self.q.put(self.pb.KeepAliveRequest(register=self.pb.Component(
            type=t, hostname=f"fake-{port}", ip=ip, port=port, piece_port=port + 1,
            cluster_id=cluster_id)))
        self.ping = ping
        self.stream = stub.KeepAlive(self._requests())
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _requests(self):
        while True:
            m = self.q.get()
            if m is None:
                return
            yield m

    def _read(self):
        try:
            for r in self.stream:
                self.answers.put(r)
                if self.ping:
                    self.q.put(self.pb.KeepAliveRequest(ping=self.pb.Ping()))
                    time.sleep(0.2)
        except grpc.RpcError as e:
            self.answers.put(e)

    def first_answer(self, timeout=10):
        return self.answers.get(timeout=harness.scaled(timeout))

    def close(self):
        self.q.put(None)
        self.stream.cancel()
        self.channel.close()


def list_schedulers(mgr, **req):
    pb, pbg = ms.manager_pb()
    with grpc.insecure_channel(mgr.grpc_addr) as ch:
        return pbg.ManagerStub(ch).ListSchedulers(pb.ListSchedulersRequest(**req),
                                                  timeout=harness.scaled(10))


def states(mgr, token, what="schedulers"):
    return {(x["ip"], x["port"]): x["state"] for x in mgr.ok("GET", f"/api/v1/{what}", token=token)}


def test_keepalive_active_then_inactive_at_once(tmp_path, need_binary):
    m = ms.start_manager(tmp_path, keepalive_timeout="2s")
    root = m.signin()
    a = Component(m, port=7001)
    b = Component(m, port=7002, ping=False)  # registers, then never pings
    s = Component(m, port=7003, seed=True)
    ans = a.first_answer()
    assert ans.cluster_id == 1 and ans.keepalive_timeout_ms == 2000
    b.first_answer(), s.first_answer()
    assert states(m, root) == {("127.0.0.9", 7001): "active", ("127.0.0.9", 7002): "active"}
    assert states(m, root, "seed-peers") == {("127.0.0.9", 7003): "active"}
    got = {(x.ip, x.port) for x in list_schedulers(m, ip="127.0.0.5").schedulers}
    assert got == {("127.0.0.9", 7001), ("127.0.0.9", 7002)}
    # The stream ends: inactive at once (well inside the keepalive timeout).
    t0 = time.monotonic()
    a.close()
    ms.wait_for(lambda: states(m, root)[("127.0.0.9", 7001)] == "inactive", 1.5,
                "scheduler 7001 inactive")
    closed_after = time.monotonic() - t0
    # Silence: inactive within the keepalive timeout.
    ms.wait_for(lambda: states(m, root)[("127.0.0.9", 7002)] == "inactive", 3.5,
                "silent scheduler 7002 inactive")
    silent_after = time.monotonic() - t0
    print(f"closed stream -> inactive in {closed_after:.2f}s; silent -> {silent_after:.2f}s")
    assert list(list_schedulers(m, ip="127.0.0.5").schedulers) == []
    assert states(m, root, "seed-peers") == {("127.0.0.9", 7003): "active"}
    assert "keepalive stream ended" in m.log_text()
    s.close()
    b.close()


def test_register_needs_a_known_cluster_and_an_address(tmp_path, need_binary):
    m = ms.start_manager(tmp_path)
    bad = Component(m, port=7010, cluster_id=42)
    e = bad.first_answer()
    assert isinstance(e, grpc.RpcError) and e.code() == grpc.StatusCode.NOT_FOUND
    bad.close()
    noip = Component(m, ip="", port=7011)
    e = noip.first_answer()
    assert isinstance(e, grpc.RpcError) and e.code() == grpc.StatusCode.INVALID_ARGUMENT
    noip.close()


def test_daemons_are_matched_to_clusters_by_scopes(tmp_path, need_binary):
    m = ms.start_manager(tmp_path)
    root = m.signin()
    east = m.ok("POST", "/api/v1/clusters", {"name": "east", "scopes": {"cidrs": ["10.1.0.0/16"]},
                                             "config": {"candidate_limit": 3}}, root)
    west = m.ok("POST", "/api/v1/clusters", {"name": "west", "scopes": {
        "hostnames": ["^west-[0-9]+$"], "idc": "w1|w2", "location": "eu|west"}}, root)
    comps = [Component(m, port=7100), Component(m, port=7101, cluster_id=east["id"]),
             Component(m, port=7102, cluster_id=west["id"])]
    for c in comps:
        assert not isinstance(c.first_answer(), Exception)

    def which(**req):
        r = list_schedulers(m, **req)
        return r.cluster_id, sorted(s.port for s in r.schedulers), r.config.candidate_limit

    assert which(ip="10.1.2.3") == (east["id"], [7101], 3)
    assert which(ip="10.2.0.1") == (1, [7100], 0)
    assert which(hostname="west-12") == (west["id"], [7102], 0)
    assert which(hostname="west-x", idc="w2") == (west["id"], [7102], 0)
    assert which(hostname="north", location="eu|west|rack1") == (west["id"], [7102], 0)
    # The CIDR weighs more than an IDC.
    assert which(ip="10.1.0.9", idc="w1")[0] == east["id"]
    # A daemon that names itself is listed under /hosts.
    list_schedulers(m, host_id="h-1", hostname="west-1", ip="192.0.2.1")
    hosts = m.ok("GET", "/api/v1/hosts", token=root)
    assert [(h["host_id"], h["cluster_id"]) for h in hosts] == [("h-1", west["id"])]
    for c in comps:
        c.close()


def start_managed_daemon(tmp_path, name, mgr, seed=False, **flags):
    return start_daemon(tmp_path, name, scheduler=None, seed=seed, manager=mgr.grpc_addr,
                        **flags)


@pytest.mark.deadline(240)
def test_cluster_with_manager_only(tmp_path, origin, need_binary):
    """Manager + scheduler + seed + 3 daemons started with --manager only: a get goes P2P;
    the cluster's candidate limit reaches the scheduler; SIGKILL the scheduler and the API
    shows it inactive within the keepalive timeout, daemons are not given it any more and
    move to the second scheduler of the cluster."""
    m = ms.start_manager(tmp_path, keepalive_timeout="3s", config_interval="1s")
    root = m.signin()
    s1 = start_scheduler(tmp_path, name="sched1", manager=m.grpc_addr)
    ms.wait_for(lambda: list(states(m, root).values()) == ["active"], 10, "scheduler registered")
    seed = start_managed_daemon(tmp_path, "seed", m, seed=True)
    ds = [start_managed_daemon(tmp_path, f"d{i}", m) for i in (1, 2, 3)]
    harness.wait_hosts(s1, 4)
    ms.wait_for(lambda: list(states(m, root, "seed-peers").values()) == ["active"], 10,
                "seed registered")
    for d in [seed] + ds:
        assert "--scheduler" not in d.proc.args
        assert f"127.0.0.1:{s1.port}" in d.log_bytes().decode()

    size = 8 * MiB
    sha = origin.add_random("/m.bin", size, tmp_path / "origin")
    url = origin.url("/m.bin")
    for d in ds:
        cp = run_get(d, url, tmp_path / f"out-{d.name}", timeout=90)
        assert cp.returncode == 0, describe(cp)
        assert sha256_file(tmp_path / f"out-{d.name}") == sha
    assert origin.sent("/m.bin") <= 1.05 * size
    p2p = sum(d.download_bytes("peer") + d.download_bytes("seed") for d in ds)
    assert p2p >= 2 * size, f"only {p2p} bytes came from peers and the seed"
    assert sum(d.download_bytes("origin") for d in ds) == 0

    # The live view comes from the scheduler now: every host, its peers and their progress.
    sid = m.ok("GET", "/api/v1/schedulers", token=root)[0]["id"]
    live = m.ok("GET", f"/api/v1/schedulers/{sid}/live", token=root)
    assert live["total_hosts"] == 4 and live["total_tasks"] == 1
    assert {h["id"] for h in live["hosts"]} == {"seed", "d1", "d2", "d3"}
    assert [h["seed"] for h in live["hosts"] if h["id"] == "seed"] == [True]
    (task,) = live["tasks"]
    assert task["url"] == url and task["content_length"] == size
    peer_states = {p["host_id"]: p["state"] for p in task["peers"]}
    assert {peer_states[d.name] for d in ds} == {"SUCCEEDED"}, peer_states
    assert all(p["held_pieces"] == task["total_pieces"] for p in task["peers"]
               if p["state"] == "SUCCEEDED")
    # Bytes by source per host, as the daemons reported them: the seed's from the origin,
    # the daemons' from peers and the seed (their last progress may precede a final piece).
    by_host = {h["id"]: h["bytes"] for h in live["hosts"]}
    assert by_host["seed"]["origin"] >= size // 2, by_host
    assert sum(by_host[d.name]["parents"] for d in ds) >= 2 * size, by_host
    assert sum(by_host[d.name]["origin"] for d in ds) == 0, by_host

    # Dynamic config: the cluster's candidate limit reaches the scheduler, no restart.
    m.ok("PATCH", "/api/v1/clusters/1", {"config": {"candidate_limit": 2}}, root)
    ms.wait_for(lambda: b"candidate limit 16 -> 2" in s1.proc.log_bytes(), 5,
                "the scheduler to apply candidate limit 2")
    ms.wait_for(lambda: all(b"candidate limit 2" in d.log_bytes() for d in ds), 5,
                "daemons to get the new config")

    # A second scheduler joins; the first dies.
    s2 = start_scheduler(tmp_path, name="sched2", manager=m.grpc_addr)
    ms.wait_for(lambda: sorted(states(m, root).values()) == ["active", "active"], 10,
                "two active schedulers")
    t0 = time.monotonic()
    s1.kill9()
    ms.wait_for(lambda: states(m, root)[("127.0.0.1", s1.port)] == "inactive", 3.0,
                "the killed scheduler inactive")
    inactive_after = time.monotonic() - t0
    assert [s.port for s in list_schedulers(m, ip="127.0.0.1").schedulers] == [s2.port]
    assert m.call("GET", f"/api/v1/schedulers/{sid}/live", token=root)[0] == 409
    # Every daemon moves to the second scheduler at its next poll.
    ms.wait_for(lambda: all(f"scheduler 127.0.0.1:{s2.port}".encode() in d.log_bytes()
                            for d in [seed] + ds), 10, "daemons on the second scheduler")
    harness.wait_hosts(s2, 4)
    moved_after = time.monotonic() - t0
    print(f"SIGKILLed scheduler inactive in the API after {inactive_after:.2f}s; "
          f"all daemons on the second one after {moved_after:.2f}s")
    sha2 = origin.add_random("/m2.bin", 4 * MiB, tmp_path / "origin")
    for d in ds:
        cp = run_get(d, origin.url("/m2.bin"), tmp_path / f"out2-{d.name}", timeout=90)
        assert cp.returncode == 0, describe(cp)
        assert sha256_file(tmp_path / f"out2-{d.name}") == sha2
    assert origin.sent("/m2.bin") <= 1.05 * 4 * MiB


def test_daemon_skips_a_dead_manager(tmp_path, origin, need_binary):
    m = ms.start_manager(tmp_path)
    s = start_scheduler(tmp_path, manager=m.grpc_addr)
    root = m.signin()
    ms.wait_for(lambda: list(states(m, root).values()) == ["active"], 10, "scheduler registered")
    dead = f"127.0.0.1:{harness.free_port()}"
    d = start_daemon(tmp_path, "d1", manager=[dead, m.grpc_addr])
    harness.wait_hosts(s, 1)
    assert f"manager: scheduler 127.0.0.1:{s.port}" in d.log_bytes().decode()


def test_scheduler_flag_still_works_without_manager(tmp_path, origin, need_binary):
    c = harness.start_cluster(tmp_path, daemons=1)
    sha = origin.add_random("/plain.bin", MiB, tmp_path / "origin")
    cp = run_get(c.daemons[0], origin.url("/plain.bin"), tmp_path / "out", timeout=60)
    assert cp.returncode == 0 and sha256_file(tmp_path / "out") == sha


def test_cluster_cache_limit_and_block_list_are_applied(tmp_path, origin, need_binary):
    """The cluster's dynamic config reaches a daemon started with --manager and is applied
    without a restart: a cache limit lower than the daemon's own evicts down to it, and a
    URL on the block list is refused by `get` and by the proxy (403) without one request to
    the origin; an emptied list lets it through again."""
    m = ms.start_manager(tmp_path, config_interval="1s")
    root = m.signin()
    s1 = start_scheduler(tmp_path, name="sched1", manager=m.grpc_addr)
    ms.wait_for(lambda: list(states(m, root).values()) == ["active"], 10, "scheduler registered")
    d = start_managed_daemon(tmp_path, "d1", m, cache_limit="1g", gc_interval="1h")
    harness.wait_hosts(s1, 1)

    m.ok("PATCH", "/api/v1/clusters/1",
         {"config": {"cache_limit": 10 * MiB, "block_urls": ["/private/", r"\.iso$"]}}, root)
    ms.wait_for(lambda: b"cluster block list: 2 URL pattern(s)" in d.log_bytes() and
                b"cluster cache limit 0 -> 10485760" in d.log_bytes(), 10,
                "the daemon to apply the cluster's config")

    shas = [origin.add_random(f"/pub/{i}.bin", 4 * MiB, tmp_path / "origin") for i in range(4)]
    for i, sha in enumerate(shas):
        out = tmp_path / f"pub-{i}"
        cp = run_get(d, origin.url(f"/pub/{i}.bin"), out)
        assert cp.returncode == 0, describe(cp)
        assert sha256_file(out) == sha
    # 16 MiB of tasks under a 10 MiB limit (the daemon's own is 1 GiB): two go.
    ms.wait_for(lambda: d.metric("damselfly_cache_evictions_total", reason="space") >= 2, 10,
                "evictions down to the cluster's 10 MiB limit")
    assert d.metric("damselfly_cache_bytes") <= 10 * MiB

    origin.add_random("/private/key.bin", MiB, tmp_path / "origin")
    origin.add_random("/pub/disk.iso", MiB, tmp_path / "origin")
    # The token is no hex string: task IDs in the log are, and once in a while held "abc".
    for path in ("/private/key.bin?token=sq-tok-rz", "/pub/disk.iso"):
        cp = run_get(d, origin.url(path), tmp_path / "blocked")
        assert cp.returncode != 0, describe(cp)
        assert b"block list" in cp.stderr, cp.stderr
    status, _, _ = proxy_get(d, origin.url("/private/key.bin"))
    assert status == 403
    assert origin.sent("/private/key.bin") == 0 and origin.sent("/pub/disk.iso") == 0
    assert d.metric("damselfly_blocked_downloads_total") == 2
    assert b"sq-tok-rz" not in d.log_bytes()

    m.ok("PATCH", "/api/v1/clusters/1", {"config": {"block_urls": []}}, root)
    ms.wait_for(lambda: b"cluster block list: 0 URL pattern(s)" in d.log_bytes(), 10,
                "the daemon to drop the block list")
    cp = run_get(d, origin.url("/pub/disk.iso"), tmp_path / "iso")
    assert cp.returncode == 0, describe(cp)


def test_cluster_block_applications_refuse_named_downloads(tmp_path, origin, need_binary):
    """block_applications in the cluster's config refuses the downloads of a named
    application, applied without a restart: `get --application bad` is refused with a
    clear message and exit code 11 (nothing fetched from the origin), `--application good`
    works and the live view shows its application; through the proxy the client's
    X-Dragonfly-Application header names it (403 when blocked; never sent to the origin)
    unless a rule's `application` does; an emptied list lets `bad` through."""
    m = ms.start_manager(tmp_path, config_interval="1s")
    root = m.signin()
    s1 = start_scheduler(tmp_path, name="sched1", manager=m.grpc_addr)
    ms.wait_for(lambda: list(states(m, root).values()) == ["active"], 10, "scheduler registered")
    conf = tmp_path / "daemon.yaml"
    conf.write_text("proxy-rules:\n"
                    "  - regex: '/ruled/'\n    application: bad\n"
                    "  - regex: '.*'\n    p2p: true\n")
    d = start_managed_daemon(tmp_path, "d1", m, config=conf)
    harness.wait_hosts(s1, 1)
    # A name the manager cannot accept is refused by the API itself.
    st, _ = m.call("PATCH", "/api/v1/clusters/1",
                   {"config": {"block_applications": ["no spaces"]}}, root)
    assert st == 400
    m.ok("PATCH", "/api/v1/clusters/1", {"config": {"block_applications": ["bad"]}}, root)
    ms.wait_for(lambda: b"cluster block list: 1 application(s)" in d.log_bytes(), 10,
                "the daemon to apply the blocked applications")

    sha = origin.add_random("/app.bin", 2 * MiB, tmp_path / "origin")
    cp = run_get(d, origin.url("/app.bin"), tmp_path / "bad", "--application", "bad")
    assert cp.returncode == 11, describe(cp)
    assert b"application 'bad' is on the cluster's block list" in cp.stderr, cp.stderr
    assert not (tmp_path / "bad").exists()
    assert origin.request_count("/app.bin") == 0
    assert d.metric("damselfly_blocked_application_downloads_total") == 1
    # An invalid name never reaches the daemon.
    cp = run_get(d, origin.url("/app.bin"), tmp_path / "x", "--application", "a/b")
    assert cp.returncode == 2 and b"--application" in cp.stderr, describe(cp)

    cp = run_get(d, origin.url("/app.bin"), tmp_path / "good", "--application", "good")
    assert cp.returncode == 0, describe(cp)
    assert sha256_file(tmp_path / "good") == sha
    sid = m.ok("GET", "/api/v1/schedulers", token=root)[0]["id"]
    live = m.ok("GET", f"/api/v1/schedulers/{sid}/live", token=root)
    (task,) = live["tasks"]
    assert [p["application"] for p in task["peers"]] == ["good"], task

    # The proxy: the client's header, checked, and stripped before the origin.
    origin.add_random("/p.bin", MiB, tmp_path / "origin")
    origin.add_random("/ruled/r.bin", MiB, tmp_path / "origin")
    status, _, _ = proxy_get(d, origin.url("/p.bin"), {"X-Dragonfly-Application": "bad"})
    assert status == 403
    status, _, _ = proxy_get(d, origin.url("/p.bin"), {"X-Dragonfly-Application": "bad app"})
    assert status == 400
    assert origin.request_count("/p.bin") == 0
    status, _, body = proxy_get(d, origin.url("/p.bin"), {"X-Dragonfly-Application": "good"})
    assert status == 200 and len(body) == MiB
    reqs = origin.requests_for("/p.bin")
    assert reqs and all("x-dragonfly-application" not in r.headers for r in reqs), reqs
    # A rule's application wins over the client's header.
    status, _, _ = proxy_get(d, origin.url("/ruled/r.bin"), {"X-Dragonfly-Application": "good"})
    assert status == 403
    assert origin.request_count("/ruled/r.bin") == 0

    m.ok("PATCH", "/api/v1/clusters/1", {"config": {"block_applications": []}}, root)
    ms.wait_for(lambda: b"cluster block list: 0 application(s)" in d.log_bytes(), 10,
                "the daemon to drop the blocked applications")
    cp = run_get(d, origin.url("/app.bin"), tmp_path / "bad2", "--application", "bad")
    assert cp.returncode == 0, describe(cp)
    assert sha256_file(tmp_path / "bad2") == sha


def proxy_get(d, url, headers=None):
    conn = http.client.HTTPConnection("127.0.0.1", d.proxy_port, timeout=harness.scaled(20))
    try:
        conn.request("GET", url, headers=headers or {})
        r = conn.getresponse()
        return r.status, dict(r.getheaders()), r.read()
    finally:
        conn.close()
