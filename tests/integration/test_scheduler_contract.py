"""The Scheduler service's contract, seen from an independent gRPC client (python3-grpcio):
AnnounceHost, StatTask, an AnnouncePeer stream with progress and digests, the error codes,
/metrics, a taken port, and a clean exit on SIGTERM."""

import queue
import subprocess
import threading

import grpc
import pytest

from harness import (MiB, binary, free_port, scaled, start_scheduler, wait_until)

TASK = "ab" * 32


class PeerStream:
    """One AnnouncePeer stream: send() queues a request, recv() waits for the next
    response; close() half-closes."""

    _END = object()

    def __init__(self, stub, pb):
        self.pb = pb
        self._out = queue.Queue()
        self._in = queue.Queue()
        self.call = stub.AnnouncePeer(iter(self._out.get, self._END), timeout=scaled(30))
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self):
        try:
            for resp in self.call:
                self._in.put(resp)
        except grpc.RpcError as e:
            self._in.put(e)
        self._in.put(None)

    def send(self, **msg):
        self._out.put(self.pb.scheduler_pb2.AnnouncePeerRequest(**msg))

    def recv(self, timeout=10):
        """The next response, an RpcError when the call ended with one, None at the end."""
        return self._in.get(timeout=scaled(timeout))

    def close(self):
        self._out.put(self._END)


def host(pb, host_id, **kw):
    s = pb.scheduler_pb2
    return s.AnnounceHostRequest(host=s.Host(
        id=host_id, hostname=host_id, ip="127.0.0.1", piece_port=kw.pop("piece_port", 65002),
        rpc_port=0, type=s.HOST_TYPE_NORMAL, idc="test", location="lab|rack1",
        upload_capacity=100 * MiB, **kw))


def register(pb, peer_id, host_id, task=TASK):
    return pb.scheduler_pb2.RegisterPeer(
        task_id=task, peer_id=peer_id, host_id=host_id, url="https://origin.example/blob.bin",
        headers=[pb.common_pb2.Header(name="Authorization", value="Bearer hunter2")])


def digest(pb, n):
    return pb.common_pb2.PieceDigest(number=n, sha256=bytes([n + 1]) * 32)


def stat(stub, pb, task=TASK):
    return stub.StatTask(pb.scheduler_pb2.StatTaskRequest(task_id=task), timeout=scaled(5))


def test_scheduler_contract(tmp_path, need_binary, pb):
    s = pb.scheduler_pb2
    sched = start_scheduler(tmp_path)
    stub = sched.stub()

    resp = stub.AnnounceHost(host(pb, "h1"), timeout=scaled(5))
    assert resp.host_timeout_ms == 10000
    assert sched.metrics().value("damselfly_scheduler_hosts") == 1

    # Unknown and malformed task ids.
    with pytest.raises(grpc.RpcError) as e:
        stat(stub, pb)
    assert e.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.RpcError) as e:
        stat(stub, pb, task="../etc/passwd")
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT

    # A malformed host is refused with a reason.
    with pytest.raises(grpc.RpcError) as e:
        stub.AnnounceHost(host(pb, "bad", piece_port=0), timeout=scaled(5))
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "piece_port" in e.value.details()

    # The first peer of a task, with no seed in the cluster, goes to the origin.
    p1 = PeerStream(stub, pb)
    p1.send(register=register(pb, "p1", "h1"))
    r = p1.recv()
    assert r.WhichOneof("msg") == "back_to_source", r
    assert "no seed" in r.back_to_source.reason

    # It reports what it fetched, with the digests.
    p1.send(progress=s.PieceProgress(pieces=[0, 1], digests=[digest(pb, 0), digest(pb, 1)],
                                     content_length=3 * MiB, piece_length=1 * MiB))

    def task_known():
        try:
            st = stat(stub, pb)
        except grpc.RpcError:
            return None
        return st if st.task.content_length == 3 * MiB else None

    st = wait_until(task_known, scaled(10), what="StatTask to show the content length")
    assert st.task.task_id == TASK
    assert st.task.piece_length == 1 * MiB
    assert st.task.total_pieces == 3
    assert len(st.task.digests) == 0  # StatTask leaves digests out
    assert st.url == "https://origin.example/blob.bin"
    assert [(p.peer_id, p.host_id, p.state, p.finished_pieces) for p in st.peers] == \
        [("p1", "h1", s.PEER_STATE_BACK_TO_SOURCE, 2)]

    # A second peer gets p1 as its parent, with the layout and every digest so far...
    stub.AnnounceHost(host(pb, "h2"), timeout=scaled(5))
    p2 = PeerStream(stub, pb)
    p2.send(register=register(pb, "p2", "h2"))
    r = p2.recv()
    assert r.WhichOneof("msg") == "candidates", r
    assert [(p.peer_id, p.host_id, p.ip, p.piece_port, p.is_seed)
            for p in r.candidates.parents] == [("p1", "h1", "127.0.0.1", 65002, False)]
    assert not r.candidates.seed_triggered
    meta = r.candidates.task
    assert (meta.task_id, meta.content_length, meta.piece_length, meta.total_pieces) == \
        (TASK, 3 * MiB, 1 * MiB, 3)
    assert sorted((d.number, d.sha256) for d in meta.digests) == \
        [(0, bytes([1]) * 32), (1, bytes([2]) * 32)]

    # ...and then each new digest as p1 reports it (one it sent before is not news).
    p1.send(progress=s.PieceProgress(pieces=[2], digests=[digest(pb, 0), digest(pb, 2)],
                                     content_length=-1))
    r = p2.recv()
    assert r.WhichOneof("msg") == "task_meta", r
    assert [(d.number, d.sha256) for d in r.task_meta.digests] == [(2, bytes([3]) * 32)]
    assert r.task_meta.content_length == 3 * MiB

    # A second register on a stream is refused.
    p2.send(register=register(pb, "p2-again", "h2"))
    err = p2.recv()
    assert isinstance(err, grpc.RpcError), err
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "already registered" in err.details()

    # A register from a host that never announced.
    p3 = PeerStream(stub, pb)
    p3.send(register=register(pb, "p3", "ghost"))
    err = p3.recv()
    assert isinstance(err, grpc.RpcError), err
    assert err.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert err.details() == "host ghost has not announced"

    # p1 finishes and closes its stream: it stays as a parent; p2's stream went with its
    # error, so p2 is gone.
    p1.send(finished=s.PeerFinished(content_length=3 * MiB, total_pieces=3))
    p1.close()
    assert p1.recv() is None

    def peers_settled():
        st = stat(stub, pb)
        return st if [(p.peer_id, p.state) for p in st.peers] == \
            [("p1", s.PEER_STATE_SUCCEEDED)] else None

    st = wait_until(peers_settled, scaled(10), what="p1 SUCCEEDED and p2 removed")
    assert st.peers[0].finished_pieces == 3

    m = sched.metrics()
    assert m.value("damselfly_scheduler_hosts") == 2
    assert m.value("damselfly_scheduler_tasks") == 1
    assert m.value("damselfly_scheduler_peers") == 1
    assert m.value("damselfly_scheduler_back_to_source_total") == 1

    # LeaveHost takes the host's peers with it.
    stub.LeaveHost(s.LeaveHostRequest(host_id="h1"), timeout=scaled(5))
    with pytest.raises(grpc.RpcError) as e:
        stat(stub, pb)
    assert e.value.code() == grpc.StatusCode.NOT_FOUND
    assert sched.metrics().value("damselfly_scheduler_hosts") == 1

    # Header values are secrets: they never reach the log.
    assert sched.stop() == 0
    log = sched.log_path.read_bytes()
    assert b"hunter2" not in log
    assert b"task " + TASK.encode() + b" peer p1 host h1: BACK_TO_SOURCE -> SUCCEEDED" in log


def test_taken_port_is_reported(tmp_path, need_binary):
    sched = start_scheduler(tmp_path)
    cp = subprocess.run([str(binary()), "scheduler", "--listen", f"127.0.0.1:{sched.port}",
                         "--metrics-listen", f"127.0.0.1:{free_port()}"],
                        stdin=subprocess.DEVNULL, capture_output=True, timeout=scaled(20))
    assert cp.returncode == 1
    assert cp.stderr.decode().strip() == \
        f"damselfly scheduler: cannot listen on 127.0.0.1:{sched.port}: address in use"
    assert sched.proc.alive()


def test_ready_line_and_sigterm(tmp_path, need_binary):
    sched = start_scheduler(tmp_path)
    wait_until(lambda: b"scheduler listening on" in sched.log_path.read_bytes(), scaled(5),
               what="the ready line")
    assert (f"scheduler listening on 127.0.0.1:{sched.port} "
            f"(metrics on 127.0.0.1:{sched.metrics_port})").encode() in sched.log_path.read_bytes()
    assert sched.stop() == 0
    assert not sched.proc.needed_sigkill
