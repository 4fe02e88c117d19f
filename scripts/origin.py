#!/usr/bin/python3
"""A small HTTP origin for damselfly's tests and demo.

It counts every request and every body byte it sends, keeps a log of the requests it
received (with their headers, for assertions only: nothing here ever prints a header
value), and can behave like the awkward origins found in the wild:

  ranges       True: single "Range: bytes=a-b" requests get 206; False: Range is ignored
  length_mode  "length": Content-Length; "close": no length, the body ends when the
               connection closes; "chunked": Transfer-Encoding: chunked. Without a length,
               Range is ignored too (the origin does not know what it is serving).
  throttle     bytes per second shared by every response of this origin (None = unlimited)
  require      headers a request must carry (e.g. Authorization), else 401

Used two ways:
  * in-process (pytest): Origin(...).start(); origin.add_file("/f", path); origin.url("/f")
  * as a program (demo.sh): origin.py --dir DIR --port-file F [--no-ranges] [--length close]
    serves DIR's files at /<name>; GET /__origin/stats returns the counters as JSON (that
    request is not counted).
"""

import argparse
import hashlib
import http.server
import json
import os
import re
import signal
import socket
import sys
import threading
import time
from pathlib import Path

STATS_PATH = "/__origin/stats"
_RANGE_RE = re.compile(r"^bytes=(\d*)-(\d*)$")
_SECRET_HEADERS = {"authorization", "proxy-authorization", "cookie", "x-api-key"}


class OriginRequest:
    """One request the origin received. headers maps lower-case names to values."""

    def __init__(self, method, path, query, headers):
        self.method = method
        self.path = path
        self.query = query
        self.headers = headers
        self.range = headers.get("range")
        self.status = None
        self.sent = 0  # body bytes written to the socket
        self.time = time.monotonic()

    def __repr__(self):
        # Secret header values never appear in a repr (pytest prints reprs on failure).
        shown = {k: ("<redacted>" if k in _SECRET_HEADERS else v) for k, v in self.headers.items()}
        return (f"OriginRequest({self.method} {self.path} status={self.status} "
                f"sent={self.sent} headers={shown})")


class OriginFile:
    def __init__(self, size, sha256, data=None, path=None, ranges=None, length_mode=None,
                 require=None, gen=None):
        self.size = size
        self.sha256 = sha256
        self.data = data
        self.path = path
        self.gen = gen  # a Generated: the bytes are made as they are sent
        self.ranges = ranges
        self.length_mode = length_mode
        self.require = dict(require or {})


class Origin:
    def __init__(self, host="127.0.0.1", port=0):
        self.host = host
        self.port = port
        self.files = {}
        self.ranges = True
        self.length_mode = "length"
        self.throttle = None
        self.lock = threading.Lock()
        self.requests = []
        self.bytes_sent = 0
        self.bytes_by_path = {}
        self._next_slot = 0.0
        self._stopping = False
        self._server = None
        self._thread = None

    # ---- content -------------------------------------------------------------------
    def add_bytes(self, path, data, **opts):
        """Serves data (bytes) at path; returns its SHA-256 hex."""
        data = bytes(data)
        sha = hashlib.sha256(data).hexdigest()
        self.files[path] = OriginFile(len(data), sha, data=data, **opts)
        return sha

    def add_file(self, path, file_path, sha256=None, **opts):
        """Serves the file at file_path (sent with sendfile); returns its SHA-256 hex."""
        file_path = Path(file_path)
        if sha256 is None:
            sha256 = sha256_file(file_path)
        self.files[path] = OriginFile(file_path.stat().st_size, sha256, path=file_path, **opts)
        return sha256

    def add_random(self, path, size, directory, **opts):
        """Writes size random bytes to a file in directory and serves it; returns SHA-256."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        fp = directory / ("origin-" + path.strip("/").replace("/", "_"))
        h = hashlib.sha256()
        with open(fp, "wb") as f:
            left = size
            while left > 0:
                chunk = os.urandom(min(left, 4 << 20))
                h.update(chunk)
                f.write(chunk)
                left -= len(chunk)
        return self.add_file(path, fp, sha256=h.hexdigest(), **opts)

    def add_generated(self, path, size, seed=0, **opts):
        """Serves size bytes made on the fly by Generated(size, seed): nothing on disk or in
        memory beyond one block, for contents of gigabytes. Returns the Generated (its
        sha256() streams the whole content once: call it off the critical path)."""
        g = Generated(size, seed)
        self.files[path] = OriginFile(size, None, gen=g, **opts)
        return g

    # ---- counters ------------------------------------------------------------------
    def request_count(self, path=None):
        with self.lock:
            return sum(1 for r in self.requests if path is None or r.path == path)

    def requests_for(self, path=None):
        with self.lock:
            return [r for r in self.requests if path is None or r.path == path]

    def sent(self, path=None):
        with self.lock:
            return self.bytes_sent if path is None else self.bytes_by_path.get(path, 0)

    def reset_counters(self):
        with self.lock:
            self.requests = []
            self.bytes_sent = 0
            self.bytes_by_path = {}

    def stats(self):
        with self.lock:
            return {
                "requests": len(self.requests),
                "bytes_sent": self.bytes_sent,
                "by_path": {p: {"bytes_sent": b,
                                "requests": sum(1 for r in self.requests if r.path == p)}
                            for p, b in self.bytes_by_path.items()},
            }

    # ---- lifecycle -----------------------------------------------------------------
    def url(self, path):
        return f"http://{self.host}:{self.port}{path}"

    def start(self):
        origin = self

        class Handler(_Handler):
            pass

        Handler.origin = origin
        self._server = _Server((self.host, self.port), Handler)
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        kwargs={"poll_interval": 0.1}, daemon=True,
                                        name="origin")
        self._thread.start()
        return self

    def stop(self):
        self._stopping = True
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    # ---- internals -----------------------------------------------------------------
    def _record(self, req):
        with self.lock:
            self.requests.append(req)

    def _count(self, req, n):
        with self.lock:
            req.sent += n
            self.bytes_sent += n
            self.bytes_by_path[req.path] = self.bytes_by_path.get(req.path, 0) + n

    def _pace(self, n):
        """Waits for the shared token bucket to allow n more bytes."""
        rate = self.throttle
        if not rate:
            return
        with self.lock:
            now = time.monotonic()
            start = max(now, self._next_slot)
            self._next_slot = start + n / float(rate)
        if start > now:
            time.sleep(start - now)


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128


class _Handler(http.server.BaseHTTPRequestHandler):
    origin = None
    protocol_version = "HTTP/1.1"
    server_version = "damselfly-test-origin"
    timeout = 60

    def log_message(self, fmt, *args):  # silent: never print requests (or their headers)
        pass

    def do_HEAD(self):
        self._serve(head=True)

    def do_GET(self):
        self._serve(head=False)

    def _serve(self, head):
        o = self.origin
        path, _, query = self.path.partition("?")
        if path == STATS_PATH:
            body = json.dumps(o.stats()).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if not head:
                self.wfile.write(body)
            return
        headers = {k.lower(): v for k, v in self.headers.items()}
        req = OriginRequest(self.command, path, query, headers)
        o._record(req)
        f = o.files.get(path)
        if f is None:
            return self._simple(req, 404, b"not found\n", head)
        for name, want in f.require.items():
            if headers.get(name.lower()) != want:
                return self._simple(req, 401, b"unauthorized\n", head)

        ranges = o.ranges if f.ranges is None else f.ranges
        mode = o.length_mode if f.length_mode is None else f.length_mode
        start, count, status = 0, f.size, 200
        rng = headers.get("range")
        if rng and ranges and mode == "length":
            m = _RANGE_RE.match(rng.strip())
            if m and (m.group(1) or m.group(2)):
                a, b = m.group(1), m.group(2)
                if a == "":  # suffix range: the last b bytes
                    n = min(int(b), f.size)
                    start, end = f.size - n, f.size - 1
                else:
                    start = int(a)
                    end = min(int(b), f.size - 1) if b else f.size - 1
                if start >= f.size or end < start:
                    req.status = 416
                    self.send_response(416)
                    self.send_header("Content-Range", f"bytes */{f.size}")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                count, status = end - start + 1, 206

        req.status = status
        self.send_response(status)
        self.send_header("Content-Type", "application/octet-stream")
        if ranges and mode == "length":
            self.send_header("Accept-Ranges", "bytes")
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{start + count - 1}/{f.size}")
        if mode == "length":
            self.send_header("Content-Length", str(count))
        elif mode == "chunked":
            self.send_header("Transfer-Encoding", "chunked")
        else:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        if head:
            return
        try:
            self._body(req, f, start, count, chunked=(mode == "chunked"))
            if mode == "chunked":
                self.wfile.write(b"0\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError, socket.timeout, OSError):
            self.close_connection = True

    def _simple(self, req, status, body, head):
        req.status = status
        self.send_response(status)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if not head:
            self.wfile.write(body)

    def _body(self, req, f, start, count, chunked):
        o = self.origin
        throttled = bool(o.throttle)
        if throttled:
            step = int(max(4096, min(64 << 10, o.throttle // 20)))
        else:
            step = 1 << 20
        fh = open(f.path, "rb") if f.path is not None else None
        try:
            pos, end = start, start + count
            while pos < end and not o._stopping:
                n = min(step, end - pos)
                o._pace(n)
                if fh is not None and not chunked:
                    sent = self.connection.sendfile(fh, pos, n)
                    if sent <= 0:
                        raise BrokenPipeError()
                    n = sent
                else:
                    if fh is not None:
                        fh.seek(pos)
                        buf = fh.read(n)
                    elif f.gen is not None:
                        buf = f.gen.read(pos, n)
                    else:
                        buf = memoryview(f.data)[pos:pos + n]
                    if chunked:
                        self.wfile.write(b"%x\r\n" % len(buf))
                        self.wfile.write(buf)
                        self.wfile.write(b"\r\n")
                    else:
                        self.wfile.write(buf)
                o._count(req, n)
                pos += n
        finally:
            if fh is not None:
                fh.close()


class Generated:
    """Deterministic content of any size: block k (1 MiB) is one fixed pseudo-random block
    whose first 8 bytes are replaced by k, so no two blocks (and no two pieces) are alike."""

    BLOCK = 1 << 20

    def __init__(self, size, seed=0):
        import random
        self.size = size
        self.base = random.Random(seed).randbytes(self.BLOCK)

    def _block(self, k):
        return k.to_bytes(8, "little") + self.base[8:]

    def read(self, pos, n):
        """The n bytes at pos (clipped to the content)."""
        n = max(0, min(n, self.size - pos))
        out = bytearray()
        while n > 0:
            k, off = divmod(pos, self.BLOCK)
            take = min(n, self.BLOCK - off)
            out += memoryview(self._block(k))[off:off + take]
            pos += take
            n -= take
        return bytes(out)

    def sha256(self):
        h = hashlib.sha256()
        for pos in range(0, self.size, self.BLOCK):
            h.update(self.read(pos, self.BLOCK))
        return h.hexdigest()


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            b = f.read(4 << 20)
            if not b:
                break
            h.update(b)
    return h.hexdigest()


def main(argv=None):
    ap = argparse.ArgumentParser(description="test origin: serves DIR's files at /<name>")
    ap.add_argument("--dir", required=True, help="directory whose files are served")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--port-file", help="write the bound port here once listening")
    ap.add_argument("--no-ranges", action="store_true", help="ignore Range requests")
    ap.add_argument("--length", choices=["length", "close", "chunked"], default="length",
                    help="how the body length is conveyed")
    ap.add_argument("--throttle", type=int, default=0, help="bytes/s for all responses")
    args = ap.parse_args(argv)

    origin = Origin(args.host, args.port)
    origin.ranges = not args.no_ranges
    origin.length_mode = args.length
    origin.throttle = args.throttle or None
    for p in sorted(Path(args.dir).iterdir()):
        if p.is_file():
            origin.add_file("/" + p.name, p)
    origin.start()
    if args.port_file:
        tmp = args.port_file + ".tmp"
        with open(tmp, "w") as f:
            f.write(f"{origin.port}\n")
        os.rename(tmp, args.port_file)
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *a: done.set())
    signal.signal(signal.SIGINT, lambda *a: done.set())
    while not done.wait(0.5):
        pass
    origin.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
