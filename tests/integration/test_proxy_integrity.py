"""Integrity through the proxy: a blob whose bytes do not match its digest never reaches a
client as a complete response (P2P path and direct fallback alike), and corrupt pieces from
a lying parent are replaced before anything is sent."""

import hashlib
import http.server
import os
import re
import socket

import pytest

from harness import (MiB, FakeParent, scaled, serve_http, start_daemon, start_scheduler, task_id,
                     wait_hosts, wait_until)
from proxy_support import Registry, build_oci_image, push_image
from test_proxy_mirror import raw_get


class LyingRegistry:
    """Answers /v2/ and serves, under each blob's true digest, bytes that differ from it in
    one byte near the end (ranges supported, as a registry does)."""

    def __init__(self):
        self.blobs = {}  # digest -> bytes served

    def add(self, good):
        digest = "sha256:" + hashlib.sha256(good).hexdigest()
        bad = bytearray(good)
        bad[-10] ^= 0xFF
        self.blobs[digest] = bytes(bad)
        return digest

    def start(self):
        reg = self

        class H(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def _blob(self, head):
                m = re.fullmatch(r"/v2/[a-z0-9/]+/blobs/(sha256:[0-9a-f]{64})",
                                 self.path.split("?")[0])
                data = reg.blobs.get(m.group(1)) if m else None
                if data is None:
                    body = b'{"errors":[]}' if self.path.startswith("/v2/") else b""
                    self.send_response(200 if self.path.split("?")[0] == "/v2/" else 404)
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    if not head:
                        self.wfile.write(body)
                    return
                rng = re.fullmatch(r"bytes=(\d+)-(\d+)", self.headers.get("Range", ""))
                if rng:
                    a, b = int(rng.group(1)), min(int(rng.group(2)), len(data) - 1)
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {a}-{b}/{len(data)}")
                    part = data[a:b + 1]
                else:
                    self.send_response(200)
                    part = data
                self.send_header("Content-Length", str(len(part)))
                self.send_header("Docker-Content-Digest", m.group(1))
                self.end_headers()
                if not head:
                    self.wfile.write(part)

            def do_GET(self):
                self._blob(False)

            def do_HEAD(self):
                self._blob(True)

        self._srv = serve_http(H)
        self.port = self._srv.server_address[1]
        return self

    def stop(self):
        self._srv.shutdown()
        self._srv.server_close()


def read_response(port, path, timeout=30):
    """(status, declared length, body bytes received before the connection ended)."""
    with socket.create_connection(("127.0.0.1", port), timeout=scaled(timeout)) as s:
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while True:
            try:
                b = s.recv(1 << 16)
            except ConnectionResetError:
                break
            if not b:
                break
            data += b
    head, _, body = data.partition(b"\r\n\r\n")
    status = int(head.split()[1]) if head else 0
    m = re.search(rb"(?i)\r\ncontent-length: *(\d+)", head)
    return status, int(m.group(1)) if m else None, body


@pytest.mark.deadline(60)
def test_wrong_blob_bytes_never_reach_the_client_complete(tmp_path, need_binary):
    reg = LyingRegistry()
    big = reg.add(os.urandom(3 * MiB + 4321))    # P2P: pieces stream, the last is held back
    small = reg.add(os.urandom(100 * 1024))      # one piece: falls back to the origin
    reg.start()
    try:
        d = start_daemon(tmp_path, "d1", registry_mirror=f"http://127.0.0.1:{reg.port}")
        for digest in (big, small):
            status, length, body = read_response(d.proxy_port, f"/v2/test/img/blobs/{digest}")
            size = len(reg.blobs[digest])
            print(f"{digest[7:19]}: status {status}, declared {length}, got {len(body)} of {size}")
            assert len(body) < size, f"the client received all {size} bytes of a wrong blob"
            assert hashlib.sha256(body).hexdigest() != digest[7:]
            assert length is None or len(body) < length
        assert d.metric("damselfly_proxy_integrity_aborts_total") >= 2
        assert d.metric("damselfly_proxy_fallbacks_total") >= 1
    finally:
        reg.stop()


@pytest.mark.deadline(150)
def test_corrupt_layer_from_a_parent_is_replaced(tmp_path, need_binary):
    reg = Registry(tmp_path).start()
    img = build_oci_image(tmp_path / "layout", layer_sizes=(6 << 20,), seed=b"liar")
    push_image(tmp_path, img, reg)
    layer = img.layers[0]
    content = (img.layout / "blobs" / "sha256" / layer["digest"][7:]).read_bytes()
    s = start_scheduler(tmp_path, bad_parent_threshold=2, candidate_limit=8)
    seed = start_daemon(tmp_path, "seed", scheduler=s, seed=True, registry_mirror=reg.url)
    d1 = start_daemon(tmp_path, "d1", scheduler=s, registry_mirror=reg.url)
    d2 = start_daemon(tmp_path, "d2", scheduler=s, registry_mirror=reg.url)
    wait_hosts(s, 3)
    path = f"/v2/test/img/blobs/{layer['digest']}"
    status, _, body = raw_get(d1.proxy_port, path)
    assert status == 200 and body == content

    tid = task_id(digest=layer["digest"])
    fake = FakeParent(s, tid, f"{reg.url}{path}", content, host_id="liar").start()
    try:
        def fake_registered():
            from harness import stat_task
            try:
                return any(p.peer_id == fake.peer_id for p in stat_task(s, tid).peers)
            except Exception:
                return False
        wait_until(fake_registered, scaled(15), interval=0.2, what="the liar's peer")
        status, hdrs, body = raw_get(d2.proxy_port, path, timeout=60)
        assert status == 200
        assert hashlib.sha256(body).hexdigest() == layer["digest"][7:], \
            "the client got a layer that does not match its digest"
        failures = d2.metric("damselfly_piece_verify_failures_total")
        print(f"liar asked {fake.request_count()} times; d2 rejected {failures} pieces")
        assert fake.request_count() == 0 or failures > 0
    finally:
        fake.stop()
