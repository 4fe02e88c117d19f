"""Large bodies through the proxy's P2P path: a 64 MiB content fetched from a seed peer and
streamed to the client as it arrives, then a range in its middle from the cache, byte for
byte; the same through a TLS-intercepted connection (the body is read, not sent with
sendfile, there); and a response in flight when a new version replaces the cached file
never carries bytes of the new one."""

import os
import re
import socket
import subprocess

import pytest

from harness import (MiB, scaled, sha256_bytes, start_daemon, start_scheduler, wait_hosts)
from proxy_support import HttpsOrigin, issue_cert, make_ca

RULES = """proxy-rules:
  - regex: '/p2p/'
    p2p: true
  - regex: '.*'
    p2p: false
"""

SIZE = 64 * MiB + 12345
# A range in the middle, from inside one piece to inside another (pieces are a few MiB).
RANGE = (20 * MiB + 4097, 45 * MiB + 77)


def curl(args, timeout=90):
    return subprocess.run(["curl", "-sS", "--noproxy", "", "--max-time", str(int(scaled(timeout)))]
                          + [str(a) for a in args], capture_output=True, stdin=subprocess.DEVNULL,
                          timeout=scaled(timeout) + 10)


def fetch(proxy, url, out, extra=()):
    """Downloads url through proxy into out; returns (status, head text, body bytes)."""
    hdr = out.with_suffix(".head")
    cp = curl(["--proxy", proxy, "-D", hdr, "-o", out, *extra, url])
    assert cp.returncode == 0, cp.stderr.decode(errors="replace")[-1500:]
    head = hdr.read_text(errors="replace")
    status = int(re.findall(r"HTTP/1\.1 (\d+)", head)[-1])
    return status, head, out.read_bytes()


def check_range(proxy, url, out, data):
    a, b = RANGE
    status, head, body = fetch(proxy, url, out, ["-r", f"{a}-{b}"])
    assert status == 206, head
    assert f"Content-Range: bytes {a}-{b}/{len(data)}" in head, head
    assert len(body) == b - a + 1
    assert body == data[a:b + 1], "the range's bytes differ from the content's"


@pytest.mark.deadline(180)
def test_large_p2p_body_and_a_middle_range_are_exact(tmp_path, origin, need_binary):
    src = tmp_path / "origin"
    sha = origin.add_random("/p2p/big.bin", SIZE, src)
    data = (src / "origin-p2p_big.bin").read_bytes()
    s = start_scheduler(tmp_path)
    start_daemon(tmp_path, "seed", scheduler=s, seed=True)
    cfg = tmp_path / "daemon.yaml"
    cfg.write_text(RULES)
    d = start_daemon(tmp_path, "d1", scheduler=s, config=cfg)
    wait_hosts(s, 2)
    proxy = f"http://127.0.0.1:{d.proxy_port}"

    # Streamed while the download from the seed runs.
    status, head, body = fetch(proxy, origin.url("/p2p/big.bin"), tmp_path / "full.bin")
    assert status == 200, head
    assert len(body) == SIZE and sha256_bytes(body) == sha
    m = d.metrics()
    assert m.value("damselfly_proxy_requests_total", path="p2p") == 1
    assert m.value("damselfly_proxy_bytes_total", path="p2p") == SIZE
    # d1 took the content from the seed, not from the origin: the client's bytes came
    # over P2P.
    assert m.value("damselfly_download_bytes_total", source="seed") == SIZE
    assert m.value("damselfly_download_bytes_total", source="origin") == 0

    # From the cache: a range in the middle, then the whole again.
    check_range(proxy, origin.url("/p2p/big.bin"), tmp_path / "range.bin", data)
    status, _, body = fetch(proxy, origin.url("/p2p/big.bin"), tmp_path / "again.bin")
    assert status == 200 and body == data


@pytest.mark.deadline(180)
def test_large_body_through_tls_interception_is_exact(tmp_path, need_binary):
    origin_ca_crt, _, origin_ca = make_ca(tmp_path / "origin-ca", "damselfly test origin CA")
    crt, key = issue_cert(tmp_path / "origin-ca", origin_ca)
    org = HttpsOrigin(crt, key)
    data = os.urandom(SIZE)
    org.add("/p2p/big.bin", data)
    org.start()
    try:
        op_crt, op_key, _ = make_ca(tmp_path / "operator-ca", "damselfly test operator CA")
        cfg = tmp_path / "daemon.yaml"
        cfg.write_text(RULES)
        d = start_daemon(tmp_path, "d1", config=cfg, proxy_intercept=f"127.0.0.1:{org.port}",
                         proxy_ca_cert=op_crt, proxy_ca_key=op_key, origin_ca_file=origin_ca_crt)
        proxy = f"http://127.0.0.1:{d.proxy_port}"
        tls = ["--cacert", op_crt]
        status, head, body = fetch(proxy, org.url("/p2p/big.bin"), tmp_path / "full.bin", tls)
        assert status == 200, head
        assert len(body) == SIZE and sha256_bytes(body) == sha256_bytes(data)
        m = d.metrics()
        assert m.value("damselfly_proxy_requests_total", path="intercept") == 1
        assert m.value("damselfly_proxy_requests_total", path="p2p") == 1
        a, b = RANGE
        status, head, body = fetch(proxy, org.url("/p2p/big.bin"), tmp_path / "range.bin",
                                   tls + ["-r", f"{a}-{b}"])
        assert status == 206, head
        assert f"Content-Range: bytes {a}-{b}/{SIZE}" in head, head
        assert body == data[a:b + 1], "the range's bytes differ from the content's"
    finally:
        org.stop()


@pytest.mark.deadline(150)
def test_a_new_version_mid_response_never_mixes_contents(tmp_path, need_binary):
    from test_freshness import LM1, LM2, FreshOrigin
    o = FreshOrigin()
    size = 32 * MiB
    v1, v2 = os.urandom(size), os.urandom(size)
    o.set("/p2p/v", v1, '"v1"', LM1)
    url = o.url("/p2p/v")
    try:
        cfg = tmp_path / "daemon.yaml"
        cfg.write_text(RULES)
        d = start_daemon(tmp_path, "d1", config=cfg, revalidate_after="0s")
        proxy = f"http://127.0.0.1:{d.proxy_port}"
        status, _, body = fetch(proxy, url, tmp_path / "first.bin")
        assert status == 200 and body == v1

        # A slow client: its response (v1, from the cache) starts, then it stops reading.
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 << 10)
        s.settimeout(scaled(20))
        s.connect(("127.0.0.1", d.proxy_port))
        s.sendall(f"GET {url} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
        got = b""
        while b"\r\n\r\n" not in got or len(got.partition(b"\r\n\r\n")[2]) < MiB:
            b = s.recv(1 << 16)
            assert b, "closed before the body started"
            got += b
        head, _, body_a = got.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200"), head

        # The origin has a new version; another client's request revalidates, the cached
        # file is detached and v2 fetched into a new one.
        o.set("/p2p/v", v2, '"v2"', LM2)
        status, _, body = fetch(proxy, url, tmp_path / "second.bin")
        assert status == 200 and body == v2

        # The slow client reads on: v1 to the end, or a connection cut short; never v2.
        try:
            while True:
                b = s.recv(1 << 20)
                if not b:
                    break
                body_a += b
        except ConnectionResetError:
            pass
        s.close()
        print(f"slow client: {len(body_a)} of {size} bytes")
        assert len(body_a) <= size
        assert body_a == v1[:len(body_a)], "the response carries bytes of another version"
    finally:
        o.close()
