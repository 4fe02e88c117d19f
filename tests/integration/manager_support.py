"""Helpers for the manager's tests: a real PostgreSQL server from Debian's packages on a
temporary data dir and port, `damselfly manager` with free ports, and a small REST client.

PostgreSQL runs as the `postgres` user (initdb refuses root) through setpriv; it is started
and stopped by pg_ctl on its own data dir (stop by its pid file: only the server we
started). Where the binaries or the user are missing, the PostgreSQL tests skip saying so.
"""

import json
import os
import pwd
import shutil
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

import harness

PG_BIN = Path("/usr/lib/postgresql/15/bin")
ROOT_PASSWORD = "root-password-for-tests"


class Postgres:
    def __init__(self):
        self.dir = None
        self.port = None
        self.dbs = 0
        self.why_not = None

    def start(self):
        if not (PG_BIN / "initdb").exists():
            self.why_not = f"PostgreSQL is not installed ({PG_BIN}/initdb missing: " \
                           "apt-get install postgresql)"
            return self
        try:
            pw = pwd.getpwnam("postgres")
        except KeyError:
            self.why_not = "no 'postgres' user to run the server as"
            return self
        self.dir = tempfile.mkdtemp(prefix="dmf-pg-")
        os.chown(self.dir, pw.pw_uid, pw.pw_gid)
        self.port = harness.free_port()
        pre = [] if os.getuid() == pw.pw_uid else [
            "setpriv", f"--reuid={pw.pw_uid}", f"--regid={pw.pw_gid}", "--init-groups"]
        self.pre = pre
        data = f"{self.dir}/data"
        r = subprocess.run(pre + [str(PG_BIN / "initdb"), "-D", data, "-U", "postgres",
                                  "--auth=trust", "-E", "UTF8", "--no-sync"],
                           capture_output=True, timeout=120)
        if r.returncode != 0:
            self.why_not = f"initdb failed: {r.stderr.decode()[-500:]}"
            return self
        opts = (f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=off "
                "-c synchronous_commit=off -c full_page_writes=off -c max_connections=50")
        r = subprocess.run(pre + [str(PG_BIN / "pg_ctl"), "-D", data, "-o", opts, "-l",
                                  f"{self.dir}/server.log", "-w", "-t", "60", "start"],
                           capture_output=True, timeout=90)
        if r.returncode != 0:
            self.why_not = f"pg_ctl start failed: {r.stderr.decode()[-500:]}"
            return self
        return self

    def new_database(self):
        """A fresh database; returns its postgres:// URL."""
        self.dbs += 1
        name = f"dmf_test_{os.getpid()}_{self.dbs}"
        subprocess.run(["psql", "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres",
                        "-q", "-c", f"CREATE DATABASE {name}"], check=True,
                       capture_output=True, timeout=60)
        return f"postgres://postgres@127.0.0.1:{self.port}/{name}"

    def psql(self, url, sql):
        r = subprocess.run(["psql", url, "-At", "-c", sql], check=True, capture_output=True,
                           timeout=60)
        return r.stdout.decode()

    def stop(self):
        if self.dir and self.why_not is None:
            subprocess.run(self.pre + [str(PG_BIN / "pg_ctl"), "-D", f"{self.dir}/data", "-m",
                                       "fast", "-w", "stop"], capture_output=True, timeout=60)
        if self.dir:
            shutil.rmtree(self.dir, ignore_errors=True)


class Manager:
    def __init__(self, proc, port, grpc_port, metrics_port, log_path, database):
        self.proc = proc
        self.port = port
        self.grpc_port = grpc_port
        self.metrics_port = metrics_port
        self.log_path = log_path
        self.database = database

    @property
    def grpc_addr(self):
        return f"127.0.0.1:{self.grpc_port}"

    def call(self, method, path, body=None, token=None, raw=None, headers=None):
        """(status, decoded JSON body or None)."""
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None
                                            else None)
        req = urllib.request.Request(f"http://127.0.0.1:{self.port}{path}", data=data,
                                     method=method)
        if token:
            req.add_header("Authorization", f"Bearer {token}")
        if data is not None:
            req.add_header("Content-Type", "application/json")
        for k, v in (headers or {}).items():
            req.add_header(k, v)
        try:
            with urllib.request.urlopen(req, timeout=harness.scaled(20)) as r:
                text = r.read()
                status = r.status
        except urllib.error.HTTPError as e:
            text = e.read()
            status = e.code
        try:
            return status, json.loads(text) if text else None
        except ValueError:
            return status, text

    def ok(self, method, path, body=None, token=None, want=(200, 201)):
        st, js = self.call(method, path, body, token)
        assert st in want, f"{method} {path}: {st} {js}"
        return js

    def signin(self, name="root", password=ROOT_PASSWORD):
        return self.ok("POST", "/api/v1/users/signin", {"name": name, "password": password})["token"]

    def user_token(self, root_token, name, role, password="password-" + "x" * 8):
        self.ok("POST", "/api/v1/users", {"name": name, "password": password, "role": role},
                root_token)
        return self.signin(name, password)

    def stop(self):
        return self.proc.stop()

    def kill9(self):
        return self.proc.kill9()

    def log_text(self):
        return self.proc.log_bytes().decode("utf-8", "replace")


def start_manager(tmp_path, database=None, name="manager", root_password=ROOT_PASSWORD,
                  port=None, grpc_port=None, metrics_port=None, ready_timeout=30, data="manager",
                  **flags):
    harness.require_binary()
    tmp_path = Path(tmp_path)
    port = port or harness.free_port()
    grpc_port = grpc_port or harness.free_port()
    metrics_port = metrics_port or harness.free_port()
    flags.setdefault("log_level", harness.log_level())
    args = [harness.binary(), "manager", "--listen", f"127.0.0.1:{port}",
            "--grpc-listen", f"127.0.0.1:{grpc_port}",
            "--metrics-listen", f"127.0.0.1:{metrics_port}",
            "--data-dir", tmp_path / f"{data}-data"]
    if database:
        args += ["--database", database]
    if root_password is not None:
        pwf = tmp_path / f"{name}-root-password"
        pwf.write_text(root_password + "\n")
        args += ["--root-password-file", pwf]
    args += harness._flag_args(flags)
    log = tmp_path / f"{name}.log"
    proc = harness.Proc(args, log, name=name)
    harness.wait_port(port, harness.scaled(ready_timeout), proc)
    harness.wait_port(grpc_port, harness.scaled(ready_timeout), proc)
    return Manager(proc, port, grpc_port, metrics_port, log, database)


def manager_pb():
    """manager_pb2 and manager_pb2_grpc, generated with the other protos."""
    import importlib
    harness.proto_modules()
    return (importlib.import_module("damselfly.v1.manager_pb2"),
            importlib.import_module("damselfly.v1.manager_pb2_grpc"))


def wait_for(pred, timeout, what):
    return harness.wait_until(pred, harness.scaled(timeout), what=what)


# ---- fixtures shared by the manager's test files (imported by name) ----

@pytest.fixture(scope="module")
def postgres():
    pg = Postgres().start()
    yield pg
    pg.stop()


@pytest.fixture(params=["sqlite", "postgres"])
def database(request, tmp_path):
    """None (the default SQLite under --data-dir) or a fresh PostgreSQL database."""
    if request.param == "sqlite":
        return None
    pg = request.getfixturevalue("postgres")
    if pg.why_not:
        pytest.skip(f"PostgreSQL tests skipped: {pg.why_not}")
    return pg.new_database()
