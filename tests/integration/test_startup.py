"""A daemon serves its rpc port while it announces itself at startup (up to 2 s when the
scheduler is slow to answer): a call that arrives in that window finds the engine ready
and the daemon comes up."""

import socket
import threading
import time
from pathlib import Path

import grpc

import harness
from harness import Daemon, free_port, port_open, proto_modules, scaled, wait_until


class BlackHole:
    """A TCP listener that accepts and never answers: a scheduler that hangs."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.conns = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            self.conns.append(c)

    def close(self):
        for c in self.conns:
            c.close()
        self.sock.close()


def test_a_download_call_during_the_startup_announce_does_not_crash(tmp_path, need_binary):
    hole = BlackHole()
    pb = proto_modules()
    d = Path(tmp_path) / "d"
    (d / "data").mkdir(parents=True)
    dm = Daemon(name="d", dir=d, data_dir=d / "data", socket_path=str(d / "d.sock"),
                piece_port=free_port(), rpc_port=free_port(), log_path=Path(tmp_path) / "d.log",
                host_id="d", seed=False, scheduler=f"127.0.0.1:{hole.port}",
                extra={"proxy_listen": "off"})
    started = {}

    def start():
        try:
            dm._start(20)
            started["ok"] = True
        except Exception as e:  # the daemon died: reported below
            started["error"] = e

    t = threading.Thread(target=start, daemon=True)
    t.start()
    try:
        # The rpc port accepts before the announce is answered; call it in that window.
        wait_until(lambda: port_open(dm.rpc_port), scaled(10), what="rpc port")
        assert not harness.unix_socket_accepts(dm.socket), "the announce window is gone"
        with grpc.insecure_channel(f"127.0.0.1:{dm.rpc_port}") as ch:
            call = ch.unary_stream("/damselfly.v1.Daemon/DownloadTask",
                                   request_serializer=lambda m: m.SerializeToString(),
                                   response_deserializer=pb.daemon_pb2.DownloadTaskResponse.FromString)
            req = pb.daemon_pb2.DownloadTaskRequest(url="http://127.0.0.1:9/never",
                                                    disable_back_to_source=True, timeout_ms=500)
            try:
                for _ in call(req, timeout=scaled(5)):
                    pass
            except grpc.RpcError:
                pass  # any answer will do: the point is that the daemon lives
        t.join(scaled(20))
        assert started.get("ok"), f"daemon did not come up: {started.get('error')}"
        assert dm.proc.poll() is None, dm.proc.log_tail()
    finally:
        hole.close()
