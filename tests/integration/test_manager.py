"""The manager's REST API: deny by default on every route, users and roles, sessions and
personal access tokens, clusters with validated scopes and config, the audit log, the
schema migrations — each on SQLite and on a real PostgreSQL server."""

import http.client
import json
import sqlite3
import time

import pytest

import harness
import manager_support as ms
from manager_support import database, postgres  # noqa: F401 (fixtures)

V, O, R, N = "viewer", "operator", "root", "none"

# Every route of the API: (method, path with {id}, role needed). A route the server serves
# that is missing here (or listed here and not served) fails test_route_table_matches.
ROUTES = [
    ("GET", "/api/v1/openapi.json", N),
    ("POST", "/api/v1/users/signin", N),
    ("POST", "/api/v1/users/signout", V),
    ("GET", "/api/v1/users/me", V),
    ("GET", "/api/v1/users", R),
    ("POST", "/api/v1/users", R),
    ("GET", "/api/v1/users/{id}", R),
    ("PATCH", "/api/v1/users/{id}", R),
    ("DELETE", "/api/v1/users/{id}", R),
    ("GET", "/api/v1/personal-access-tokens", V),
    ("POST", "/api/v1/personal-access-tokens", O),
    ("DELETE", "/api/v1/personal-access-tokens/{id}", O),
    ("GET", "/api/v1/clusters", V),
    ("POST", "/api/v1/clusters", O),
    ("GET", "/api/v1/clusters/{id}", V),
    ("PATCH", "/api/v1/clusters/{id}", O),
    ("DELETE", "/api/v1/clusters/{id}", O),
    ("GET", "/api/v1/schedulers", V),
    ("GET", "/api/v1/schedulers/{id}", V),
    ("DELETE", "/api/v1/schedulers/{id}", O),
    ("GET", "/api/v1/schedulers/{id}/live", V),
    ("GET", "/api/v1/seed-peers", V),
    ("GET", "/api/v1/seed-peers/{id}", V),
    ("DELETE", "/api/v1/seed-peers/{id}", O),
    ("GET", "/api/v1/hosts", V),
    ("GET", "/api/v1/jobs", V),
    ("POST", "/api/v1/jobs", O),
    ("GET", "/api/v1/jobs/{id}", V),
    ("POST", "/api/v1/jobs/{id}/cancel", O),
    ("GET", "/api/v1/audit-logs", R),
    ("POST", "/oapi/v1/jobs", O),
    ("GET", "/oapi/v1/jobs/{id}", V),
]
RANK = {N: 0, V: 1, O: 2, R: 3}



def _path(p):
    return p.replace("{id}", "1")


def test_route_table_matches_openapi(tmp_path, need_binary):
    m = ms.start_manager(tmp_path)
    st, doc = m.call("GET", "/api/v1/openapi.json")
    assert st == 200 and doc["openapi"].startswith("3.")
    served = {(meth.upper(), path, op["x-damselfly-role"])
              for path, ops in doc["paths"].items() for meth, op in ops.items()}
    assert served == set(ROUTES), (
        f"served but not in the test's table: {sorted(served - set(ROUTES))}; "
        f"in the table but not served: {sorted(set(ROUTES) - served)}")


def test_every_route_denies_by_default(tmp_path, need_binary, database):
    m = ms.start_manager(tmp_path, database)
    root = m.signin()
    viewer = m.user_token(root, "vera", "viewer")
    operator = m.user_token(root, "otto", "operator")
    for meth, path, role in ROUTES:
        p = _path(path)
        body = {} if meth in ("POST", "PATCH") else None
        if role == N:
            continue
        for tok in (None, "dmfs_" + "0" * 64, "dmfp_" + "f" * 64, "not-a-token"):
            st, js = m.call(meth, p, body, tok)
            assert st == 401, f"{meth} {path} with {tok!r}: {st} {js}"
            assert "error" in js
        st, _ = m.call(meth, p, body, headers={"Authorization": "Basic cm9vdDpyb290"})
        assert st == 401, f"{meth} {path} with Basic auth: {st}"
        for name, tok in (("viewer", viewer), ("operator", operator)):
            if path.endswith("/signout"):  # would end the session the loop goes on with
                tok = m.signin({"viewer": "vera", "operator": "otto"}[name], "password-xxxxxxxx")
            st, js = m.call(meth, p, body, tok)
            if RANK[name] < RANK[role]:
                assert st == 403, f"{meth} {path} as {name}: {st} {js}"
            else:
                assert st not in (401, 403), f"{meth} {path} as {name}: {st} {js}"
    # The public routes answer without credentials.
    assert m.call("GET", "/api/v1/openapi.json")[0] == 200
    assert m.call("POST", "/api/v1/users/signin", {"name": "root", "password": "nope-nope"})[0] == 401
    # Unknown routes and methods are told apart, and still leak nothing.
    assert m.call("GET", "/api/v1/nothing")[0] == 404
    assert m.call("PATCH", "/api/v1/jobs")[0] == 405
    # Denials are counted.
    met = harness.fetch_metrics(m.metrics_port)
    assert met.value("damselfly_manager_http_denied_total", status="401") >= 4 * (len(ROUTES) - 2)
    assert met.value("damselfly_manager_http_denied_total", status="403") > 0


def signin_from(m, source_ip, name, password):
    """A sign-in from source_ip (a loopback address other than 127.0.0.1 is another client):
    (status, Retry-After header or None, decoded body)."""
    conn = http.client.HTTPConnection("127.0.0.1", m.port, timeout=harness.scaled(10),
                                      source_address=(source_ip, 0))
    try:
        conn.request("POST", "/api/v1/users/signin",
                     json.dumps({"name": name, "password": password}),
                     {"Content-Type": "application/json"})
        r = conn.getresponse()
        return r.status, r.getheader("Retry-After"), json.loads(r.read() or b"null")
    finally:
        conn.close()


def test_password_guessing_is_throttled(tmp_path, need_binary):
    """Five wrong passwords are free; then the address and the name are locked for a delay
    that doubles (429 with Retry-After), even for the right password; another address
    guessing the same name is locked too, another name from a fresh address is not; the
    right password after the lock works and clears it."""
    m = ms.start_manager(tmp_path)
    for i in range(5):
        st, ra, _ = signin_from(m, "127.0.0.1", "root", f"guess-{i}-xxxxxx")
        assert (st, ra) == (401, None), (i, st, ra)
    # The fifth failure set the first lock (1 s).
    st, ra, body = signin_from(m, "127.0.0.1", "root", ms.ROOT_PASSWORD)
    assert st == 429 and ra is not None and 1 <= int(ra) <= 2, (st, ra, body)
    assert "too many failed sign-ins" in body["error"]
    # The name is locked from anywhere; another name from another address is not.
    assert signin_from(m, "127.0.0.2", "root", ms.ROOT_PASSWORD)[0] == 429
    assert signin_from(m, "127.0.0.3", "nobody", "wrong-password")[0] == 401
    # A guess after the lock doubles it.
    time.sleep(int(ra) + 0.2)
    assert signin_from(m, "127.0.0.1", "root", "guess-6-xxxxxx")[0] == 401
    st, ra2, _ = signin_from(m, "127.0.0.1", "root", ms.ROOT_PASSWORD)
    assert st == 429 and int(ra2) >= 2, (st, ra2)
    time.sleep(int(ra2) + 0.2)
    assert signin_from(m, "127.0.0.1", "root", ms.ROOT_PASSWORD)[0] == 200
    # Cleared: the next wrong guess is free again.
    assert signin_from(m, "127.0.0.1", "root", "guess-7-xxxxxx")[0] == 401
    assert signin_from(m, "127.0.0.1", "root", ms.ROOT_PASSWORD)[0] == 200
    met = harness.fetch_metrics(m.metrics_port)
    assert met.value("damselfly_manager_signin_throttled_total") == 3
    assert b"guess-" not in m.proc.log_bytes()


def test_users_sessions_and_roles(tmp_path, need_binary, database):
    m = ms.start_manager(tmp_path, database)
    assert m.call("POST", "/api/v1/users/signin",
                  {"name": "root", "password": "wrong-password"})[0] == 401
    assert m.call("POST", "/api/v1/users/signin",
                  {"name": "nobody", "password": "wrong-password"})[0] == 401
    root = m.signin()
    me = m.ok("GET", "/api/v1/users/me", token=root)
    assert me["name"] == "root" and me["role"] == "root"
    assert m.call("POST", "/api/v1/users", {"name": "a", "password": "short", "role": "viewer"},
                  root)[0] == 400
    assert m.call("POST", "/api/v1/users",
                  {"name": "-bad", "password": "long-enough", "role": "viewer"}, root)[0] == 400
    assert m.call("POST", "/api/v1/users",
                  {"name": "x", "password": "long-enough", "role": "god"}, root)[0] == 400
    u = m.ok("POST", "/api/v1/users", {"name": "vic", "password": "first-password",
                                       "role": "viewer"}, root)
    assert "password" not in json.dumps(u) and "argon2" not in json.dumps(u)
    assert m.call("POST", "/api/v1/users", {"name": "vic", "password": "first-password",
                                            "role": "viewer"}, root)[0] == 409
    vic = m.signin("vic", "first-password")
    assert m.call("POST", "/api/v1/clusters", {"name": "c"}, vic)[0] == 403
    # Promotion takes effect on the same session.
    m.ok("PATCH", f"/api/v1/users/{u['id']}", {"role": "operator"}, root)
    assert m.call("POST", "/api/v1/clusters", {"name": "c"}, vic)[0] == 201
    # A new password ends the user's sessions.
    m.ok("PATCH", f"/api/v1/users/{u['id']}", {"password": "second-password"}, root)
    assert m.call("GET", "/api/v1/users/me", token=vic)[0] == 401
    vic = m.signin("vic", "second-password")
    # Signing out ends the session.
    assert m.call("POST", "/api/v1/users/signout", token=vic)[0] == 200
    assert m.call("GET", "/api/v1/users/me", token=vic)[0] == 401
    users = m.ok("GET", "/api/v1/users", token=root)
    assert all("password_hash" not in x for x in users)
    assert m.call("DELETE", f"/api/v1/users/{me['id']}", token=root)[0] == 400
    assert m.call("DELETE", f"/api/v1/users/{u['id']}", token=root)[0] == 200
    assert m.call("DELETE", f"/api/v1/users/{u['id']}", token=root)[0] == 404
    # Secrets never reach the log, at debug level.
    log = m.log_text()
    for secret in (ms.ROOT_PASSWORD, "first-password", "second-password", root, vic):
        assert secret not in log


def test_personal_access_tokens(tmp_path, need_binary, database):
    m = ms.start_manager(tmp_path, database)
    root = m.signin()
    op = m.user_token(root, "olga", "operator")
    assert m.call("POST", "/api/v1/personal-access-tokens",
                  {"name": "t", "scopes": ["admin"]}, op)[0] == 400
    assert m.call("POST", "/api/v1/personal-access-tokens",
                  {"name": "t", "scopes": []}, op)[0] == 400
    assert m.call("POST", "/api/v1/personal-access-tokens",
                  {"name": "t", "scopes": ["read"], "expires_in": 10 ** 9}, op)[0] == 400
    ro = m.ok("POST", "/api/v1/personal-access-tokens", {"name": "ro", "scopes": ["read"]}, op)
    job = m.ok("POST", "/api/v1/personal-access-tokens",
               {"name": "harbor", "scopes": ["job"], "expires_in": 3600}, op)
    short = m.ok("POST", "/api/v1/personal-access-tokens",
                 {"name": "short", "scopes": ["read"], "expires_in": 1}, op)
    assert ro["token"].startswith("dmfp_") and len(ro["token"]) == 69
    # Listed without the token or its hash.
    listed = m.ok("GET", "/api/v1/personal-access-tokens", token=op)
    assert {t["name"] for t in listed} == {"ro", "harbor", "short"}
    assert ro["token"] not in json.dumps(listed)
    assert all("token" not in t and "token_hash" not in t for t in listed)
    # Scopes limit what a token does, within its user's role.
    assert m.call("GET", "/api/v1/clusters", token=ro["token"])[0] == 200
    assert m.call("POST", "/api/v1/clusters", {"name": "x"}, ro["token"])[0] == 403
    assert m.call("GET", "/api/v1/clusters", token=job["token"])[0] == 403
    st, j = m.call("POST", "/oapi/v1/jobs", {"type": "preheat",
                                             "args": {"type": "file", "url": "http://h/f"}},
                   job["token"])
    assert st == 200, j
    # A token cannot do more than its user: an operator's token never reaches root routes.
    assert m.call("GET", "/api/v1/audit-logs", token=ro["token"])[0] == 403
    # Expiry.
    time.sleep(2.2)
    assert m.call("GET", "/api/v1/clusters", token=short["token"])[0] == 401
    # Revocation.
    assert m.call("DELETE", f"/api/v1/personal-access-tokens/{ro['id']}", token=op)[0] == 200
    assert m.call("GET", "/api/v1/clusters", token=ro["token"])[0] == 401
    # Stored hashed: the database holds no token.
    if database is None:
        dbfile = tmp_path / "manager-data" / "manager.db"
        dump = "\n".join(sqlite3.connect(dbfile).iterdump())
    else:
        pg = ms.Postgres.__new__(ms.Postgres)
        dump = pg.psql(database, "SELECT token_hash FROM personal_access_tokens")
    for t in (ro["token"], job["token"], root):
        assert t not in dump and t[5:] not in dump
    assert ms.ROOT_PASSWORD not in dump
    log = m.log_text()
    for t in (ro["token"], job["token"], short["token"]):
        assert t not in log


def test_clusters_inputs_are_bounded(tmp_path, need_binary, database):
    m = ms.start_manager(tmp_path, database)
    root = m.signin()
    bad = [
        {"name": "c", "scopes": {"hostnames": ["(unclosed"]}},
        {"name": "c", "scopes": {"cidrs": ["10.0.0.0/33"]}},
        {"name": "c", "scopes": {"cidrs": ["not-an-ip"]}},
        {"name": "c", "scopes": {"cidrs": ["10.0.0.0/8"] * 33}},
        {"name": "c", "scopes": {"colour": "blue"}},
        {"name": "c", "scopes": {"idc": "x" * 300}},
        {"name": "c", "config": {"candidate_limit": 1000}},
        {"name": "c", "config": {"candidate_limit": "4"}},
        {"name": "c", "config": {"block_urls": ["[bad"]}},
        {"name": "c", "config": {"nope": 1}},
        {"name": "c", "extra": 1},
        {"name": "x" * 65},
        {"bio": "no name"},
        {"name": "c", "is_default": "yes"},
    ]
    for b in bad:
        st, js = m.call("POST", "/api/v1/clusters", b, root)
        assert st == 400 and js["error"], f"{b}: {st} {js}"
    assert m.call("POST", "/api/v1/clusters", raw=b"{not json", token=root)[0] == 400
    assert m.call("POST", "/api/v1/clusters", raw=b"[1,2]", token=root)[0] == 400
    assert m.call("POST", "/api/v1/clusters", raw=b'{"name":"a","name":"b"}', token=root)[0] == 400
    assert m.call("POST", "/api/v1/clusters", raw=b"{" + b" " * (70 * 1024) + b"}",
                  token=root)[0] == 413
    assert m.call("GET", "/api/v1/clusters?per_page=1000", token=root)[0] == 400
    assert m.call("GET", "/api/v1/clusters/abc", token=root)[0] == 404
    assert m.call("GET", "/api/v1/clusters/99999", token=root)[0] == 404
    c = m.ok("POST", "/api/v1/clusters", {
        "name": "east", "bio": "east racks",
        "scopes": {"idc": "e1|e2", "location": "eu|east", "cidrs": ["10.1.0.0/16"],
                   "hostnames": ["^east-[0-9]+$"]},
        "config": {"candidate_limit": 3, "download_rate_limit": 100 << 20}}, root)
    assert c["scopes"]["cidrs"] == ["10.1.0.0/16"] and c["config"]["candidate_limit"] == 3
    c2 = m.ok("PATCH", f"/api/v1/clusters/{c['id']}", {"config": {"candidate_limit": 5}}, root)
    assert c2["config"]["candidate_limit"] == 5 and c2["name"] == "east"
    assert m.call("POST", "/api/v1/clusters", {"name": "east"}, root)[0] == 409
    names = [x["name"] for x in m.ok("GET", "/api/v1/clusters", token=root)]
    assert names == ["default", "east"]
    page = m.ok("GET", "/api/v1/clusters?page=2&per_page=1", token=root)
    assert [x["name"] for x in page] == ["east"]
    assert m.call("DELETE", f"/api/v1/clusters/{c['id']}", token=root)[0] == 200
    # Every write is in the audit log, with who and the status, never a body.
    audit = m.ok("GET", "/api/v1/audit-logs?per_page=100", token=root)
    assert any(a["action"] == "DELETE" and a["target"] == f"/api/v1/clusters/{c['id']}"
               and a["user_name"] == "root" and a["status"] == 200 for a in audit)
    assert any(a["status"] == 400 for a in audit)


def test_first_start_prints_root_password_once(tmp_path, need_binary, database):
    m = ms.start_manager(tmp_path, database, root_password=None)
    line = [l for l in m.log_text().splitlines() if "root password (shown once" in l]
    assert len(line) == 1
    pw = line[0].rsplit(" ", 1)[1]
    assert len(pw) == 24
    tok = m.signin("root", pw)
    assert m.ok("GET", "/api/v1/users/me", token=tok)["role"] == "root"
    # Logged nowhere else.
    assert m.log_text().count(pw) == 1
    m.stop()
    m2 = ms.start_manager(tmp_path, database, root_password=None, name="manager-again")
    assert m2.signin("root", pw)
    assert "root password" not in m2.log_text()


def test_migrations_are_recorded(tmp_path, need_binary, database):
    m = ms.start_manager(tmp_path, database)
    m.stop()
    if database is None:
        rows = sqlite3.connect(tmp_path / "manager-data" / "manager.db").execute(
            "SELECT version FROM schema_migrations ORDER BY version").fetchall()
        versions = [r[0] for r in rows]
    else:
        pg = ms.Postgres.__new__(ms.Postgres)
        versions = [int(x) for x in pg.psql(
            database, "SELECT version FROM schema_migrations ORDER BY version").split()]
    assert versions == list(range(1, len(versions) + 1)) and len(versions) >= 2
    # A second start applies nothing and keeps the data.
    assert "migration 1 applied" in m.log_text()
    m2 = ms.start_manager(tmp_path, database, name="manager-again")
    assert m2.signin()
    assert "applied" not in m2.log_text()
