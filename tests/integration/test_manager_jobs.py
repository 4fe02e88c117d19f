"""Preheat jobs: a file preheated through the manager lands on the seed with one origin
transfer and later gets make no origin request; a multi-arch image is preheated for one
platform only; Dragonfly's open-API request is accepted with a personal access token;
jobs fail with reasons, can be cancelled, and resume after a manager restart without
running twice — on SQLite and on PostgreSQL."""

import hashlib
import json
import signal
import sqlite3
import time
import urllib.request

import pytest

import harness
import manager_support as ms
from manager_support import database, postgres  # noqa: F401 (fixtures)
import proxy_support as ps
from harness import MiB, describe, run_get, sha256_file, start_daemon, start_scheduler



def managed_cluster(tmp_path, m, daemons=3):
    root = m.signin()
    s = start_scheduler(tmp_path, manager=m.grpc_addr)
    ms.wait_for(lambda: [x["state"] for x in m.ok("GET", "/api/v1/schedulers", token=root)]
                == ["active"], 10, "scheduler registered")
    seed = start_daemon(tmp_path, "seed", seed=True, manager=m.grpc_addr)
    ds = [start_daemon(tmp_path, f"d{i}", manager=m.grpc_addr) for i in range(1, daemons + 1)]
    harness.wait_hosts(s, daemons + 1)
    ms.wait_for(lambda: [x["state"] for x in m.ok("GET", "/api/v1/seed-peers", token=root)]
                == ["active"], 10, "seed registered")
    return root, s, seed, ds


def wait_job(m, token, job_id, states=("succeeded", "failed"), timeout=60, path="/api/v1/jobs"):
    def done():
        j = m.ok("GET", f"{path}/{job_id}", token=token)
        return j if j["state"] in states else None
    return ms.wait_for(done, timeout, f"job {job_id} in {states}")


@pytest.mark.deadline(240)
def test_preheat_file_then_gets_skip_the_origin(tmp_path, origin, need_binary, database):
    m = ms.start_manager(tmp_path, database)
    root, s, seed, ds = managed_cluster(tmp_path, m)
    size = 6 * MiB + 123
    sha = origin.add_random("/pre.bin", size, tmp_path / "origin")
    url = origin.url("/pre.bin")
    job = m.ok("POST", "/api/v1/jobs", {"type": "preheat", "args": {
        "type": "file", "urls": [url], "headers": {"X-Trace": "t1", "Authorization": "Bearer s3"}}},
        root)
    assert job["state"] == "pending" and job["args"]["scope"] == "single_seed_peer"
    assert job["args"]["headers"]["Authorization"] == "<redacted>"
    t0 = time.monotonic()
    j = wait_job(m, root, job["id"])
    took = time.monotonic() - t0
    assert j["state"] == "succeeded", j
    assert j["result"]["total"] == 1 and j["result"]["succeeded"] == 1
    item = j["result"]["items"][0]
    assert item["host"] and item["state"] == "succeeded" and item["completed_length"] == size
    print(f"preheat of {size} bytes on the seed: {took:.2f}s from POST to succeeded")
    # The seed holds it; the origin saw one transfer.
    assert seed.download_bytes("origin") == size
    assert size <= origin.sent("/pre.bin") <= size + 1  # + the 1-byte range probe
    assert all(r.headers.get("x-trace") == "t1" for r in origin.requests_for("/pre.bin"))
    n_before = origin.request_count("/pre.bin")
    for d in ds:
        cp = run_get(d, url, tmp_path / f"out-{d.name}", timeout=60)
        assert cp.returncode == 0, describe(cp)
        assert sha256_file(tmp_path / f"out-{d.name}") == sha
    assert origin.request_count("/pre.bin") == n_before, "a get after the preheat hit the origin"
    assert sum(d.download_bytes("origin") for d in ds) == 0
    # Where is this task: every host that holds it, from the scheduler.
    tid = harness.task_id(url)
    wj = m.ok("POST", "/api/v1/jobs", {"type": "get_task", "args": {"task_id": tid}}, root)
    w = wait_job(m, root, wj["id"])
    assert w["state"] == "succeeded", w
    (where,) = w["result"]["items"]
    held = {p["host_id"] for p in where["peers"] if p["state"] == "SUCCEEDED"}
    assert held == {"seed", "d1", "d2", "d3"}, where
    # One log line per state transition; the header's secret is not in the log.
    log = m.log_text()
    assert f"job {job['id']}: created (preheat)" in log
    assert f"job {job['id']}: pending -> running" in log
    assert log.count(f"job {job['id']}: running -> succeeded") == 1
    assert "Bearer s3" not in log
    met = harness.fetch_metrics(m.metrics_port)
    assert met.value("damselfly_manager_jobs_total", result="succeeded") == 2  # preheat, get_task


@pytest.mark.deadline(180)
def test_delete_task_drops_it_from_every_host(tmp_path, origin, need_binary):
    """A preheat with scope all_peers reaches every host (the manager records their rpc
    ports); delete_task then drops the task from every seed and host that holds it, also
    while children were fetching from them moments before (the job's items say which did),
    the next get fetches it again, and nothing else is touched."""
    m = ms.start_manager(tmp_path, config_interval="1s")
    root, s, seed, ds = managed_cluster(tmp_path, m, daemons=2)
    size = 3 * MiB
    sha = origin.add_random("/del.bin", size, tmp_path / "origin")
    keep_sha = origin.add_random("/keep.bin", MiB, tmp_path / "origin")
    url = origin.url("/del.bin")
    # The daemons give the manager their rpc ports within a poll or two.
    ms.wait_for(lambda: len([h for h in m.ok("GET", "/api/v1/hosts", token=root)
                             if h.get("rpc_port")]) >= 3, 15, "hosts with rpc ports")
    # A preheat with scope all_peers puts the task on the seed and on every host.
    pj = m.ok("POST", "/api/v1/jobs", {"type": "preheat", "args": {
        "type": "file", "urls": [url], "scope": "all_peers"}}, root)
    p = wait_job(m, root, pj["id"])
    assert p["state"] == "succeeded", p
    assert {i["host"] for i in p["result"]["items"]} >= {d.name for d in ds}, p["result"]
    for d in ds:
        for path, want in (("/del.bin", sha), ("/keep.bin", keep_sha)):
            out = tmp_path / f"{d.name}{path.replace('/', '-')}"
            cp = run_get(d, origin.url(path), out, timeout=60)
            assert cp.returncode == 0, describe(cp)
            assert sha256_file(out) == want
        assert d.download_bytes("origin") + d.download_bytes("peer") + \
            d.download_bytes("seed") == size + MiB  # del.bin came with the preheat
    tid = harness.task_id(url)
    job = m.ok("POST", "/api/v1/jobs", {"type": "delete_task", "args": {"task_id": tid}}, root)
    j = wait_job(m, root, job["id"])
    assert j["state"] == "succeeded", j
    removed = {i["host"] for i in j["result"]["items"] if i.get("removed")}
    print(f"delete_task: removed on {sorted(removed)} of "
          f"{sorted(i['host'] for i in j['result']['items'])}")
    assert {d.name for d in ds} <= removed, j["result"]
    for d in ds:
        assert d.metric("damselfly_cache_evictions_total", reason="removed") == 1
        assert b"deleted on the request of" in d.log_bytes()
    # The other task stays; the deleted one is fetched again on the next get.
    n_keep = origin.request_count("/keep.bin")
    cp = run_get(ds[0], origin.url("/keep.bin"), tmp_path / "keep-again")
    assert cp.returncode == 0 and origin.request_count("/keep.bin") == n_keep
    before = ds[0].download_bytes("origin") + ds[0].download_bytes("peer") + \
        ds[0].download_bytes("seed")
    cp = run_get(ds[0], url, tmp_path / "del-again", timeout=60)
    assert cp.returncode == 0, describe(cp)
    assert sha256_file(tmp_path / "del-again") == sha
    after = ds[0].download_bytes("origin") + ds[0].download_bytes("peer") + \
        ds[0].download_bytes("seed")
    assert after - before == size, (before, after)
    # A peer of the cluster (not the manager or the scheduler) may not delete tasks.
    assert b"DeleteTask from" not in ds[1].log_bytes()


def test_job_inputs_and_failures(tmp_path, need_binary, origin):
    m = ms.start_manager(tmp_path)
    root = m.signin()
    bad = [
        {"type": "nuke", "args": {}},
        {"type": "preheat"},
        {"type": "preheat", "args": {"type": "file"}},
        {"type": "preheat", "args": {"type": "file", "url": "ftp://x/y"}},
        {"type": "preheat", "args": {"type": "file", "url": "http://x/a b"}},
        {"type": "preheat", "args": {"type": "file", "urls": ["http://x/"] * 257}},
        {"type": "preheat", "args": {"type": "file", "url": "http://x/" + "a" * 5000}},
        {"type": "preheat", "args": {"type": "file", "url": "http://x/", "scope": "everyone"}},
        {"type": "preheat", "args": {"type": "file", "url": "http://x/", "concurrency": 0}},
        {"type": "preheat", "args": {"type": "file", "url": "http://x/",
                                     "headers": {"Bad\nName": "v"}}},
        {"type": "preheat", "args": {"type": "image", "urls": ["http://a/", "http://b/"]}},
        {"type": "preheat", "args": {"type": "image", "url": "http://r/v2/x/manifests/1",
                                     "platform": "amd64"}},
        {"type": "preheat", "args": {"type": "file", "url": "http://x/"}, "cluster_ids": ["1"]},
        {"type": "delete_task", "args": {"task_id": "XYZ"}},
    ]
    for b in bad:
        st, js = m.call("POST", "/api/v1/jobs", b, root)
        assert st == 400 and js.get("error"), f"{b}: {st} {js}"
    # No seed peer in the cluster: the job fails with the reason.
    job = m.ok("POST", "/api/v1/jobs", {"type": "preheat", "args": {
        "type": "file", "url": origin.url("/none")}}, root)
    j = wait_job(m, root, job["id"])
    assert j["state"] == "failed" and "no active seed peer" in j["reason"], j
    # Cancelling a finished job is refused; an unknown one is 404.
    assert m.call("POST", f"/api/v1/jobs/{job['id']}/cancel", token=root)[0] == 409
    assert m.call("POST", "/api/v1/jobs/999/cancel", token=root)[0] == 404


@pytest.mark.deadline(180)
def test_cancel_a_running_job(tmp_path, origin, need_binary):
    m = ms.start_manager(tmp_path)
    root, s, seed, ds = managed_cluster(tmp_path, m, daemons=0)
    origin.add_random("/slow.bin", 16 * MiB, tmp_path / "origin")
    origin.throttle = 1 * MiB
    job = m.ok("POST", "/api/v1/jobs", {"type": "preheat", "args": {
        "type": "file", "url": origin.url("/slow.bin")}}, root)
    wait_job(m, root, job["id"], states=("running",), timeout=10)
    ms.wait_for(lambda: origin.sent("/slow.bin") > 0, 10, "the seed to start fetching")
    j = m.ok("POST", f"/api/v1/jobs/{job['id']}/cancel", token=root)
    assert j["state"] == "failed" and j["reason"] == "cancelled"
    ms.wait_for(lambda: f"job {job['id']}: stopped" in m.log_text(), 10, "the runner to stop")
    time.sleep(1.5)
    j = m.ok("GET", f"/api/v1/jobs/{job['id']}", token=root)
    assert j["state"] == "failed" and j["reason"] == "cancelled"  # not overwritten
    origin.throttle = 0


@pytest.mark.deadline(240)
def test_manager_restart_mid_job_resumes_once(tmp_path, origin, need_binary, database):
    m = ms.start_manager(tmp_path, database)
    root, s, seed, ds = managed_cluster(tmp_path, m, daemons=0)
    origin.add_random("/fast.bin", 1 * MiB, tmp_path / "origin")
    origin.add_random("/slow.bin", 12 * MiB, tmp_path / "origin")
    job = m.ok("POST", "/api/v1/jobs", {"type": "preheat", "args": {
        "type": "file", "concurrency": 1,
        "urls": [origin.url("/fast.bin"), origin.url("/slow.bin")]}}, root)

    def fast_done():
        j = m.ok("GET", f"/api/v1/jobs/{job['id']}", token=root)
        items = j["result"].get("items", [])
        return items and items[0]["state"] == "succeeded"
    origin.throttle = 2 * MiB
    ms.wait_for(fast_done, 30, "the first URL preheated")
    ms.wait_for(lambda: origin.sent("/slow.bin") > 0, 10, "the second URL started")
    m.kill9()  # mid-job: the job row says running, claimed by a dead manager
    m2 = ms.start_manager(tmp_path, database, name="manager2")  # same data dir
    origin.throttle = 0
    tok = m2.signin()
    j = wait_job(m2, tok, job["id"], timeout=60)
    assert j["state"] == "succeeded", j
    log2 = m2.log_text()
    assert f"job {job['id']}: running -> running (preheat, resumed)" in log2
    # The item done before the restart was not done again.
    assert "fast.bin on" not in log2
    both = m.log_text() + log2
    assert both.count(f"job {job['id']}: running -> succeeded") == 1
    assert origin.sent("/fast.bin") <= 1 * MiB + 1 and origin.sent("/slow.bin") >= 12 * MiB
    assert seed.download_bytes("origin") >= 13 * MiB


def _push_index(registry, repo, tag, entries):
    index = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
             "manifests": entries}
    data = json.dumps(index).encode()
    req = urllib.request.Request(f"{registry.url}/v2/{repo}/manifests/{tag}", data=data,
                                 method="PUT")
    req.add_header("Content-Type", "application/vnd.oci.image.index.v1+json")
    with urllib.request.urlopen(req, timeout=30) as r:
        assert r.status in (200, 201)
    return hashlib.sha256(data).hexdigest()


@pytest.mark.deadline(300)
def test_oapi_image_preheat_one_platform(tmp_path, need_binary):
    reg = ps.Registry(tmp_path).start()
    amd = ps.build_oci_image(tmp_path / "amd", layer_sizes=(1 << 20, 300 << 10), tag="amd64",
                             seed=b"amd")
    arm = ps.build_oci_image(tmp_path / "arm", layer_sizes=(700 << 10, 200 << 10), tag="arm64",
                             seed=b"arm")
    ps.push_image(tmp_path, amd, reg, repo="multi/app")
    ps.push_image(tmp_path, arm, reg, repo="multi/app")
    entries = []
    for img, arch in ((amd, "amd64"), (arm, "arm64")):
        entries.append({"mediaType": "application/vnd.oci.image.manifest.v1+json",
                        "digest": img.manifest_digest, "size": len(img.manifest),
                        "platform": {"os": "linux", "architecture": arch}})
    _push_index(reg, "multi/app", "v1", entries)

    m = ms.start_manager(tmp_path)
    root, s, seed, ds = managed_cluster(tmp_path, m, daemons=1)
    op = m.user_token(root, "harbor-bot", "operator")
    pat = m.ok("POST", "/api/v1/personal-access-tokens",
               {"name": "harbor", "scopes": ["job"]}, op)["token"]
    # Dragonfly's open-API shape, as Harbor's preheat provider sends it.
    body = {"type": "preheat", "args": {
        "type": "image", "url": f"{reg.url}/v2/multi/app/manifests/v1",
        "platform": "linux/arm64", "scope": "single_seed_peer", "concurrent_count": 2},
        "scheduler_cluster_ids": [1]}
    assert m.call("POST", "/oapi/v1/jobs", body)[0] == 401
    st, job = m.call("POST", "/oapi/v1/jobs", body, pat)
    assert st == 200, job
    j = wait_job(m, root, job["id"], timeout=90)
    assert j["state"] == "succeeded", j
    digests = sorted(i["digest"] for i in j["result"]["items"])
    assert digests == sorted(l["digest"] for l in arm.layers)
    # Exactly that platform's layers went to the seed.
    for l in arm.layers:
        # One transfer (plus the 1-byte range probe).
        assert l["size"] <= reg.blob_bytes_served(l["digest"]) <= l["size"] + 1, l
    for l in amd.layers:
        assert reg.blob_gets(l["digest"]) == [], f"amd64 layer {l['digest']} was fetched"
    # The seed holds them: a daemon gets a layer without the registry.
    l0 = arm.layers[0]
    cp = run_get(ds[0], f"{reg.url}/v2/multi/app/blobs/{l0['digest']}", tmp_path / "layer",
                 "--digest", l0["digest"], timeout=60)
    assert cp.returncode == 0, describe(cp)
    assert reg.blob_bytes_served(l0["digest"]) <= l0["size"] + 1
    assert m.ok("GET", f"/oapi/v1/jobs/{job['id']}", token=root)["state"] == "succeeded"


@pytest.mark.deadline(180)
def test_two_managers_share_one_postgres(tmp_path, origin, need_binary, postgres):
    """Stateless apart from the database: what one manager learns the other shows, and jobs
    created on both run exactly once between them."""
    if postgres.why_not:
        pytest.skip(f"PostgreSQL tests skipped: {postgres.why_not}")
    db = postgres.new_database()
    m1 = ms.start_manager(tmp_path, db, name="m1", data="m1")
    m2 = ms.start_manager(tmp_path, db, name="m2", data="m2")
    root1, s, seed, ds = managed_cluster(tmp_path, m1, daemons=0)
    root2 = m2.signin()
    assert [x["state"] for x in m2.ok("GET", "/api/v1/seed-peers", token=root2)] == ["active"]
    urls = []
    for i in range(4):
        origin.add_random(f"/both{i}.bin", 512 * 1024 + i, tmp_path / "origin")
        urls.append(origin.url(f"/both{i}.bin"))
    jobs = []
    for i, u in enumerate(urls):
        mgr, tok = (m1, root1) if i % 2 == 0 else (m2, root2)
        jobs.append(mgr.ok("POST", "/api/v1/jobs", {"type": "preheat", "args": {"url": u}}, tok))
    for j in jobs:
        assert wait_job(m1, root1, j["id"])["state"] == "succeeded"
    logs = m1.log_text() + m2.log_text()
    for j in jobs:
        assert logs.count(f"job {j['id']}: running -> succeeded") == 1, j
        assert logs.count(f"job {j['id']}: pending -> running") == 1, j
    for i in range(4):
        assert origin.sent(f"/both{i}.bin") <= 512 * 1024 + i + 1
    assert "root password" not in m2.log_text()


@pytest.mark.deadline(300)
def test_image_job_resumed_without_its_credentials(tmp_path, need_binary):
    """A job's registry password is never written to the database, so a manager that
    resumes an image job after a restart does not have it: it resolves the image again
    anonymously. Where the registry allows that (the open one) the job succeeds and the
    layers are preheated; where it does not (htpasswd) the job fails with a clear reason,
    and no layer is requested with a missing token."""
    user, password = "preheat", "s3cret-Pw-42"
    locked = ps.Registry(tmp_path, name="locked",
                         auth=("htpasswd", ps.htpasswd_file(tmp_path / "htpasswd", user,
                                                            password))).start()
    open_ = ps.Registry(tmp_path, name="open").start()
    img = ps.build_oci_image(tmp_path / "img", layer_sizes=(600 << 10, 200 << 10), seed=b"cred")
    ps.push_image(tmp_path, img, locked, repo="app", creds=f"{user}:{password}")
    ps.push_image(tmp_path, img, open_, repo="app")

    m = ms.start_manager(tmp_path)
    root, s, seed, ds = managed_cluster(tmp_path, m, daemons=0)
    # Both registries stall: the jobs are claimed and their resolution hangs, so the
    # manager dies mid-job (running, claimed by a dead manager).
    locked.proc.popen.send_signal(signal.SIGSTOP)
    open_.proc.popen.send_signal(signal.SIGSTOP)
    jobs = {}
    try:
        for name, reg in (("locked", locked), ("open", open_)):
            jobs[name] = m.ok("POST", "/api/v1/jobs", {"type": "preheat", "args": {
                "type": "image", "url": f"{reg.url}/v2/app/manifests/{img.tag}",
                "username": user, "password": password}}, root)
        ms.wait_for(lambda: all(f"job {j['id']}: pending -> running" in m.log_text()
                                for j in jobs.values()), 10, "both jobs claimed")
        m.kill9()
    finally:
        locked.proc.popen.send_signal(signal.SIGCONT)
        open_.proc.popen.send_signal(signal.SIGCONT)
    # The password is in no row of the database.
    with sqlite3.connect(tmp_path / "manager-data" / "manager.db") as db:
        rows = db.execute("SELECT args FROM jobs").fetchall()
    assert len(rows) == 2 and all(password not in r[0] for r in rows), rows
    assert all(json.loads(r[0])["withheld"] == {"password": True} for r in rows)
    assert all(j["args"].get("password") is None for j in jobs.values())

    m2 = ms.start_manager(tmp_path, name="manager2")
    tok = m2.signin()
    jl = wait_job(m2, tok, jobs["locked"]["id"], timeout=60)
    assert jl["state"] == "failed", jl
    assert jl["reason"].startswith("registry credentials are not kept across a manager "
                                   "restart; submit the job again"), jl["reason"]
    assert "401" in jl["reason"]
    assert [r for r in locked.requests() if r[0] == "GET" and "/blobs/" in r[1]] == []
    jo = wait_job(m2, tok, jobs["open"]["id"], timeout=90)
    assert jo["state"] == "succeeded", jo
    assert sorted(i["digest"] for i in jo["result"]["items"]) == sorted(
        l["digest"] for l in img.layers)
    for l in img.layers:
        assert l["size"] <= open_.blob_bytes_served(l["digest"]) <= l["size"] + 1, l
    log2 = m2.log_text()
    for j in jobs.values():
        assert f"job {j['id']}: pending -> running (preheat)" in log2  # claimed again
        assert f"job {j['id']}: its registry credentials are not in this manager's memory" in log2
    assert password not in m.log_text() + log2


@pytest.mark.deadline(300)
def test_image_job_resumed_with_items_resolves_again(tmp_path, need_binary):
    """An image job that had resolved its layers (items stored) when its manager died: the
    token those layers were fetched with lived only in that manager's memory, so the
    manager that resumes it resolves the image again before any item, anonymously. The
    htpasswd registry refuses that: the job fails with the clear reason, and the resumed
    manager sends no layer to a daemon (every layer request the registry answered 401 came
    before the restart: none)."""
    user, password = "preheat", "s3cret-Pw-43"
    locked = ps.Registry(tmp_path, name="locked",
                         auth=("htpasswd", ps.htpasswd_file(tmp_path / "htpasswd", user,
                                                            password))).start()
    img = ps.build_oci_image(tmp_path / "img", layer_sizes=(500 << 10, 100 << 10), seed=b"itm")
    ps.push_image(tmp_path, img, locked, repo="app", creds=f"{user}:{password}")
    m = ms.start_manager(tmp_path)
    root, s, seed, ds = managed_cluster(tmp_path, m, daemons=0)
    seed.proc.popen.send_signal(signal.SIGSTOP)  # the items wait on the seed
    try:
        job = m.ok("POST", "/api/v1/jobs", {"type": "preheat", "args": {
            "type": "image", "url": f"{locked.url}/v2/app/manifests/{img.tag}",
            "username": user, "password": password}}, root)
        ms.wait_for(lambda: len(m.ok("GET", f"/api/v1/jobs/{job['id']}", token=root)
                                ["result"].get("items", [])) == len(img.layers), 20,
                    "the layers resolved and stored as items")
        m.kill9()
    finally:
        seed.proc.popen.send_signal(signal.SIGCONT)
    n_before = len(locked.requests())
    m2 = ms.start_manager(tmp_path, name="manager2")
    tok = m2.signin()
    j = wait_job(m2, tok, job["id"], timeout=60)
    assert j["state"] == "failed", j
    assert j["reason"].startswith("registry credentials are not kept across a manager "
                                  "restart; submit the job again"), j["reason"]
    log2 = m2.log_text()
    assert f"job {job['id']}: running -> running (preheat, resumed)" in log2
    assert f"job {job['id']}: its registry credentials are not in this manager's memory" in log2
    # After the restart: the manifest refused (401), no blob asked for without a token.
    after = locked.requests()[n_before:]
    assert not [r for r in after if "/blobs/" in r[1] and r[2] == 401], after
    assert password not in m.log_text() + log2
