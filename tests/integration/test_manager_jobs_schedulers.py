"""Jobs carried by the schedulers (issue 13 item 5) and the manager's TLS.

Real processes on 127.0.0.1: the manager hands each preheat/delete item to a scheduler of
the target's cluster (Scheduler.RunJobItem), which calls the target daemon. In a TLS cluster
(manager, scheduler, seed and daemon with certificates from scripts/make-certs.sh) a preheat
lands on the seed and the live view answers; RunJobItem is refused to a non-manager
certificate; a scheduler SIGKILLed mid-item is replaced by the cluster's other scheduler
and the seed, which dedups by task, fetches the file from the origin once; a manager killed
mid-job resumes it by asking the scheduler again, which attaches to the running item, so
no item runs twice."""

import grpc
import pytest

import harness
import manager_support as ms
from harness import (MiB, describe, make_certs, proto_modules, run_get, scaled, sha256_file,
                     start_daemon, start_scheduler, tls_channel, tls_flags, wait_hosts)
from test_manager_jobs import wait_job

ROLES = {"mgr": "manager", "sched": "scheduler", "seed": "seed", "d1": "peer",
         "rogue": "peer"}


def _wait_active(m, token, path, n):
    ms.wait_for(lambda: [x["state"] for x in m.ok("GET", path, token=token)] == ["active"] * n,
                20, f"{n} active in {path}")


def _item_id(job, index=0):
    """The ID the manager gives a job's item at the schedulers."""
    return f"{job['id']}.{job['created_at']}/{index}"


def _item_log_count(s, text):
    return s.proc.log_bytes().decode("utf-8", "replace").count(text)


@pytest.mark.deadline(240)
def test_tls_cluster_preheat_live_view_and_refusals(tmp_path, origin, need_binary):
    certs = make_certs(tmp_path / "certs", ROLES)
    m = ms.start_manager(tmp_path, **tls_flags(certs, "mgr"))
    root = m.signin()
    s = start_scheduler(tmp_path, manager=m.grpc_addr, **tls_flags(certs, "sched"))
    _wait_active(m, root, "/api/v1/schedulers", 1)
    seed = start_daemon(tmp_path, "seed", seed=True, manager=m.grpc_addr,
                        **tls_flags(certs, "seed"))
    d1 = start_daemon(tmp_path, "d1", manager=m.grpc_addr, **tls_flags(certs, "d1"))
    wait_hosts(s, 2)
    _wait_active(m, root, "/api/v1/seed-peers", 1)
    assert b"mutual TLS on: this manager is mgr" in m.proc.log_bytes()

    size = 5 * MiB + 77
    sha = origin.add_random("/tls-pre.bin", size, tmp_path / "origin")
    url = origin.url("/tls-pre.bin")
    job = m.ok("POST", "/api/v1/jobs", {"type": "preheat", "args": {
        "type": "file", "urls": [url], "headers": {"Authorization": "Bearer tls-secret"}}}, root)
    j = wait_job(m, root, job["id"], timeout=90)
    assert j["state"] == "succeeded", j
    (item,) = j["result"]["items"]
    assert item["completed_length"] == size and item["scheduler"] == s.addr, item
    # The scheduler carried it to the seed over TLS; the seed holds the file.
    assert _item_log_count(s, f"job item {_item_id(job)} (preheat on host seed") >= 1
    assert seed.download_bytes("origin") == size
    assert size <= origin.sent("/tls-pre.bin") <= size + 1
    for log in (m.proc.log_bytes(), s.proc.log_bytes(), seed.log_bytes()):
        assert b"tls-secret" not in log
    n = origin.request_count("/tls-pre.bin")
    cp = run_get(d1, url, tmp_path / "out-d1", timeout=60)
    assert cp.returncode == 0, describe(cp)
    assert sha256_file(tmp_path / "out-d1") == sha
    assert origin.request_count("/tls-pre.bin") == n, "the get after the preheat hit the origin"

    # The live view over TLS: the manager asks the scheduler with its manager certificate.
    (sched_row,) = m.ok("GET", "/api/v1/schedulers", token=root)
    live = m.ok("GET", f"/api/v1/schedulers/{sched_row['id']}/live", token=root)
    text = str(live)
    assert "'seed'" in text and "'d1'" in text, live

    # RunJobItem: a peer's certificate is refused, a client without one never gets in.
    pb = proto_modules()
    req = pb.scheduler_pb2.RunJobItemRequest(item_id="rogue/0", ip="127.0.0.1",
                                             rpc_port=seed.rpc_port, url=url)
    with tls_channel(certs, s.addr, "rogue", "sched") as ch:
        with pytest.raises(grpc.RpcError) as e:
            list(pb.scheduler_pb2_grpc.SchedulerStub(ch).RunJobItem(req, timeout=scaled(5)))
        assert e.value.code() == grpc.StatusCode.PERMISSION_DENIED, e.value
        assert "manager certificate" in e.value.details()
    with tls_channel(certs, s.addr, None, "sched") as ch:
        with pytest.raises(grpc.RpcError) as e:
            list(pb.scheduler_pb2_grpc.SchedulerStub(ch).RunJobItem(req, timeout=scaled(5)))
        assert e.value.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.UNAUTHENTICATED)
    assert _item_log_count(s, "job item rogue/0") == 0
    # With the manager's certificate: an unknown host is refused; the finished item asked
    # again is answered from its result, attached, without a second run.
    with tls_channel(certs, s.addr, "mgr", "sched") as ch:
        stub = pb.scheduler_pb2_grpc.SchedulerStub(ch)
        unknown = pb.scheduler_pb2.RunJobItemRequest(item_id="x/0", ip="127.0.0.1", rpc_port=1,
                                                     url=url)
        with pytest.raises(grpc.RpcError) as e:
            list(stub.RunJobItem(unknown, timeout=scaled(5)))
        assert e.value.code() == grpc.StatusCode.NOT_FOUND, e.value
        again = pb.scheduler_pb2.RunJobItemRequest(item_id=_item_id(job), ip="127.0.0.1",
                                                   rpc_port=seed.rpc_port, url=url)
        answers = list(stub.RunJobItem(again, timeout=scaled(10)))
        assert len(answers) == 1 and answers[0].attached and answers[0].done, answers
        assert answers[0].succeeded and answers[0].host_id == "seed"
        assert answers[0].completed_length == size
    met = s.metrics()
    assert met.value("damselfly_scheduler_job_items_refused_total") == 2  # rogue, unknown
    assert met.value("damselfly_scheduler_job_items_total", event="attached") == 1
    assert met.value("damselfly_scheduler_job_items_total", event="started") == 1
    assert met.value("damselfly_scheduler_job_items_total", event="succeeded") == 1
    # The manager's gRPC service: a peer certificate cannot register a scheduler.
    mpb, mgrpc = ms.manager_pb()
    comp = mpb.Component(type=mpb.COMPONENT_TYPE_SCHEDULER, hostname="evil", ip="127.0.0.1",
                         port=1)
    with tls_channel(certs, m.grpc_addr, "rogue", "mgr") as ch:
        with pytest.raises(grpc.RpcError) as e:
            list(mgrpc.ManagerStub(ch).KeepAlive(
                iter([mpb.KeepAliveRequest(register=comp)]), timeout=scaled(5)))
        assert e.value.code() == grpc.StatusCode.PERMISSION_DENIED, e.value
    assert len(m.ok("GET", "/api/v1/schedulers", token=root)) == 1

    # A delete job also goes through the scheduler.
    dj = m.ok("POST", "/api/v1/jobs", {"type": "delete_task",
                                       "args": {"task_id": harness.task_id(url)}}, root)
    d = wait_job(m, root, dj["id"], timeout=60)
    assert d["state"] == "succeeded", d
    # Each item names the host ID the scheduler found for the target.
    removed = {i["host_id"] for i in d["result"]["items"] if i.get("removed")}
    assert removed == {"seed", "d1"}, d["result"]


@pytest.mark.deadline(300)
def test_scheduler_killed_mid_item_second_scheduler_finishes(tmp_path, origin, need_binary):
    # Short keepalive and config intervals: the dead scheduler turns inactive, and the seed
    # moves to the other one, within seconds.
    m = ms.start_manager(tmp_path, keepalive_timeout="3s", config_interval="2s")
    root = m.signin()
    s1 = start_scheduler(tmp_path, name="s1", manager=m.grpc_addr)
    _wait_active(m, root, "/api/v1/schedulers", 1)
    s2 = start_scheduler(tmp_path, name="s2", manager=m.grpc_addr)
    _wait_active(m, root, "/api/v1/schedulers", 2)
    seed = start_daemon(tmp_path, "seed", seed=True, manager=m.grpc_addr)
    _wait_active(m, root, "/api/v1/seed-peers", 1)
    ms.wait_for(lambda: any(s.metrics().value("damselfly_scheduler_hosts") >= 1
                            for s in (s1, s2)), 20, "the seed announced")
    size = 12 * MiB
    origin.add_random("/k.bin", size, tmp_path / "origin")
    origin.throttle = 2 * MiB
    job = m.ok("POST", "/api/v1/jobs", {"type": "preheat", "args": {
        "type": "file", "url": origin.url("/k.bin")}}, root)
    item_id = _item_id(job)
    started = f"job item {item_id} (preheat on host seed at"
    ms.wait_for(lambda: origin.sent("/k.bin") > MiB, 30, "the seed fetching")
    carrier = ms.wait_for(lambda: next((s for s in (s1, s2)
                                        if _item_log_count(s, started) >= 1), None),
                          10, "a scheduler carrying the item")
    other = s2 if carrier is s1 else s1
    carrier.kill9()  # mid-item
    origin.throttle = 0
    j = wait_job(m, root, job["id"], timeout=120)
    assert j["state"] == "succeeded", j
    (item,) = j["result"]["items"]
    assert item["scheduler"] == other.addr and item["completed_length"] == size, item
    assert _item_log_count(other, started) == 1
    sent = origin.sent("/k.bin")
    print(f"origin sent {sent} bytes for a {size}-byte file; the item took "
          f"{item.get('attempts', 0)} retries")
    # The seed lived: its download of the task went on (the second DownloadTask joined it),
    # so the origin served the file once.
    assert size <= sent <= size + 1, sent
    assert m.log_text().count(f"job {job['id']}: running -> succeeded") == 1


@pytest.mark.deadline(300)
def test_manager_restart_mid_item_attaches_no_second_run(tmp_path, origin, need_binary):
    m = ms.start_manager(tmp_path)
    root = m.signin()
    s = start_scheduler(tmp_path, manager=m.grpc_addr)
    _wait_active(m, root, "/api/v1/schedulers", 1)
    seed = start_daemon(tmp_path, "seed", seed=True, manager=m.grpc_addr)
    _wait_active(m, root, "/api/v1/seed-peers", 1)
    wait_hosts(s, 1)
    size = 10 * MiB
    origin.add_random("/r.bin", size, tmp_path / "origin")
    origin.throttle = 2 * MiB
    job = m.ok("POST", "/api/v1/jobs", {"type": "preheat", "args": {
        "type": "file", "url": origin.url("/r.bin")}}, root)
    ms.wait_for(lambda: origin.sent("/r.bin") > MiB, 30, "the seed fetching")
    m.kill9()
    m2 = ms.start_manager(tmp_path, name="manager2")
    tok = m2.signin()
    j = wait_job(m2, tok, job["id"], timeout=90)
    origin.throttle = 0
    assert j["state"] == "succeeded", j
    item_id = _item_id(job)
    # The scheduler started the item once; the resumed manager's call attached to it.
    assert _item_log_count(s, f"job item {item_id} (preheat on host seed at") == 1
    assert _item_log_count(s, f"job item {item_id} (preheat on host seed): attached") >= 1
    met = s.metrics()
    assert met.value("damselfly_scheduler_job_items_total", event="started") == 1
    assert met.value("damselfly_scheduler_job_items_total", event="attached") >= 1
    assert f"job {job['id']}: running -> running (preheat, resumed)" in m2.log_text()
    # Nothing ran twice: the origin was asked for every byte range of the file once.
    ranges = [r.headers.get("range") for r in origin.requests_for("/r.bin")]
    print(f"origin: {len(ranges)} requests for /r.bin, {len(set(ranges))} distinct ranges")
    assert len(ranges) == len(set(ranges)), ranges
    assert size <= origin.sent("/r.bin") <= size + 1
    assert seed.download_bytes("origin") == size
    assert (m.log_text() + m2.log_text()).count(f"job {job['id']}: running -> succeeded") == 1
