"""Mutual TLS on the gRPC planes (issue 12 item 3, issue 16 items 1-2).

Real processes on 127.0.0.1 with certificates from scripts/make-certs.sh (harness.make_certs):
a TLS cluster distributes a file; clients without a certificate are refused by the scheduler
and by a daemon's rpc port; a valid peer certificate acts only for its own host ID; a host
that announces type=seed with a peer certificate is no seed; DownloadTask on a daemon needs a
scheduler's (or manager's) certificate; a rotated certificate is picked up without dropping a
transfer. The piece plane is not what these tests look at (it may be plain HTTP or HTTPS)."""

import os
import signal
import socket
import ssl
import time

import grpc
import pytest

from harness import (MiB, describe, make_certs, proto_modules, run_get, scaled, sha256_file,
                     spawn_get, start_daemon, start_scheduler, task_id, tls_channel, tls_flags,
                     wait_gets, wait_hosts, wait_until)

ROLES = {"sched": "scheduler", "seed": "seed", "d1": "peer", "d2": "peer", "rogue": "peer",
         "fakeseed": "peer"}


def _read(p):
    with open(p, "rb") as f:
        return f.read()


def _server_cert_der(certdir, port, host):
    """The DER certificate the TLS server on 127.0.0.1:port presents to host's certificate."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.load_verify_locations(str(certdir / "ca.pem"))
    ctx.load_cert_chain(str(certdir / f"{host}.pem"), str(certdir / f"{host}.key"))
    ctx.set_alpn_protocols(["h2"])
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
        with ctx.wrap_socket(raw) as tls:
            return tls.getpeercert(binary_form=True)


def _host(pb, host_id, seed=False):
    s = pb.scheduler_pb2
    return s.Host(id=host_id, hostname=host_id, ip="127.0.0.1", piece_port=1, rpc_port=2,
                  type=s.HOST_TYPE_SEED if seed else s.HOST_TYPE_NORMAL)


def _tls_cluster(tmp_path, certs, daemons=("d1", "d2"), seed=True, **sched_flags):
    s = start_scheduler(tmp_path, **tls_flags(certs, "sched"), **sched_flags)
    sd = start_daemon(tmp_path, "seed", scheduler=s, seed=True, **tls_flags(certs, "seed")) \
        if seed else None
    ds = [start_daemon(tmp_path, n, scheduler=s, **tls_flags(certs, n)) for n in daemons]
    wait_hosts(s, len(ds) + (1 if seed else 0))
    return s, sd, ds


@pytest.mark.deadline(150)
def test_tls_cluster_distributes_byte_exact(tmp_path, origin, need_binary):
    certs = make_certs(tmp_path / "certs", ROLES)
    s, sd, ds = _tls_cluster(tmp_path, certs)
    size = 3 * MiB + 4321
    want = origin.add_random("/mtls.bin", size, tmp_path / "origin")
    url = origin.url("/mtls.bin")
    outs = [tmp_path / f"out-{d.name}" for d in ds]
    gets = [spawn_get(d, url, o, log_dir=tmp_path, name=f"get-{d.name}")
            for d, o in zip(ds, outs)]
    for cp, o in zip(wait_gets(gets, 90), outs):
        assert cp.returncode == 0, describe(cp)
        assert sha256_file(o) == want
    # The scheduler reached the seed over TLS (DownloadTask to the seed's certificate).
    assert s.metrics().value("damselfly_scheduler_seed_triggers_total") >= 1
    wait_until(lambda: b"finished DownloadTask" in s.proc.log_bytes(), scaled(30),
               what="the seed's DownloadTask to end")
    assert b"could not fetch it" not in s.proc.log_bytes()
    for d in [sd] + ds:
        assert b"mutual TLS on: this host is " + d.name.encode() in d.log_bytes()
    # A get after everything is cached is still exact.
    o = tmp_path / "again"
    cp = run_get(ds[0], url, o)
    assert cp.returncode == 0, describe(cp)
    assert sha256_file(o) == want


@pytest.mark.deadline(120)
def test_clients_without_certificate_are_refused(tmp_path, need_binary):
    certs = make_certs(tmp_path / "certs", ROLES)
    s, _, ds = _tls_cluster(tmp_path, certs, daemons=("d1",), seed=False)
    pb = proto_modules()
    d1_rpc = f"127.0.0.1:{ds[0].rpc_port}"
    ann = pb.scheduler_pb2.AnnounceHostRequest(host=_host(pb, "rogue"))
    dl = pb.daemon_pb2.DownloadTaskRequest(url="http://127.0.0.1:1/x")
    for name, ch in [
            ("insecure scheduler", grpc.insecure_channel(s.addr)),
            ("no client cert scheduler", tls_channel(certs, s.addr, None))]:
        with ch:
            with pytest.raises(grpc.RpcError) as e:
                pb.scheduler_pb2_grpc.SchedulerStub(ch).AnnounceHost(ann, timeout=scaled(5))
            assert e.value.code() in (grpc.StatusCode.UNAVAILABLE,
                                      grpc.StatusCode.UNAUTHENTICATED), name
    for name, ch in [
            ("insecure daemon", grpc.insecure_channel(d1_rpc)),
            ("no client cert daemon", tls_channel(certs, d1_rpc, None, server_cn="d1"))]:
        with ch:
            with pytest.raises(grpc.RpcError) as e:
                list(pb.daemon_pb2_grpc.DaemonStub(ch).DownloadTask(dl, timeout=scaled(5)))
            assert e.value.code() in (grpc.StatusCode.UNAVAILABLE,
                                      grpc.StatusCode.UNAUTHENTICATED), name
    # Nobody got in: the scheduler still knows only d1, and d1 still runs.
    assert s.metrics().value("damselfly_scheduler_hosts") == 1
    assert ds[0].proc.alive()
    # A daemon given only some of the files, or files that do not load, does not start.
    f = tls_flags(certs, "d2")
    for bad in ({"tls_cert": f["tls_cert"]},
                dict(f, tls_key=str(certs / "d1.key"))):
        with pytest.raises(RuntimeError) as e:
            start_daemon(tmp_path, "d2", scheduler=s, ready_timeout=10, **bad)
        assert "tls" in str(e.value).lower()
    # So does a scheduler.
    for bad in ({"tls_cert": str(certs / "sched.pem")},
                dict(tls_flags(certs, "sched"), tls_key=str(certs / "d1.key"))):
        with pytest.raises(RuntimeError) as e:
            start_scheduler(tmp_path, name="sched-bad", ready_timeout=10, **bad)
        assert "--tls-cert/--tls-key/--tls-ca" in str(e.value)
    # Each needs a certificate of its role.
    with pytest.raises(RuntimeError) as e:
        start_scheduler(tmp_path, name="sched-peer", ready_timeout=10, **tls_flags(certs, "d2"))
    assert "is a peer certificate" in str(e.value)
    with pytest.raises(RuntimeError) as e:
        start_daemon(tmp_path, "sched", scheduler=s, ready_timeout=10, **tls_flags(certs, "sched"))
    assert "is a scheduler certificate" in str(e.value)
    # A --host-id that is not the certificate's is refused.
    with pytest.raises(RuntimeError) as e:
        start_daemon(tmp_path, "d2x", scheduler=s, host_id="d2x", ready_timeout=10, **f)
    assert "differs from the host ID d2" in str(e.value)


@pytest.mark.deadline(150)
def test_peer_certificate_acts_only_for_itself(tmp_path, origin, need_binary):
    certs = make_certs(tmp_path / "certs", ROLES)
    s, _, ds = _tls_cluster(tmp_path, certs, daemons=("d1",), seed=False)
    pb = proto_modules()
    sp = pb.scheduler_pb2
    want = origin.add_random("/own.bin", 1 * MiB + 7, tmp_path / "origin")
    url = origin.url("/own.bin")
    cp = run_get(ds[0], url, tmp_path / "out")
    assert cp.returncode == 0, describe(cp)
    assert sha256_file(tmp_path / "out") == want
    tid = task_id(url)
    with tls_channel(certs, s.addr, "rogue") as ch:
        stub = pb.scheduler_pb2_grpc.SchedulerStub(ch)
        # As itself it is let in: the certificate is good.
        stub.AnnounceHost(sp.AnnounceHostRequest(host=_host(pb, "rogue")), timeout=scaled(5))
        calls = [
            ("AnnounceHost as d1",
             lambda: stub.AnnounceHost(sp.AnnounceHostRequest(host=_host(pb, "d1")),
                                       timeout=scaled(5))),
            ("LeaveHost d1",
             lambda: stub.LeaveHost(sp.LeaveHostRequest(host_id="d1"), timeout=scaled(5))),
            ("StatTask of d1's task",
             lambda: stub.StatTask(sp.StatTaskRequest(task_id=tid), timeout=scaled(5))),
            ("StatTask of a task nobody has (no oracle)",
             lambda: stub.StatTask(sp.StatTaskRequest(task_id="0" * 64), timeout=scaled(5))),
        ]
        for what, call in calls:
            with pytest.raises(grpc.RpcError) as e:
                call()
            assert e.value.code() == grpc.StatusCode.PERMISSION_DENIED, what
            assert "rogue" in e.value.details(), (what, e.value.details())
        # Registering a peer for d1 on the stream is refused the same way.
        reg = sp.AnnouncePeerRequest(register=sp.RegisterPeer(
            task_id=tid, peer_id="rogue-peer", host_id="d1", url=url))
        with pytest.raises(grpc.RpcError) as e:
            list(stub.AnnouncePeer(iter([reg]), timeout=scaled(5)))
        assert e.value.code() == grpc.StatusCode.PERMISSION_DENIED
    # d1 may stat its own task; rogue may not make d1's peer leave.
    with tls_channel(certs, s.addr, "d1") as ch:
        st = pb.scheduler_pb2_grpc.SchedulerStub(ch).StatTask(sp.StatTaskRequest(task_id=tid),
                                                               timeout=scaled(5))
    d1_peers = [p.peer_id for p in st.peers if p.host_id == "d1"]
    assert d1_peers
    with tls_channel(certs, s.addr, "rogue") as ch:
        with pytest.raises(grpc.RpcError) as e:
            pb.scheduler_pb2_grpc.SchedulerStub(ch).LeavePeer(
                sp.LeavePeerRequest(task_id=tid, peer_id=d1_peers[0]), timeout=scaled(5))
        assert e.value.code() == grpc.StatusCode.PERMISSION_DENIED
    # d1 is still known and its task still has d1's peer.
    with tls_channel(certs, s.addr, "d1") as ch:
        st = pb.scheduler_pb2_grpc.SchedulerStub(ch).StatTask(sp.StatTaskRequest(task_id=tid),
                                                               timeout=scaled(5))
        assert any(p.host_id == "d1" for p in st.peers)
    assert s.metrics().value("damselfly_scheduler_hosts") == 2  # d1 and rogue


@pytest.mark.deadline(150)
@pytest.mark.parametrize("role", ["peer", "seed"])
def test_seed_by_certificate_not_by_claim(tmp_path, origin, need_binary, role):
    """No --seed-hosts: a daemon running --seed is a seed only when its certificate is a
    seed's. The peer-certificate case must never receive a DownloadTask; the seed-certificate
    case shows the same setup does trigger one (so the first can fail)."""
    certs = make_certs(tmp_path / "certs", dict(ROLES, fakeseed=role))
    s = start_scheduler(tmp_path, seed_hosts=None, **tls_flags(certs, "sched"))
    fs = start_daemon(tmp_path, "fakeseed", scheduler=s, seed=True,
                      **tls_flags(certs, "fakeseed"))
    d1 = start_daemon(tmp_path, "d1", scheduler=s, **tls_flags(certs, "d1"))
    wait_hosts(s, 2)
    want = origin.add_random("/seedclaim.bin", 2 * MiB + 3, tmp_path / "origin")
    cp = run_get(d1, origin.url("/seedclaim.bin"), tmp_path / "out")
    assert cp.returncode == 0, describe(cp)
    assert sha256_file(tmp_path / "out") == want
    triggers = s.metrics().value("damselfly_scheduler_seed_triggers_total")
    if role == "peer":
        assert triggers == 0
        assert s.metrics().value("damselfly_scheduler_unlisted_seed_announces_total") >= 1
        time.sleep(0.5)
        assert b"DownloadTask" not in fs.log_bytes()
    else:
        assert triggers >= 1


@pytest.mark.deadline(120)
def test_download_task_needs_a_scheduler_certificate(tmp_path, need_binary):
    certs = make_certs(tmp_path / "certs", dict(ROLES, mgr="manager"))
    s, _, ds = _tls_cluster(tmp_path, certs, daemons=("d1",), seed=False)
    pb = proto_modules()
    addr = f"127.0.0.1:{ds[0].rpc_port}"
    req = pb.daemon_pb2.DownloadTaskRequest(url="http://127.0.0.1:1/never")
    for host in ("rogue", "d1"):
        with tls_channel(certs, addr, host, server_cn="d1") as ch:
            with pytest.raises(grpc.RpcError) as e:
                list(pb.daemon_pb2_grpc.DaemonStub(ch).DownloadTask(req, timeout=scaled(5)))
            assert e.value.code() == grpc.StatusCode.PERMISSION_DENIED, host
            assert "may not trigger downloads" in e.value.details()
    # A manager's certificate passes the TLS check (what follows is the request's own fate:
    # the origin at port 1 is refused or unreachable, never PERMISSION_DENIED for the caller).
    with tls_channel(certs, addr, "mgr", server_cn="d1") as ch:
        try:
            list(pb.daemon_pb2_grpc.DaemonStub(ch).DownloadTask(req, timeout=scaled(10)))
        except grpc.RpcError as e:
            assert "may not trigger downloads" not in (e.details() or "")
    assert ds[0].metrics().value("damselfly_rpc_refused_total", reason="caller") == 2


@pytest.mark.deadline(180)
def test_rotated_certificates_keep_transfers_going(tmp_path, origin, need_binary):
    certs = make_certs(tmp_path / "certs", ROLES)
    s, sd, ds = _tls_cluster(tmp_path, certs, daemons=("d1",), seed=False)
    pb = proto_modules()
    old_sched_cert = _read(certs / "sched.pem")
    size = 6 * MiB
    want = origin.add_random("/slow.bin", size, tmp_path / "origin")
    origin.throttle = 1 * MiB  # bytes/s: the get lasts several seconds
    g = spawn_get(ds[0], origin.url("/slow.bin"), tmp_path / "out", log_dir=tmp_path,
                  name="get-slow")
    time.sleep(1.0)
    make_certs(certs, {"sched": "scheduler", "d1": "peer", "rogue": "peer"})
    assert _read(certs / "sched.pem") != old_sched_cert
    new_der = ssl.PEM_cert_to_DER_cert(_read(certs / "sched.pem").decode())
    # SIGHUP is not needed, but an operator's habit must not hurt: both say the files load.
    for p in (s, ds[0]):
        os.kill(p.proc.popen.pid, signal.SIGHUP)
    for p in (s, ds[0]):
        wait_until(lambda: b"SIGHUP: the TLS files load" in p.proc.log_bytes(), scaled(10),
                   what=f"{p.proc.name} to check its TLS files on SIGHUP")

    def serves_new_cert():
        return _server_cert_der(certs, s.port, "rogue") == new_der
    # New connections get the new certificate within the refresh interval (2 s), no restart.
    wait_until(serves_new_cert, scaled(15), interval=0.5,
               what="the scheduler to present its new certificate")
    # And the new client certificates are accepted.
    with tls_channel(certs, s.addr, "rogue") as ch:
        pb.scheduler_pb2_grpc.SchedulerStub(ch).AnnounceHost(
            pb.scheduler_pb2.AnnounceHostRequest(host=_host(pb, "rogue")), timeout=scaled(5))
    (cp,) = wait_gets([g], 90)
    assert cp.returncode == 0, describe(cp)
    assert sha256_file(tmp_path / "out") == want
    assert s.metrics().value("damselfly_scheduler_hosts") >= 2  # d1 and rogue
    # A bad rotation (a key that is not the certificate's) is reported on SIGHUP, and the
    # process stays up.
    (certs / "sched.key").write_bytes(_read(certs / "d1.key"))
    os.kill(s.proc.popen.pid, signal.SIGHUP)
    wait_until(lambda: b"SIGHUP: the TLS files do not load" in s.proc.log_bytes(), scaled(10),
               what="the scheduler to report the bad key")
    assert s.proc.alive()


class _FakeScheduler:
    """A Python Scheduler service over TLS (client certificates required) presenting
    host's certificate: counts the AnnounceHost calls that reach it."""

    def __init__(self, certdir, host):
        from concurrent import futures
        pb = proto_modules()
        self.announces = 0
        fake = self

        class Servicer(pb.scheduler_pb2_grpc.SchedulerServicer):
            def AnnounceHost(self, request, context):
                fake.announces += 1
                return pb.scheduler_pb2.AnnounceHostResponse(host_timeout_ms=30000,
                                                             scheduler_id="fake")

        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        pb.scheduler_pb2_grpc.add_SchedulerServicer_to_server(Servicer(), self.server)
        creds = grpc.ssl_server_credentials(
            [(_read(certdir / f"{host}.key"), _read(certdir / f"{host}.pem"))],
            root_certificates=_read(certdir / "ca.pem"), require_client_auth=True)
        self.port = self.server.add_secure_port("127.0.0.1:0", creds)
        self.server.start()

    @property
    def addr(self):
        return f"127.0.0.1:{self.port}"

    def stop(self):
        self.server.stop(0)


@pytest.mark.deadline(120)
@pytest.mark.parametrize("server_host", ["rogue", "sched"])
def test_daemon_talks_only_to_a_scheduler_certificate(tmp_path, need_binary, server_host):
    """A server with a valid peer certificate posing as the scheduler never gets the
    daemon's announce; the same fake with the scheduler's certificate does (control)."""
    certs = make_certs(tmp_path / "certs", ROLES)
    fake = _FakeScheduler(certs, server_host)
    try:
        d1 = start_daemon(tmp_path, "d1", scheduler=fake.addr, **tls_flags(certs, "d1"))
        if server_host == "sched":
            wait_until(lambda: fake.announces >= 1, scaled(15), what="the daemon's announce")
        else:
            time.sleep(scaled(3))
            assert fake.announces == 0
            assert d1.proc.alive()
    finally:
        fake.stop()


@pytest.mark.deadline(150)
def test_download_task_reaches_only_the_seed_named_by_its_certificate(tmp_path, origin,
                                                                      need_binary):
    """A host with a seed certificate announces itself as a seed at another daemon's rpc
    port (d1's): the scheduler's DownloadTask must not reach d1 (its certificate is d1's, not
    the seed's), so d1 never fetches on the seed's behalf."""
    certs = make_certs(tmp_path / "certs", ROLES)
    s = start_scheduler(tmp_path, seed_hosts=None, **tls_flags(certs, "sched"))
    d1 = start_daemon(tmp_path, "d1", scheduler=s, **tls_flags(certs, "d1"))
    d2 = start_daemon(tmp_path, "d2", scheduler=s, **tls_flags(certs, "d2"))
    pb = proto_modules()
    sp = pb.scheduler_pb2
    with tls_channel(certs, s.addr, "seed") as ch:
        h = sp.Host(id="seed", hostname="seed", ip="127.0.0.1", piece_port=d1.piece_port,
                    rpc_port=d1.rpc_port, type=sp.HOST_TYPE_SEED, upload_capacity=10 << 30)
        pb.scheduler_pb2_grpc.SchedulerStub(ch).AnnounceHost(sp.AnnounceHostRequest(host=h),
                                                              timeout=scaled(5))
    wait_hosts(s, 3)
    want = origin.add_random("/impostor.bin", 1 * MiB + 9, tmp_path / "origin")
    cp = run_get(d2, origin.url("/impostor.bin"), tmp_path / "out")
    assert cp.returncode == 0, describe(cp)
    assert sha256_file(tmp_path / "out") == want
    # The scheduler did try the seed (so the check below can fail) ...
    assert s.metrics().value("damselfly_scheduler_seed_triggers_total") >= 1
    wait_until(lambda: b"seed host seed could not fetch it" in s.proc.log_bytes(), scaled(20),
               what="the scheduler to give up on the impostor seed")
    # ... and d1 never saw a DownloadTask nor fetched the file.
    assert d1.metric("damselfly_rpc_refused_total", reason="caller") == 0
    assert b"DownloadTask" not in d1.log_bytes()
    assert origin.request_count("/impostor.bin") >= 1
    assert d1.download_bytes("source") == 0
