"""Content freshness and task identity (issue 11 item 4, issue 12 item 2): revalidation of
cached URL tasks with conditional requests, validators kept across a restart, the proxy's
validators and 304s, and the headers that select content (Host, Vary) never poisoning the
cache for other users of a URL.

Each test runs its own origin (FreshOrigin below): versions per path with ETag and
Last-Modified, ranges, conditional requests answered with 304, optional Host or Vary
variants, and a log of every request with its status and body bytes.
"""

import hashlib
import http.client
import http.server
import os
import threading
import time

import pytest
from harness import (describe, run_get, scaled, serve_http, start_cluster, start_daemon)

LM1 = "Mon, 01 Jan 2024 00:00:00 GMT"
LM2 = "Tue, 02 Jan 2024 00:00:00 GMT"


def sha(b):
    return hashlib.sha256(b).hexdigest()


class FreshOrigin:
    """paths maps a path to (data, etag, last_modified). host_variants[path] maps a Host
    header value to other bytes served for it; vary[path] = (header, {value: bytes}) serves
    other bytes when the request carries that header, and names it in Vary. Every request
    is logged as (path, status, body bytes, headers)."""

    def __init__(self):
        self.paths = {}
        self.host_variants = {}
        self.vary = {}
        self.lock = threading.Lock()
        self.log = []
        self.down = False  # True: every request is dropped without an answer
        self.srv = serve_http(self._handler())
        self.port = self.srv.server_address[1]

    def url(self, path):
        return f"http://127.0.0.1:{self.port}{path}"

    def set(self, path, data, etag, lm):
        with self.lock:
            self.paths[path] = (data, etag, lm)

    def requests(self, path):
        with self.lock:
            return [r for r in self.log if r[0] == path]

    def close(self):
        self.srv.shutdown()
        self.srv.server_close()

    def _handler(self):
        origin = self

        class H(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def do_GET(self):
                if origin.down:
                    self.close_connection = True
                    return
                with origin.lock:
                    entry = origin.paths.get(self.path)
                    hv = origin.host_variants.get(self.path, {})
                    vary = origin.vary.get(self.path)
                headers = {k.lower(): v for k, v in self.headers.items()}
                if entry is None:
                    return self._send(404, b"", {}, headers)
                data, etag, lm = entry
                extra = {"ETag": etag, "Last-Modified": lm,
                         "Content-Type": "text/x-fresh"}
                host = headers.get("host", "")
                if host in hv:
                    data = hv[host]
                    extra["ETag"] = '"host-' + host + '"'
                if vary:
                    name, variants = vary
                    extra["Vary"] = name
                    v = headers.get(name.lower())
                    if v in variants:
                        data = variants[v]
                        extra["ETag"] = '"vary-' + v + '"'
                inm = headers.get("if-none-match")
                ims = headers.get("if-modified-since")
                if (inm is not None and inm == extra["ETag"]) or \
                        (inm is None and ims is not None and ims == lm):
                    return self._send(304, b"", {"ETag": extra["ETag"], "Last-Modified": lm},
                                      headers)
                rng = headers.get("range")
                status, body = 200, data
                if rng and rng.startswith("bytes="):
                    a, _, b = rng[6:].partition("-")
                    start = int(a)
                    end = min(int(b), len(data) - 1) if b else len(data) - 1
                    status, body = 206, data[start:end + 1]
                    extra["Content-Range"] = f"bytes {start}-{end}/{len(data)}"
                self._send(status, body, extra, headers)

            def _send(self, status, body, extra, headers):
                with origin.lock:
                    origin.log.append((self.path, status, len(body), headers))
                self.send_response(status)
                for k, v in extra.items():
                    self.send_header(k, v)
                if status != 304:
                    self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                try:
                    self.wfile.write(body)
                except OSError:
                    pass

        return H


@pytest.fixture
def fresh_origin():
    o = FreshOrigin()
    yield o
    o.close()


def get_bytes(d, url, out, *args):
    cp = run_get(d, url, out, *args, timeout=30)
    assert cp.returncode == 0, f"get on {d.name}: {describe(cp)}"
    return out.read_bytes()


def reval(d, result):
    return d.metric("damselfly_revalidations_total", result=result)


@pytest.mark.deadline(60)
def test_revalidation_new_version_and_304(tmp_path, fresh_origin, need_binary):
    """Two daemons of a cluster cache v1. Within --revalidate-after a get asks nobody; after
    it, an unchanged file costs one 304 and no body; a file changed at the origin (same
    length, new ETag) is fetched again and every later get returns the new bytes exactly,
    on both hosts."""
    o = fresh_origin
    v1, v2 = b"1" * 300000, b"2" * 300000
    o.set("/f", v1, '"v1"', LM1)
    url = o.url("/f")
    c = start_cluster(tmp_path, daemons=2, daemon_flags={"revalidate_after": "2s"})
    d1, d2 = c.daemons
    assert get_bytes(d1, url, tmp_path / "out-a1") == v1
    assert get_bytes(d2, url, tmp_path / "out-a2") == v1
    before = len(o.requests("/f"))
    # Inside the window: served from the cache, the origin is not asked.
    assert get_bytes(d1, url, tmp_path / "out-b1") == v1
    assert len(o.requests("/f")) == before
    time.sleep(2.2)
    # Unchanged after the window: exactly one conditional request, answered 304, no body.
    assert get_bytes(d1, url, tmp_path / "out-c1") == v1
    new = o.requests("/f")[before:]
    assert [(r[1], r[2]) for r in new] == [(304, 0)], new
    assert new[0][3].get("if-none-match") == '"v1"'
    assert reval(d1, "not_modified") == 1
    # Changed at the origin, same length: still v1 inside the window (documented) ...
    o.set("/f", v2, '"v2"', LM2)
    assert get_bytes(d1, url, tmp_path / "out-d1") == v1
    time.sleep(2.2)
    # ... and exactly v2 after it, on both hosts (d2 had v1 cached too).
    assert get_bytes(d1, url, tmp_path / "out-e1") == v2
    assert get_bytes(d2, url, tmp_path / "out-e2") == v2
    assert reval(d1, "modified") == 1 and reval(d2, "modified") == 1
    # The new version is cached: the next get inside the window asks nobody.
    n = len(o.requests("/f"))
    assert get_bytes(d2, url, tmp_path / "out-f2") == v2
    assert len(o.requests("/f")) == n
    print(f"origin requests for /f: {[(r[1], r[2]) for r in o.requests('/f')]}")


@pytest.mark.deadline(60)
def test_restart_keeps_pinned_validators(tmp_path, fresh_origin, need_binary):
    """The validators are in the store: after a daemon restart the revalidation sends the
    pinned ETag and Last-Modified, gets a 304, and no body crosses the wire."""
    o = fresh_origin
    data = bytes(range(256)) * 1000
    o.set("/r", data, '"r1"', LM1)
    url = o.url("/r")
    d = start_daemon(tmp_path, "d1", revalidate_after="0s")
    assert get_bytes(d, url, tmp_path / "out-o1") == data
    d.stop()
    d.restart()
    n = len(o.requests("/r"))
    assert get_bytes(d, url, tmp_path / "out-o2") == data
    new = o.requests("/r")[n:]
    assert [(r[1], r[2]) for r in new] == [(304, 0)], new
    assert new[0][3].get("if-none-match") == '"r1"'
    assert new[0][3].get("if-modified-since") == LM1


@pytest.mark.deadline(60)
def test_unreachable_origin_serves_cache_unless_fresh_required(tmp_path, fresh_origin,
                                                               need_binary):
    """The origin is gone when the cached copy is due: get serves the cache (and the daemon
    logs it); get --require-fresh fails with a clear message and leaves no output."""
    o = fresh_origin
    o.set("/u", b"u" * 5000, '"u1"', LM1)
    url = o.url("/u")
    d = start_daemon(tmp_path, "d1", revalidate_after="0s")
    assert get_bytes(d, url, tmp_path / "out-o1") == b"u" * 5000
    o.down = True
    assert get_bytes(d, url, tmp_path / "out-o2") == b"u" * 5000
    assert b"serving the cached copy without revalidation" in d.log_bytes()
    cp = run_get(d, url, tmp_path / "out-o3", "--require-fresh", timeout=30)
    assert cp.returncode != 0
    assert b"fresh content is required" in cp.stderr, describe(cp)
    assert not (tmp_path / "out-o3").exists()
    assert reval(d, "error") == 2


def proxy_get(d, url, headers=None):
    """A GET of url through d's forward proxy; returns (status, headers dict, body)."""
    conn = http.client.HTTPConnection("127.0.0.1", d.proxy_port, timeout=scaled(20))
    try:
        conn.request("GET", url, headers=headers or {})
        r = conn.getresponse()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
    finally:
        conn.close()


RULES = """proxy-rules:
  - regex: '/p2p/'
    p2p: true
  - regex: '.*'
    p2p: false
"""


@pytest.mark.deadline(60)
def test_proxy_passes_validators_and_answers_304(tmp_path, fresh_origin, need_binary):
    """Through the proxy (a P2P rule): the origin's ETag, Last-Modified and Content-Type
    come with the content; a client's If-None-Match or If-Modified-Since that matches gets
    a 304 without body from the cache; one that does not gets the content."""
    o = fresh_origin
    data = b"p" * 200000
    o.set("/p2p/x", data, '"px"', LM1)
    url = o.url("/p2p/x")
    cfg = tmp_path / "daemon.yaml"
    cfg.write_text(RULES)
    d = start_daemon(tmp_path, "d1", config=cfg, revalidate_after="10m")
    status, h, body = proxy_get(d, url)
    assert status == 200 and body == data
    assert h.get("etag") == '"px"' and h.get("last-modified") == LM1, h
    assert h.get("content-type") == "text/x-fresh", h
    n = len(o.requests("/p2p/x"))
    status, h, body = proxy_get(d, url, {"If-None-Match": '"px"'})
    assert status == 304 and body == b"", (status, h)
    assert h.get("etag") == '"px"'
    status, _, body = proxy_get(d, url, {"If-Modified-Since": LM1})
    assert status == 304 and body == b""
    status, _, body = proxy_get(d, url, {"If-None-Match": '"other"'})
    assert status == 200 and body == data
    assert len(o.requests("/p2p/x")) == n, "the conditional requests reached the origin"


@pytest.mark.deadline(60)
def test_host_header_cannot_poison_the_url(tmp_path, fresh_origin, need_binary):
    """A get with its own Host header makes the origin return other bytes: they are a task
    of their own (Host is part of the task ID), so the URL's users on the same daemon and on
    another host of the cluster get the origin's real content."""
    o = fresh_origin
    real, evil = b"R" * 250000, b"E" * 250000
    o.set("/h", real, '"h1"', LM1)
    o.host_variants["/h"] = {"evil.example": evil}
    url = o.url("/h")
    c = start_cluster(tmp_path, daemons=2)
    d1, d2 = c.daemons
    # The attacker first, so that a shared task would be filled with its bytes.
    assert get_bytes(d1, url, tmp_path / "out-evil", "-H", "Host: evil.example") == evil
    assert get_bytes(d1, url, tmp_path / "out-r1") == real
    assert get_bytes(d2, url, tmp_path / "out-r2") == real
    # A Host naming the URL's own authority is the same task as none.
    assert get_bytes(d2, url, tmp_path / "out-r3", "-H", f"Host: 127.0.0.1:{o.port}") == real


@pytest.mark.deadline(60)
def test_vary_and_cookie_are_not_shared(tmp_path, fresh_origin, need_binary):
    """The origin varies on a header the attacker's get sets (Vary): that answer is never
    cached for the URL; the attacker's get still works (directly from the origin) and the
    URL's other users get the real content. A Cookie header bypasses P2P likewise."""
    o = fresh_origin
    real, evil = b"V" * 250000, b"X" * 250000
    o.set("/v", real, '"v1"', LM1)
    o.vary["/v"] = ("X-Variant", {"evil": evil})
    url = o.url("/v")
    c = start_cluster(tmp_path, daemons=2)
    d1, d2 = c.daemons
    cp = run_get(d1, url, tmp_path / "out-evil", "-H", "X-Variant: evil", timeout=30)
    assert cp.returncode == 0, describe(cp)
    assert (tmp_path / "out-evil").read_bytes() == evil
    assert b"directly from the origin" in cp.stderr, describe(cp)
    assert get_bytes(d1, url, tmp_path / "out-r1") == real
    assert get_bytes(d2, url, tmp_path / "out-r2") == real
    # Cookie: the CLI says so and fetches directly; the daemon refuses it too.
    cp = run_get(d2, url, tmp_path / "out-c", "-H", "Cookie: s=1", timeout=30)
    assert cp.returncode == 0 and b"Cookie header selects content" in cp.stderr, describe(cp)
    assert (tmp_path / "out-c").read_bytes() == real
    for d in (d1, d2):
        log = d.log_bytes()
        assert b"s=1" not in log and b"evil" not in log


@pytest.mark.deadline(60)
def test_proxy_revalidates_rule_tasks(tmp_path, fresh_origin, need_binary):
    """A P2P-rule URL cached by the proxy is revalidated like a get's: an unchanged file
    costs one 304, a changed one (same length) is served new, exactly."""
    o = fresh_origin
    v1, v2 = b"a" * 150000, b"b" * 150000
    o.set("/p2p/r", v1, '"r1"', LM1)
    url = o.url("/p2p/r")
    cfg = tmp_path / "daemon.yaml"
    cfg.write_text(RULES)
    d = start_daemon(tmp_path, "d1", config=cfg, revalidate_after="0s")
    assert proxy_get(d, url)[2] == v1
    n = len(o.requests("/p2p/r"))
    status, h, body = proxy_get(d, url)
    assert status == 200 and body == v1
    assert [(r[1], r[2]) for r in o.requests("/p2p/r")[n:]] == [(304, 0)]
    o.set("/p2p/r", v2, '"r2"', LM2)
    status, h, body = proxy_get(d, url)
    assert status == 200 and body == v2 and h.get("etag") == '"r2"', (status, h)
    assert reval(d, "not_modified") == 1 and reval(d, "modified") == 1


@pytest.mark.deadline(90)
def test_p2p_served_response_has_the_origins_content_type(tmp_path, fresh_origin,
                                                          need_binary):
    """A daemon that got a task only from peers (the seed fetched it) serves it through the
    proxy with the origin's Content-Type, carried from the seed through the scheduler's
    TaskMeta, not application/octet-stream."""
    o = fresh_origin
    data = os.urandom(600000)
    o.set("/p2p/typed", data, '"t1"', LM1)
    url = o.url("/p2p/typed")
    cfg = tmp_path / "daemon.yaml"
    cfg.write_text(RULES)
    c = start_cluster(tmp_path, daemons=2, daemon_flags={"config": cfg})
    d1, d2 = c.daemons
    status, h, body = proxy_get(d1, url)
    assert status == 200 and body == data, (status, h)
    assert h.get("content-type") == "text/x-fresh", h
    status, h, body = proxy_get(d2, url)
    assert status == 200 and body == data, (status, h)
    assert h.get("content-type") == "text/x-fresh", h
    # Neither daemon asked the origin for the content: the seed did, once (after a
    # one-byte probe).
    full = [(r[1], r[2]) for r in o.requests("/p2p/typed") if r[1] in (200, 206)]
    print(f"origin content requests: {full}")
    assert sum(n for _, n in full) <= len(data) + 1, full
