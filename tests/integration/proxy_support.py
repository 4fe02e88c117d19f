"""Support for the proxy tests: an OCI image built from scratch, a docker-registry with a
config file in the test's tmp dir, a bearer-token service, a CA, containerd.

Nothing here touches the internet: the image is made of random bytes, every server listens
on 127.0.0.1 with a free port, and every process is a harness.Proc (stopped by PID)."""

import base64
import gzip
import hashlib
import http.server
import io
import json
import os
import re
import subprocess
import tarfile
import socket
import threading
import time
from pathlib import Path

import harness
from harness import Proc, free_port, scaled, wait_port, wait_until


# ---- an OCI image from scratch -----------------------------------------------------------

def _blob(layout, data, media_type):
    d = hashlib.sha256(data).hexdigest()
    p = layout / "blobs" / "sha256" / d
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_bytes(data)
    return {"mediaType": media_type, "digest": f"sha256:{d}", "size": len(data)}


def _layer_tar(files):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for name, data in files.items():
            ti = tarfile.TarInfo(name)
            ti.size = len(data)
            ti.mode = 0o644
            ti.mtime = 1700000000
            tf.addfile(ti, io.BytesIO(data))
    return buf.getvalue()


def build_oci_image(layout, layer_sizes=(3 << 20, 1 << 20, 200 << 10), tag="v1", seed=b"img"):
    """Writes an OCI image layout at layout with one gzip layer per size (random content,
    incompressible, so a layer is about that many bytes). Returns a namespace with
    manifest_digest, config_digest, layers (list of descriptors), files ({path: sha256})."""
    layout = Path(layout)
    layout.mkdir(parents=True, exist_ok=True)
    (layout / "oci-layout").write_text(json.dumps({"imageLayoutVersion": "1.0.0"}))
    layers, diff_ids, files = [], [], {}
    for i, size in enumerate(layer_sizes):
        import random
        content = random.Random(seed + b"%d" % i).randbytes(size)  # incompressible
        name = f"layer{i}/data.bin"
        files[name] = hashlib.sha256(content).hexdigest()
        tar = _layer_tar({name: content})
        diff_ids.append("sha256:" + hashlib.sha256(tar).hexdigest())
        gz = gzip.compress(tar, compresslevel=1, mtime=0)
        layers.append(_blob(layout, gz, "application/vnd.oci.image.layer.v1.tar+gzip"))
    config = {
        "architecture": "amd64", "os": "linux",
        "config": {"Cmd": ["/layer0/data.bin"]},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        "history": [{"created_by": "damselfly test"} for _ in layers],
    }
    cfg = _blob(layout, json.dumps(config, sort_keys=True).encode(),
                "application/vnd.oci.image.config.v1+json")
    manifest = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "config": cfg, "layers": layers}
    mbytes = json.dumps(manifest, sort_keys=True).encode()
    m = _blob(layout, mbytes, "application/vnd.oci.image.manifest.v1+json")
    m["annotations"] = {"org.opencontainers.image.ref.name": tag}
    (layout / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": [m]}))
    import types
    return types.SimpleNamespace(layout=layout, tag=tag, manifest_digest=m["digest"],
                                 manifest=mbytes, config_digest=cfg["digest"], layers=layers,
                                 files=files)


# ---- docker-registry ---------------------------------------------------------------------

_ACCESS_RE = re.compile(rb'"(GET|HEAD|POST|PUT|PATCH|DELETE) (\S+) HTTP/[0-9.]+" (\d+) (\d+|-)')


class Registry:
    """The Debian docker-registry on 127.0.0.1 with a config file in the test's tmp dir.
    auth: None, ("htpasswd", path) or ("token", realm, service, issuer, root_cert_path).
    Its access log (in its log file) tells what it served."""

    def __init__(self, tmp_path, name="registry", auth=None):
        self.dir = Path(tmp_path) / name
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.name = name
        self.auth = auth
        self.proc = None

    @property
    def host(self):
        return f"127.0.0.1:{self.port}"

    @property
    def url(self):
        return f"http://{self.host}"

    def start(self):
        lines = ["version: 0.1", "log:", "  level: info", "  accesslog:", "    disabled: false",
                 "storage:", "  filesystem:", f"    rootdirectory: {self.dir / 'data'}",
                 "  delete:", "    enabled: true", "http:", f"  addr: {self.host}"]
        if self.auth and self.auth[0] == "htpasswd":
            lines += ["auth:", "  htpasswd:", "    realm: damselfly-test",
                      f"    path: {self.auth[1]}"]
        elif self.auth and self.auth[0] == "token":
            _, realm, service, issuer, cert = self.auth
            lines += ["auth:", "  token:", f"    realm: {realm}", f"    service: {service}",
                      f"    issuer: {issuer}", f"    rootcertbundle: {cert}"]
        cfg = self.dir / "config.yml"
        cfg.write_text("\n".join(lines) + "\n")
        self.proc = Proc(["docker-registry", "serve", cfg], Path(self.dir.parent) /
                         f"{self.name}.log", name=self.name)
        wait_port(self.port, scaled(20), self.proc)
        return self

    def requests(self):
        """[(method, path, status, bytes)] from the access log, in order."""
        out = []
        for m in _ACCESS_RE.finditer(self.proc.log_bytes()):
            n = m.group(4)
            out.append((m.group(1).decode(), m.group(2).decode(), int(m.group(3)),
                        0 if n == b"-" else int(n)))
        return out

    def blob_bytes_served(self, digest):
        """Body bytes of every GET of this blob that succeeded (200 or 206)."""
        return sum(b for m, p, s, b in self.requests()
                   if m == "GET" and p.split("?")[0].endswith("/blobs/" + digest)
                   and s in (200, 206))

    def blob_gets(self, digest):
        return [r for r in self.requests()
                if r[0] == "GET" and r[1].split("?")[0].endswith("/blobs/" + digest)]


def htpasswd_file(path, user, password):
    """An htpasswd file (bcrypt, as docker-registry requires) made with apache2-utils."""
    out = subprocess.run(["htpasswd", "-Bbn", user, password], capture_output=True, check=True,
                         timeout=30).stdout
    Path(path).write_bytes(out)
    return Path(path)


# ---- skopeo ------------------------------------------------------------------------------

def skopeo_env(tmp_path):
    home = Path(tmp_path) / "skopeo-home"
    home.mkdir(exist_ok=True)
    policy = home / "policy.json"
    policy.write_text(json.dumps({"default": [{"type": "insecureAcceptAnything"}]}))
    env = {"HOME": str(home), "XDG_RUNTIME_DIR": str(home), "XDG_CONFIG_HOME": str(home),
           "REGISTRY_AUTH_FILE": str(home / "auth.json")}
    return env, policy


def registries_conf(path, registry_host, mirror_port):
    """A containers-registries.conf(5) that sends pulls from registry_host to the daemon's
    proxy as a mirror (plain HTTP on both)."""
    Path(path).write_text(
        f'[[registry]]\nprefix = "{registry_host}"\nlocation = "{registry_host}"\n'
        f'insecure = true\n[[registry.mirror]]\nlocation = "127.0.0.1:{mirror_port}"\n'
        f'insecure = true\n')
    return Path(path)


def skopeo(tmp_path, args, registries=None, timeout=60, check=True):
    env, policy = skopeo_env(tmp_path)
    cmd = ["skopeo", "--policy", str(policy)]
    if registries:
        cmd += ["--registries-conf", str(registries)]
    cmd += list(args)
    full = dict(os.environ)
    full.update(env)
    cp = subprocess.run(cmd, capture_output=True, timeout=scaled(timeout), env=full,
                        stdin=subprocess.DEVNULL)
    if check and cp.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} exited {cp.returncode}: "
                             f"{cp.stderr.decode(errors='replace')[-2000:]}")
    return cp


def push_image(tmp_path, img, registry, repo="test/img", creds=None):
    args = ["copy", "--dest-tls-verify=false"]
    if creds:
        args += ["--dest-creds", creds]
    args += [f"oci:{img.layout}:{img.tag}", f"docker://{registry.host}/{repo}:{img.tag}"]
    skopeo(tmp_path, args)


def pull_image(tmp_path, registry, out, mirror_port, repo="test/img", tag="v1", creds=None,
               check=True):
    """skopeo copy from the registry (through the daemon's proxy as mirror) to an OCI
    layout at out. Returns the CompletedProcess."""
    conf = registries_conf(Path(tmp_path) / f"registries-{mirror_port}.conf", registry.host,
                           mirror_port)
    args = ["copy", "--src-tls-verify=false"]
    if creds:
        # containers/image gives --src-creds to the primary registry only; a mirror's
        # credentials come from the auth file, under the mirror's own host name.
        auth = base64.b64encode(creds.encode()).decode()
        authfile = Path(tmp_path) / f"auth-{mirror_port}.json"
        authfile.write_text(json.dumps({"auths": {registry.host: {"auth": auth},
                                                  f"127.0.0.1:{mirror_port}": {"auth": auth}}}))
        args += ["--src-authfile", str(authfile)]
    args += [f"docker://{registry.host}/{repo}:{tag}", f"oci:{out}:{tag}"]
    return skopeo(tmp_path, args, registries=conf, check=check)


def check_pulled_layout(out, img):
    """The pulled OCI layout has the image's manifest digest and every blob verifies."""
    index = json.loads((Path(out) / "index.json").read_text())
    digests = [m["digest"] for m in index["manifests"]]
    assert digests == [img.manifest_digest], f"pulled manifest {digests}, pushed {img.manifest_digest}"
    for d in [img.config_digest] + [l["digest"] for l in img.layers]:
        p = Path(out) / "blobs" / "sha256" / d.split(":")[1]
        assert p.exists(), f"blob {d} missing from the pulled image"
        assert "sha256:" + harness.sha256_file(p) == d, f"blob {d} does not verify"


def proxy_metric(daemon, path):
    return daemon.metric("damselfly_proxy_requests_total", path=path)


def logs_without_secret(tmp_path, secrets):
    """Every file under tmp_path whose name ends in .log: the (file, secret) pairs found."""
    found = []
    for p in Path(tmp_path).rglob("*.log"):
        data = p.read_bytes()
        for s in secrets:
            if s.encode() in data:
                found.append((str(p), s[:6] + "..."))
    return found


# ---- a bearer-token service --------------------------------------------------------------

def _b64(b):
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


class TokenService:
    """A docker token service (https://distribution.github.io/distribution/spec/auth/token/):
    GET /token (Basic auth or anonymous) and POST /token (OAuth2 password or refresh-token
    grant, as containerd sends it). users {name: password} get pull and push on every
    repository; anonymous clients get no access. Tokens are RS256 JWTs whose x5c header
    carries the certificate the registry trusts (rootcertbundle)."""

    def __init__(self, tmp_path, users, service="damselfly-test", issuer="damselfly-token"):
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import rsa
        from cryptography.x509.oid import NameOID
        import datetime
        self.users = dict(users)
        self.service = service
        self.issuer = issuer
        self.requests = []  # (method, grant or "basic"/"anonymous", user)
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "damselfly test tokens")])
        now = datetime.datetime.now(datetime.timezone.utc)
        self.cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
                     .public_key(self.key.public_key()).serial_number(x509.random_serial_number())
                     .not_valid_before(now - datetime.timedelta(hours=1))
                     .not_valid_after(now + datetime.timedelta(days=1))
                     .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
                     .sign(self.key, hashes.SHA256()))
        self.cert_path = Path(tmp_path) / "token-cert.pem"
        self.cert_path.write_bytes(self.cert.public_bytes(serialization.Encoding.PEM))
        self._der = self.cert.public_bytes(serialization.Encoding.DER)
        self._srv = None

    @property
    def realm(self):
        return f"http://127.0.0.1:{self.port}/token"

    def registry_auth(self):
        return ("token", self.realm, self.service, self.issuer, str(self.cert_path))

    def token(self, user, scope):
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import padding
        access = []
        if user is not None:
            for sc in scope:
                parts = sc.split(":")
                if len(parts) == 3 and parts[0] == "repository":
                    access.append({"type": "repository", "name": parts[1],
                                   "actions": [a for a in parts[2].split(",")
                                               if a in ("pull", "push")]})
        now = int(time.time())
        header = {"typ": "JWT", "alg": "RS256", "x5c": [base64.b64encode(self._der).decode()]}
        claims = {"iss": self.issuer, "sub": user or "", "aud": self.service, "exp": now + 600,
                  "nbf": now - 60, "iat": now, "jti": os.urandom(8).hex(), "access": access}
        signing_input = (_b64(json.dumps(header).encode()) + "." +
                         _b64(json.dumps(claims).encode())).encode()
        sig = self.key.sign(signing_input, padding.PKCS1v15(), hashes.SHA256())
        return signing_input.decode() + "." + _b64(sig)

    def start(self):
        svc = self

        class H(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def _answer(self, user, scope, kind):
                svc.requests.append((self.command, kind, user))
                tok = svc.token(user, scope)
                body = json.dumps({"token": tok, "access_token": tok, "expires_in": 600,
                                   "refresh_token": "refresh-" + (user or "")}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def _deny(self):
                self.send_response(401)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def do_GET(self):
                import urllib.parse
                q = urllib.parse.parse_qs(urllib.parse.urlsplit(self.path).query)
                scope = q.get("scope", [])
                auth = self.headers.get("Authorization", "")
                user = None
                if auth.startswith("Basic "):
                    u, _, p = base64.b64decode(auth[6:]).decode().partition(":")
                    if svc.users.get(u) != p:
                        return self._deny()
                    user = u
                self._answer(user, scope, "basic" if user else "anonymous")

            def do_POST(self):
                import urllib.parse
                n = int(self.headers.get("Content-Length", "0"))
                form = urllib.parse.parse_qs(self.rfile.read(n).decode())
                grant = form.get("grant_type", [""])[0]
                scope = " ".join(form.get("scope", [])).split()
                user = None
                if grant == "password":
                    u, p = form.get("username", [""])[0], form.get("password", [""])[0]
                    if svc.users.get(u) != p:
                        return self._deny()
                    user = u
                elif grant == "refresh_token":
                    rt = form.get("refresh_token", [""])[0]
                    if not rt.startswith("refresh-") or rt[8:] not in svc.users:
                        return self._deny()
                    user = rt[8:]
                else:
                    return self._deny()
                self._answer(user, scope, grant)

        self._srv = harness.serve_http(H)
        self.port = self._srv.server_address[1]
        return self

    def stop(self):
        if self._srv:
            self._srv.shutdown()
            self._srv.server_close()


# ---- containerd --------------------------------------------------------------------------

class Containerd:
    """containerd with a private socket, root and state under a short temp dir (socket paths
    are limited to 108 bytes), the CRI plugin and the snapshotters that need special file
    systems disabled; images unpack with the native snapshotter."""

    def __init__(self, tmp_path):
        import tempfile
        import atexit
        import shutil
        self.dir = Path(tempfile.mkdtemp(prefix="dmf-ctd-"))
        atexit.register(shutil.rmtree, str(self.dir), True)
        self.log = Path(tmp_path) / "containerd.log"
        self.sock = self.dir / "c.sock"
        self.hosts = self.dir / "hosts"

    def start(self):
        disabled = ["io.containerd.grpc.v1.cri", "io.containerd.snapshotter.v1.btrfs",
                    "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper",
                    "io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.overlayfs",
                    "io.containerd.internal.v1.opt"]
        cfg = self.dir / "config.toml"
        cfg.write_text(
            "version = 2\n"
            f'root = "{self.dir / "root"}"\nstate = "{self.dir / "state"}"\n'
            f"disabled_plugins = {json.dumps(disabled)}\n"
            f'[grpc]\n  address = "{self.sock}"\n[ttrpc]\n  address = "{self.dir / "t.sock"}"\n'
            '[debug]\n  address = ""\n[metrics]\n  address = ""\n')
        self.proc = Proc(["containerd", "--config", cfg], self.log, name="containerd")
        wait_until(lambda: harness.unix_socket_accepts(self.sock) or self.proc.poll() is not None,
                   scaled(20), what="containerd's socket")
        if self.proc.poll() is not None:
            raise RuntimeError(f"containerd exited\n{self.proc.log_tail()}")
        return self

    def mirror(self, registry_host, proxy_port):
        """hosts.toml: pulls of registry_host go to the daemon's proxy first."""
        d = self.hosts / registry_host
        d.mkdir(parents=True, exist_ok=True)
        (d / "hosts.toml").write_text(
            f'server = "http://{registry_host}"\n'
            f'[host."http://127.0.0.1:{proxy_port}"]\n  capabilities = ["pull", "resolve"]\n')

    def ctr(self, *args, timeout=90, check=True):
        cmd = ["ctr", "--address", str(self.sock), "-n", "dmftest"] + [str(a) for a in args]
        cp = subprocess.run(cmd, capture_output=True, timeout=scaled(timeout),
                            stdin=subprocess.DEVNULL)
        if check and cp.returncode != 0:
            raise AssertionError(f"{' '.join(cmd)} exited {cp.returncode}: "
                                 f"{cp.stderr.decode(errors='replace')[-2000:]}")
        return cp


# ---- certificates and an HTTPS origin ----------------------------------------------------

def make_ca(directory, name):
    """A CA certificate and key (PEM files); returns (cert_path, key_path, ca) where ca is a
    (cert, key) pair for issue_cert."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID
    import datetime
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(days=2))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
            .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False,
                                         False), True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
            .sign(key, hashes.SHA256()))
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    cp, kp = d / f"{name.replace(' ', '-')}.crt", d / f"{name.replace(' ', '-')}.key"
    cp.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    kp.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                     serialization.PrivateFormat.TraditionalOpenSSL,
                                     serialization.NoEncryption()))
    return cp, kp, (cert, key)


def issue_cert(directory, ca, ip="127.0.0.1"):
    """A server certificate for ip signed by ca; returns (cert_path, key_path)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
    import datetime
    import ipaddress
    ca_cert, ca_key = ca
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, ip)]))
            .issuer_name(ca_cert.subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(ip))]),
                           False)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), False)
            .sign(ca_key, hashes.SHA256()))
    d = Path(directory)
    cp, kp = d / "server.crt", d / "server.key"
    cp.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    kp.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                     serialization.PrivateFormat.TraditionalOpenSSL,
                                     serialization.NoEncryption()))
    return cp, kp


class HttpsOrigin:
    """An HTTPS file server on 127.0.0.1 (single byte ranges supported) that records the
    requests it gets as (method, path, range header)."""

    def __init__(self, cert, key):
        self.cert, self.key = cert, key
        self.files = {}
        self.requests = []
        self.lock = threading.Lock()

    def add(self, path, data):
        self.files[path] = data

    def start(self):
        import ssl
        org = self

        class H(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def do_GET(self):
                rng = self.headers.get("Range")
                with org.lock:
                    org.requests.append(("GET", self.path, rng))
                data = org.files.get(self.path)
                if data is None:
                    self.send_response(404)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                m = re.fullmatch(r"bytes=(\d+)-(\d*)", rng or "")
                if m:
                    a = int(m.group(1))
                    b = min(int(m.group(2)) if m.group(2) else len(data) - 1, len(data) - 1)
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {a}-{b}/{len(data)}")
                    body = data[a:b + 1]
                else:
                    self.send_response(200)
                    body = data
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(str(self.cert), str(self.key))
        self._srv = harness.serve_http(H, ctx)
        self.port = self._srv.server_address[1]
        return self

    def url(self, path):
        return f"https://127.0.0.1:{self.port}{path}"

    def stop(self):
        self._srv.shutdown()
        self._srv.server_close()


class EchoServer:
    """A TCP server on 127.0.0.1 that sends back every byte it receives."""

    def __init__(self):
        import socket as so
        self.sock = so.socket(so.AF_INET, so.SOCK_STREAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.port = self.sock.getsockname()[1]
        self.sock.settimeout(0.2)
        self._stop = threading.Event()
        self.t = threading.Thread(target=self._run, daemon=True)
        self.t.start()

    def _run(self):
        while not self._stop.is_set():
            try:
                c, _ = self.sock.accept()
            except OSError:
                continue
            threading.Thread(target=self._echo, args=(c,), daemon=True).start()

    def _echo(self, c):
        c.settimeout(30)
        with c:
            try:
                while True:
                    b = c.recv(65536)
                    if not b:
                        return
                    c.sendall(b)
            except OSError:
                return

    def stop(self):
        self._stop.set()
        self.t.join(timeout=5)
        self.sock.close()


def read_reply(s, timeout):
    """Everything the other side sends on socket s until it closes (or resets, or timeout
    seconds pass without a byte)."""
    s.settimeout(timeout)
    data = b""
    try:
        while True:
            b = s.recv(65536)
            if not b:
                break
            data += b
    except (socket.timeout, ConnectionResetError):
        pass
    return data
