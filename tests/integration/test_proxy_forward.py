"""The daemon as a forward proxy: URL rules choose P2P or direct; CONNECT tunnels bytes
unchanged; intercepted hosts get TLS from the operator's CA and can use P2P."""

import os
import socket
import subprocess

import pytest

from harness import MiB, scaled, sha256_bytes, sha256_file, start_daemon
from proxy_support import EchoServer, HttpsOrigin, issue_cert, make_ca

RULES = """proxy-rules:
  - regex: '/p2p/'
    p2p: true
  - regex: '.*'
    p2p: false
"""


def curl(args, timeout=60):
    return subprocess.run(["curl", "-sS", "--noproxy", "", "--max-time", str(int(scaled(timeout)))]
                          + [str(a) for a in args], capture_output=True, stdin=subprocess.DEVNULL,
                          timeout=scaled(timeout) + 10)


@pytest.mark.deadline(90)
def test_forward_proxy_rules_choose_p2p_or_direct(tmp_path, origin, need_binary):
    sha_p2p = origin.add_random("/p2p/big.bin", 5 * MiB + 123, tmp_path / "origin")
    sha_direct = origin.add_random("/direct/small.bin", 300 * 1024, tmp_path / "origin")
    cfg = tmp_path / "daemon.yaml"
    cfg.write_text(RULES)
    d = start_daemon(tmp_path, "d1", config=cfg)
    env = dict(os.environ, http_proxy=f"http://127.0.0.1:{d.proxy_port}")
    for path, sha in (("/p2p/big.bin", sha_p2p), ("/direct/small.bin", sha_direct)):
        out = tmp_path / ("out" + path.replace("/", "-"))
        cp = subprocess.run(["curl", "-sS", "-o", out, origin.url(path)], env=env,
                            capture_output=True, timeout=scaled(60))
        assert cp.returncode == 0, cp.stderr
        assert sha256_file(out) == sha
    # The origin's log tells which way each went: the daemon's back-to-source probes and
    # fetches pieces with ranges; the direct download is the client's one plain GET.
    p2p_reqs = origin.requests_for("/p2p/big.bin")
    direct_reqs = origin.requests_for("/direct/small.bin")
    assert any(r.range == "bytes=0-0" for r in p2p_reqs), p2p_reqs
    assert len(direct_reqs) == 1 and direct_reqs[0].range is None, direct_reqs
    m = d.metrics()
    assert m.value("damselfly_proxy_requests_total", path="p2p") == 1
    assert m.value("damselfly_proxy_requests_total", path="direct") == 1
    # A second download of the P2P URL is served from the daemon's cache.
    before = len(p2p_reqs)
    cp = subprocess.run(["curl", "-sS", "-o", tmp_path / "again", origin.url("/p2p/big.bin")],
                        env=env, capture_output=True, timeout=scaled(60))
    assert cp.returncode == 0 and sha256_file(tmp_path / "again") == sha_p2p
    assert len(origin.requests_for("/p2p/big.bin")) == before


@pytest.mark.deadline(60)
def test_connect_tunnel_passes_bytes_unchanged(tmp_path, need_binary):
    echo = EchoServer()
    try:
        # The echo server's port is not 443: CONNECT to it needs the operator's word.
        d = start_daemon(tmp_path, "d1", proxy_connect_ports=[echo.port])
        payload = os.urandom(3 * MiB)
        with socket.create_connection(("127.0.0.1", d.proxy_port), timeout=scaled(20)) as s:
            s.sendall(f"CONNECT 127.0.0.1:{echo.port} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            head = b""
            while b"\r\n\r\n" not in head:
                b = s.recv(1)
                assert b, "proxy closed before answering CONNECT"
                head += b
            assert head.startswith(b"HTTP/1.1 200"), head
            import threading
            t = threading.Thread(target=s.sendall, args=(payload,))
            t.start()
            got = bytearray()
            while len(got) < len(payload):
                b = s.recv(1 << 16)
                assert b, f"tunnel closed after {len(got)} bytes"
                got += b
            t.join()
        assert bytes(got) == payload
        assert d.metric("damselfly_proxy_requests_total", path="tunnel") == 1
    finally:
        echo.stop()


@pytest.mark.deadline(90)
def test_tls_interception_with_the_operator_ca(tmp_path, need_binary):
    origin_ca_crt, _, origin_ca = make_ca(tmp_path / "origin-ca", "damselfly test origin CA")
    crt, key = issue_cert(tmp_path / "origin-ca", origin_ca)
    org = HttpsOrigin(crt, key)
    data = os.urandom(3 * MiB + 5)
    org.add("/p2p/file.bin", data)
    org.add("/plain.txt", b"hello through the tunnel\n")
    org.start()
    try:
        op_crt, op_key, _ = make_ca(tmp_path / "operator-ca", "damselfly test operator CA")
        cfg = tmp_path / "daemon.yaml"
        cfg.write_text(RULES)
        intercepted = start_daemon(tmp_path, "d1", config=cfg,
                                   proxy_intercept=f"127.0.0.1:{org.port}",
                                   proxy_ca_cert=op_crt, proxy_ca_key=op_key,
                                   origin_ca_file=origin_ca_crt)
        proxy = f"http://127.0.0.1:{intercepted.proxy_port}"

        # A client that trusts the operator CA: TLS with a minted leaf, then P2P.
        out = tmp_path / "out.bin"
        cp = curl(["-v", "--proxy", proxy, "--cacert", op_crt, "-o", out,
                   org.url("/p2p/file.bin")])
        assert cp.returncode == 0, cp.stderr.decode(errors="replace")[-1500:]
        assert b"damselfly test operator CA" in cp.stderr  # curl -v shows the issuer
        assert sha256_file(out) == sha256_bytes(data)
        assert any(r[2] == "bytes=0-0" for r in org.requests), org.requests  # back-to-source
        m = intercepted.metrics()
        assert m.value("damselfly_proxy_requests_total", path="intercept") == 1
        assert m.value("damselfly_proxy_requests_total", path="p2p") == 1

        # A client that does not trust the operator CA refuses the minted certificate.
        cp = curl(["--proxy", proxy, "--cacert", origin_ca_crt, org.url("/plain.txt")])
        assert cp.returncode == 60, (cp.returncode, cp.stderr)

        # Not intercepted (another daemon, no interception): CONNECT is a plain tunnel and the
        # client sees the origin's own certificate.
        tunnel = start_daemon(tmp_path, "d2", proxy_connect_ports="*")
        cp = curl(["-v", "--proxy", f"http://127.0.0.1:{tunnel.proxy_port}", "--cacert",
                   origin_ca_crt, org.url("/plain.txt")])
        assert cp.returncode == 0, cp.stderr.decode(errors="replace")[-1500:]
        assert cp.stdout == b"hello through the tunnel\n"
        assert b"damselfly test origin CA" in cp.stderr
    finally:
        org.stop()
