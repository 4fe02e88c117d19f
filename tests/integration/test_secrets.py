"""Secrets stay secret (issue 12, item 5): a credential given with `get -H @FILE` or
`--header-file`, and a `?token=` in the URL, reach the origin — and nowhere else: not a log,
not the data dirs (SQLite and its WAL included, read raw), not /metrics, not any StatTask
answer of the daemons or the scheduler, not `get`'s command line."""

import secrets

import grpc

from harness import (MiB, describe, fetch_metrics, proto_modules, run_get, scaled, sha256_file,
                     start_cluster, stat_task, task_id, wait_until)


def _files_under(root):
    return [p for p in root.rglob("*") if p.is_file() and not p.is_symlink()]


def _holders(paths, needles):
    found = []
    for p in paths:
        data = p.read_bytes()
        found += [f"{p}: {n.decode()[:12]}..." for n in needles if n in data]
    return found


def test_secrets_never_leave_the_request(tmp_path, origin, need_binary):
    hdr = "Bearer hdr-" + secrets.token_hex(16)
    tok = "tok-" + secrets.token_hex(16)
    needles = [hdr.encode(), tok.encode()]
    sha = origin.add_random("/private.bin", 1 * MiB + 333, tmp_path / "origin",
                            require={"Authorization": hdr})
    base = origin.url("/private.bin")
    url = f"{base}?v=1&token={tok}"
    c = start_cluster(tmp_path, daemons=2)
    d1, d2 = c.daemons
    hfile = tmp_path / "secret-headers" / "h.txt"
    hfile.parent.mkdir()
    hfile.write_text(f"X-Trace: 1\r\nAuthorization: {hdr}\r\n")

    cp1 = run_get(d1, url, tmp_path / "out1", "-H", f"@{hfile}", timeout=60)
    assert cp1.returncode == 0, describe(cp1)
    cp2 = run_get(d2, url, tmp_path / "out2", "--header-file", str(hfile), timeout=60)
    assert cp2.returncode == 0, describe(cp2)
    for out in ("out1", "out2"):
        assert sha256_file(tmp_path / out) == sha
    # The credential went to the origin (it answers 401 without), the token too; neither
    # was on get's command line (only the token, which is the URL itself).
    reqs = origin.requests_for("/private.bin")
    assert reqs and all(r.headers.get("authorization") == hdr for r in reqs)
    assert any(tok in r.query for r in reqs)
    assert all(hdr not in " ".join(map(str, cp.args)) for cp in (cp1, cp2))

    # The task's identity leaves the token out: the same task as the URL without it.
    tid = task_id(f"{base}?v=1")
    pb = proto_modules()
    st = stat_task(c.scheduler, tid)
    assert "token=REDACTED" in st.url and tok not in st.url, st.url
    answers = [st.SerializeToString()]
    for d in c.all:
        with grpc.insecure_channel(f"127.0.0.1:{d.rpc_port}") as ch:
            stub = pb.daemon_pb2_grpc.DaemonStub(ch)
            r = stub.StatTask(pb.daemon_pb2.StatLocalTaskRequest(task_id=tid),
                              timeout=scaled(5))
        assert r.url == f"{base}?v=1&token=REDACTED", (d.name, r.url)
        answers.append(r.SerializeToString())
    assert not [a for a in answers for n in needles if n in a]

    metrics = [fetch_metrics(d.piece_port) for d in c.all] + [c.scheduler.metrics()]
    assert not [n for m in metrics for n in needles if n in repr(m).encode()]

    # The data dirs, read raw while the daemons run (the WAL holds the latest writes)...
    data = [p for d in c.all for p in _files_under(d.data_dir)]
    assert any(p.name == "meta.db-wal" for p in data), [p.name for p in data]
    assert _holders(data, needles) == []
    # ...and after they stopped; then every log and every output of get.
    for d in c.all:
        assert d.stop() == 0
    assert c.scheduler.stop() == 0
    data = [p for d in c.all for p in _files_under(d.data_dir)]
    logs = [p for p in tmp_path.glob("*") if p.is_file() and p.suffix in
            (".log", ".stderr", ".stdout")]
    assert len(logs) >= 4
    assert _holders(data + logs, needles) == []
    assert [cp for cp in (cp1, cp2) for n in needles if n in cp.stdout + cp.stderr] == []
