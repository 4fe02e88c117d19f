"""The data plane between daemons over mutual TLS, and piece-fetch tokens (issue 12, items 3
and 4): with --tls-* the piece port speaks only HTTPS and wants a certificate of the
cluster CA; with --cluster-key-file a task's /pieces and /have are served only to a host
holding the scheduler's token for that task and that host (the CN of its certificate).
The attacking clients are Python's ssl and http.client; tokens are made here with hmac in
the daemons' format, to test expiry and forgery."""

import hashlib
import hmac
import http.client
import os
import re
import signal
import socket
import ssl
import time

import pytest

from harness import (MiB, describe, make_certs, run_get, scaled, sha256_file, start_daemon,
                     start_scheduler, task_id, tls_client_context, tls_flags, wait_hosts,
                     wait_until)

PIECE = 256 * 1024  # the piece length of the files below (harness.piece_length_for)
TOKEN_HEADER = "X-Damselfly-Piece-Token"
HOST_HEADER = "X-Damselfly-Host-Id"


def mint(key, task, host, expiry):
    """A piece-fetch token as src/common/piece_token.c makes it."""
    msg = f"damselfly-piece-token-v1\n{task}\n{host}\n{expiry}".encode()
    return f"v1.{expiry}." + hmac.new(key, msg, hashlib.sha256).hexdigest()


def cluster_key(tmp_path):
    path = tmp_path / "cluster.key"
    key = os.urandom(48)
    path.write_bytes(key)
    os.chmod(path, 0o600)
    return path, key


def request(port, path, tls, headers=None, timeout=10):
    """GET path on 127.0.0.1:port over TLS (tls: an ssl context); (status, body, reason)."""
    conn = http.client.HTTPSConnection("127.0.0.1", port, timeout=scaled(timeout), context=tls)
    try:
        conn.request("GET", path, headers=headers or {})
        r = conn.getresponse()
        body = r.read() if path.startswith("/pieces/") or r.status != 200 else r.read(64)
        return r.status, body, r.reason
    finally:
        conn.close()


def denied(d):
    m = d.metrics()
    return {r: m.value("damselfly_piece_auth_denied_total", reason=r)
            for r in ("missing", "malformed", "expired", "forged")}


def start_tls_cluster(tmp_path, scheduler_flags=None, daemon_flags=None):
    """A scheduler, a seed and three daemons, all with certificates of one CA and the
    cluster key; "outsider" has a valid certificate too, and runs nothing. daemon_flags
    maps a daemon's name to more flags."""
    hosts = {"scheduler": "scheduler", "seed": "seed", "d1": "peer", "d2": "peer", "d3": "peer",
             "outsider": "peer"}
    certs = make_certs(tmp_path / "certs", hosts)
    keyfile, key = cluster_key(tmp_path)
    s = start_scheduler(tmp_path, cluster_key_file=str(keyfile), **tls_flags(certs, "scheduler"),
                        **(scheduler_flags or {}))
    kw = {"cluster_key_file": str(keyfile)}
    seed = start_daemon(tmp_path, "seed", scheduler=s, seed=True, **kw, **tls_flags(certs, "seed"))
    ds = [start_daemon(tmp_path, n, scheduler=s, **kw, **tls_flags(certs, n),
                       **(daemon_flags or {}).get(n, {}))
          for n in ("d1", "d2", "d3")]
    wait_hosts(s, 4)
    return {"scheduler": s, "seed": seed, "daemons": ds, "certs": certs, "key": key,
            "tmp": tmp_path}


@pytest.fixture
def tls_cluster(tmp_path, origin, need_binary):
    return start_tls_cluster(tmp_path)


@pytest.mark.deadline(240)
def test_tls_cluster_with_tokens_distributes_from_peers(tls_cluster, origin):
    c = tls_cluster
    tmp = c["tmp"]
    d1, d2, d3 = c["daemons"]
    size = 6 * MiB + 12345  # 25 pieces of 256 KiB, the last one short
    sha = origin.add_random("/tls.bin", size, tmp / "origin")
    url = origin.url("/tls.bin")

    cp = run_get(d1, url, tmp / "out-d1", timeout=90)
    assert cp.returncode == 0, describe(cp)
    for d in (d2, d3):
        cp = run_get(d, url, tmp / f"out-{d.name}", timeout=90)
        assert cp.returncode == 0, f"{d.name}: {describe(cp)}"
    for d in (d1, d2, d3):
        assert sha256_file(tmp / f"out-{d.name}") == sha, f"{d.name}: content differs"

    # The bytes crossed between daemons (over HTTPS: the piece ports speak nothing else)...
    peer = {d.name: d.metrics().value("damselfly_download_bytes_total", source="peer")
            for d in (d2, d3)}
    seed = {d.name: d.metrics().value("damselfly_download_bytes_total", source="seed")
            for d in (d1, d2, d3)}
    print(f"from peers {peer}, from the seed {seed}")
    assert sum(peer.values()) > 0, f"no bytes from peers: {peer}"
    # ...and no child was refused on the way: each carried its token.
    for d in [c["seed"]] + c["daemons"]:
        assert sum(denied(d).values()) == 0, f"{d.name} refused requests: {denied(d)}"
    logs = b"".join(d.log_bytes() for d in [c["seed"]] + c["daemons"])
    assert not re.search(rb"v1\.[0-9]+\.[0-9a-f]{64}", logs), "a piece-fetch token in a log"
    assert c["key"] not in logs


@pytest.mark.deadline(240)
def test_member_without_a_token_for_the_task_gets_403(tls_cluster, origin):
    c = tls_cluster
    tmp, certs, key = c["tmp"], c["certs"], c["key"]
    d1 = c["daemons"][0]
    size = 2 * MiB + 777
    origin.add_random("/held.bin", size, tmp / "origin")
    url = origin.url("/held.bin")
    cp = run_get(d1, url, tmp / "out-d1", timeout=90)
    assert cp.returncode == 0, describe(cp)
    content = (tmp / "out-d1").read_bytes()
    tid = task_id(url)
    other_tid = task_id(origin.url("/another.bin"))
    outsider = tls_client_context(tls_flags(certs, "outsider"))
    now = int(time.time())
    before = denied(d1)

    cases = [  # (what, headers, the reason the daemon counts)
        ("no token", {}, "missing"),
        ("a malformed token", {TOKEN_HEADER: "v1.123.nothex"}, "malformed"),
        ("a token for another task", {TOKEN_HEADER: mint(key, other_tid, "outsider", now + 600)},
         "forged"),
        ("a token minted for another host",
         {TOKEN_HEADER: mint(key, tid, "d2", now + 600), HOST_HEADER: "d2"}, "forged"),
        ("an expired token", {TOKEN_HEADER: mint(key, tid, "outsider", now - 5)}, "expired"),
        ("a token made with another key",
         {TOKEN_HEADER: mint(os.urandom(48), tid, "outsider", now + 600)}, "forged"),
    ]
    want = dict(before)
    for what, headers, reason in cases:
        for path in (f"/pieces/{tid}/0", f"/have/{tid}"):
            status, body, _ = request(d1.piece_port, path, outsider, headers)
            assert status == 403, f"{path} with {what}: {status} {body[:80]!r}"
            assert reason.encode() in body, f"{path} with {what}: {body!r}"
            want[reason] += 1
    got = denied(d1)
    assert got == want, f"denials counted {got}, expected {want} (before {before})"

    # The control: the same member with a true token for itself gets the pieces, byte-exact
    # over TLS (a full 256 KiB piece and the short last one: no sendfile on this path).
    good = {TOKEN_HEADER: mint(key, tid, "outsider", now + 600)}
    last = (size - 1) // PIECE
    for n in (0, 1, last):
        status, body, reason = request(d1.piece_port, f"/pieces/{tid}/{n}", outsider, good)
        assert status == 200, f"piece {n} with a valid token: {status} {reason}"
        assert body == content[n * PIECE:(n + 1) * PIECE], f"piece {n}: bytes differ"
    status, body, _ = request(d1.piece_port, f"/have/{tid}", outsider, good)
    assert status == 200 and body.startswith(b"have 0\n"), (status, body)
    # /metrics is not token-checked (a certificate is still needed).
    status, _, _ = request(d1.piece_port, "/metrics", outsider)
    assert status == 200
    assert denied(d1) == want
    # The token never reaches the log; the refusals are there, at most one per 10 s.
    log = d1.log_bytes()
    assert good[TOKEN_HEADER].encode() not in log
    assert all(h[TOKEN_HEADER].encode() not in log for _, h, _ in cases if h)
    assert 1 <= log.count(b"piece-fetch token (") <= 2, log.count(b"piece-fetch token (")


def _no_http_answer(port, ctx):
    """True when a GET over TLS with ctx gets no HTTP response (the handshake or the
    connection fails instead)."""
    try:
        status, _, _ = request(port, "/metrics", ctx, timeout=5)
    except (ssl.SSLError, ConnectionError, http.client.HTTPException, socket.timeout, OSError):
        return True
    return False


@pytest.mark.deadline(120)
def test_piece_port_refuses_clients_without_a_cluster_certificate(tmp_path, need_binary):
    certs = make_certs(tmp_path / "certs", {"d1": "peer", "outsider": "peer"})
    other = make_certs(tmp_path / "other-ca", {"outsider": "peer"})  # same CN, another CA
    keyfile, _ = cluster_key(tmp_path)
    d1 = start_daemon(tmp_path, "d1", cluster_key_file=str(keyfile), piece_header_timeout="1s",
                      **tls_flags(certs, "d1"))

    # The control: a certificate of the cluster CA gets an answer.
    assert request(d1.piece_port, "/metrics", tls_client_context(tls_flags(certs, "outsider"))
                   )[0] == 200

    # (c) No client certificate: the handshake is refused, no request completes.
    bare = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    bare.check_hostname = False
    bare.load_verify_locations(cafile=str(certs / "ca.pem"))
    assert _no_http_answer(d1.piece_port, bare)

    # (d) A certificate from another CA (even one naming a cluster host) is refused.
    foreign = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    foreign.check_hostname = False
    foreign.load_verify_locations(cafile=str(certs / "ca.pem"))
    foreign.load_cert_chain(str(other / "outsider.pem"), str(other / "outsider.key"))
    assert _no_http_answer(d1.piece_port, foreign)

    # Plain HTTP gets no HTTP answer either.
    with socket.create_connection(("127.0.0.1", d1.piece_port), timeout=scaled(5)) as s:
        s.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        try:
            got = s.recv(4096)
        except OSError:
            got = b""
    assert not got.startswith(b"HTTP/"), got[:80]

    # A connection that never completes a handshake is closed by the request-head deadline
    # (--piece-header-timeout 1s), as a plain one would be.
    with socket.create_connection(("127.0.0.1", d1.piece_port), timeout=scaled(10)) as s:
        start = time.monotonic()
        try:
            got = s.recv(4096)
        except OSError:
            got = b""
        took = time.monotonic() - start
    assert got == b"" and took < scaled(5), f"{got[:40]!r} after {took:.1f} s"
    assert d1.proc.alive()


@pytest.mark.deadline(240)
def test_tokens_are_renewed_during_a_long_download(tmp_path, origin, need_binary):
    """Tokens of 4 s, a download of about 12 s: the scheduler renews the child's token
    (at half its life) while the download runs, and no request is ever refused."""
    ttl = 4
    c = start_tls_cluster(tmp_path, scheduler_flags={"piece_token_ttl": f"{ttl}s"},
                          daemon_flags={"d2": {"download_limit": "512k"}})
    d1, d2, _ = c["daemons"]
    size = 6 * MiB
    sha = origin.add_random("/slow.bin", size, tmp_path / "origin")
    url = origin.url("/slow.bin")
    cp = run_get(d1, url, tmp_path / "out-d1", timeout=90)
    assert cp.returncode == 0, describe(cp)
    sent_before = origin.sent("/slow.bin")

    start = time.monotonic()
    cp = run_get(d2, url, tmp_path / "out-d2", timeout=120)
    took = time.monotonic() - start
    assert cp.returncode == 0, describe(cp)
    assert sha256_file(tmp_path / "out-d2") == sha
    assert took > 2 * ttl, f"the download took {took:.1f} s: too short to outlive a token"
    m = d2.metrics()
    p2p = sum(m.value("damselfly_download_bytes_total", source=s) for s in ("peer", "seed"))
    assert p2p >= size, f"d2 got {p2p} of {size} bytes from peers and the seed"
    assert origin.sent("/slow.bin") == sent_before, "d2 went to the origin"
    for d in (c["seed"], d1):
        assert sum(denied(d).values()) == 0, f"{d.name} refused d2: {denied(d)}"


@pytest.mark.deadline(180)
def test_tokens_without_tls_bind_the_claimed_host(tmp_path, origin, need_binary):
    """Without --tls-* the requester's host ID is the one it claims in X-Damselfly-Host-Id:
    children still fetch from peers with their tokens, a request without a token is
    refused, and a token is only good together with the host it names (weaker than TLS:
    whoever sees a token can replay it with that claim; docs/operations.md)."""
    keyfile, key = cluster_key(tmp_path)
    s = start_scheduler(tmp_path, cluster_key_file=str(keyfile))
    kw = {"cluster_key_file": str(keyfile)}
    seed = start_daemon(tmp_path, "seed", scheduler=s, seed=True, **kw)
    d1 = start_daemon(tmp_path, "d1", scheduler=s, **kw)
    d2 = start_daemon(tmp_path, "d2", scheduler=s, **kw)
    wait_hosts(s, 3)
    size = 3 * MiB + 99
    sha = origin.add_random("/plain.bin", size, tmp_path / "origin")
    url = origin.url("/plain.bin")
    for d in (d1, d2):
        cp = run_get(d, url, tmp_path / f"out-{d.name}", timeout=90)
        assert cp.returncode == 0, f"{d.name}: {describe(cp)}"
        assert sha256_file(tmp_path / f"out-{d.name}") == sha
    assert d2.metrics().value("damselfly_download_bytes_total", source="peer") > 0
    assert all(sum(denied(d).values()) == 0 for d in (seed, d1))

    tid = task_id(url)
    tok = mint(key, tid, "d2", int(time.time()) + 600)
    content = (tmp_path / "out-d1").read_bytes()

    def plain(headers):
        conn = http.client.HTTPConnection("127.0.0.1", d1.piece_port, timeout=scaled(10))
        try:
            conn.request("GET", f"/pieces/{tid}/1", headers=headers)
            r = conn.getresponse()
            return r.status, r.read()
        finally:
            conn.close()

    before = denied(d1)
    assert plain({})[0] == 403
    assert plain({TOKEN_HEADER: tok})[0] == 403  # no host claimed
    assert plain({TOKEN_HEADER: tok, HOST_HEADER: "d3"})[0] == 403  # another host
    status, body = plain({TOKEN_HEADER: tok, HOST_HEADER: "d2"})
    assert status == 200 and body == content[PIECE:2 * PIECE]
    after = denied(d1)
    assert after["missing"] == before["missing"] + 1
    assert after["forged"] == before["forged"] + 2


@pytest.mark.deadline(180)
def test_children_without_tokens_are_refused_and_say_why(tmp_path, origin, need_binary):
    """Daemons with the cluster key under a scheduler without it: no child gets a token,
    every parent answers 403, and the child says so and fetches from the origin."""
    keyfile, _ = cluster_key(tmp_path)
    s = start_scheduler(tmp_path)
    kw = {"cluster_key_file": str(keyfile)}
    start_daemon(tmp_path, "seed", scheduler=s, seed=True, **kw)
    d1 = start_daemon(tmp_path, "d1", scheduler=s, **kw)
    d2 = start_daemon(tmp_path, "d2", scheduler=s, **kw)
    wait_hosts(s, 3)
    size = 1 * MiB + 5
    sha = origin.add_random("/nokey.bin", size, tmp_path / "origin")
    url = origin.url("/nokey.bin")
    for d in (d1, d2):
        cp = run_get(d, url, tmp_path / f"out-{d.name}", timeout=90)
        assert cp.returncode == 0, f"{d.name}: {describe(cp)}"
        assert sha256_file(tmp_path / f"out-{d.name}") == sha
    assert d2.metrics().value("damselfly_download_bytes_total", source="peer") == 0
    assert denied(d1)["missing"] >= 1, denied(d1)
    assert b"refused our piece-fetch token (403)" in d2.log_bytes()


def _server_cert(port, ctx):
    """The DER certificate the piece port presents to a new connection."""
    with socket.create_connection(("127.0.0.1", port), timeout=scaled(5)) as raw:
        with ctx.wrap_socket(raw) as s:
            return s.getpeercert(binary_form=True)


@pytest.mark.deadline(120)
def test_sighup_serves_a_rotated_certificate_to_new_connections(tmp_path, need_binary):
    certs = make_certs(tmp_path / "certs", {"d1": "peer", "outsider": "peer"})
    d1 = start_daemon(tmp_path, "d1", **tls_flags(certs, "d1"))
    ctx = tls_client_context(tls_flags(certs, "outsider"))
    der = lambda: ssl.PEM_cert_to_DER_cert((certs / "d1.pem").read_text())  # noqa: E731
    old = der()
    assert _server_cert(d1.piece_port, ctx) == old
    # A connection opened before the rotation stays usable after it.
    kept = http.client.HTTPSConnection("127.0.0.1", d1.piece_port, timeout=scaled(10),
                                       context=ctx)
    kept.request("GET", "/metrics")
    kept.getresponse().read()

    make_certs(certs, {"d1": "peer"})  # a new key and certificate for the same host
    new = der()
    assert new != old
    os.kill(d1.proc.pid, signal.SIGHUP)
    wait_until(lambda: _server_cert(d1.piece_port, ctx) == new, scaled(10),
               what="the rotated certificate on a new connection")
    kept.request("GET", "/metrics")
    r = kept.getresponse()
    assert r.status == 200 and b"damselfly_" in r.read()
    kept.close()
    assert b"SIGHUP: reloaded the TLS certificate" in d1.log_bytes()
