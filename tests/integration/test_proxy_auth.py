"""Registry authentication through the mirror: htpasswd basic auth and bearer tokens; a
blob cached for an authorised client is never served to one without credentials; no
credential reaches any log."""

import base64

import pytest

from harness import start_daemon
from proxy_support import (Containerd, Registry, TokenService, build_oci_image,
                           check_pulled_layout, htpasswd_file, logs_without_secret,
                           proxy_metric, pull_image, push_image)
from test_proxy_mirror import raw_get

USER, PASSWORD = "alice", "s3cret-Pa55word"


@pytest.mark.deadline(120)
def test_basic_auth_through_the_mirror(tmp_path, need_binary):
    reg = Registry(tmp_path, auth=("htpasswd", str(htpasswd_file(tmp_path / "htpasswd", USER,
                                                                  PASSWORD)))).start()
    img = build_oci_image(tmp_path / "layout", layer_sizes=(2 << 20, 100 << 10), seed=b"basic")
    push_image(tmp_path, img, reg, creds=f"{USER}:{PASSWORD}")
    d = start_daemon(tmp_path, "d1", registry_mirror=reg.url)
    basic = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()

    # With credentials: the pull works, through P2P.
    out = tmp_path / "pulled"
    pull_image(tmp_path, reg, out, d.proxy_port, creds=f"{USER}:{PASSWORD}")
    check_pulled_layout(out, img)
    assert proxy_metric(d, "p2p") == 1 + len(img.layers)

    # Without credentials: the registry's 401 and its challenge reach the client.
    status, hdrs, _ = raw_get(d.proxy_port, "/v2/")
    assert status == 401
    assert hdrs.get("www-authenticate", "").startswith("Basic realm="), hdrs
    cp = pull_image(tmp_path, reg, tmp_path / "denied", d.proxy_port, check=False)
    assert cp.returncode != 0, "skopeo pulled a private image without credentials"

    # The layers are cached on this daemon now; a client without credentials (or with
    # wrong ones) still gets the registry's 401, never the blob.
    layer = img.layers[0]
    bad = "Basic " + base64.b64encode(f"{USER}:wrong".encode()).decode()
    for hdrs_in in ([], [f"Authorization: {bad}"]):
        status, hdrs, body = raw_get(d.proxy_port, f"/v2/test/img/blobs/{layer['digest']}",
                                     hdrs_in)
        assert status == 401, f"cached private blob answered {status} to {hdrs_in or 'no auth'}"
        assert "www-authenticate" in hdrs
        assert len(body) < 1000
    # And the authorised client is still served from the cache.
    status, hdrs, body = raw_get(d.proxy_port, f"/v2/test/img/blobs/{layer['digest']}",
                                 [f"Authorization: {basic}"])
    assert status == 200 and len(body) == layer["size"]
    assert hdrs["docker-content-digest"] == layer["digest"]
    assert d.metric("damselfly_proxy_auth_denied_total") >= 2

    leaks = logs_without_secret(tmp_path, [PASSWORD, basic.split()[1], bad.split()[1]])
    assert not leaks, f"credentials in logs: {leaks}"


@pytest.mark.deadline(150)
def test_bearer_tokens_through_the_mirror_containerd_posts_for_tokens(tmp_path, need_binary):
    tokens = TokenService(tmp_path, {USER: PASSWORD}).start()
    try:
        reg = Registry(tmp_path, auth=tokens.registry_auth()).start()
        img = build_oci_image(tmp_path / "layout", layer_sizes=(1 << 20, 50 << 10), seed=b"tok")
        push_image(tmp_path, img, reg, creds=f"{USER}:{PASSWORD}")
        d = start_daemon(tmp_path, "d1", registry_map=f"{reg.host}={reg.url}")

        ctd = Containerd(tmp_path).start()
        ctd.mirror(reg.host, d.proxy_port)
        # Anonymous: the token service grants nothing, the registry refuses.
        cp = ctd.ctr("images", "pull", "--hosts-dir", ctd.hosts, "--snapshotter", "native",
                     f"{reg.host}/test/img:v1", check=False)
        assert cp.returncode != 0, "an anonymous pull of a private image succeeded"
        # With a user: containerd asks for a token with POST and pulls through P2P.
        ctd.ctr("images", "pull", "--hosts-dir", ctd.hosts, "--snapshotter", "native",
                "--user", f"{USER}:{PASSWORD}", f"{reg.host}/test/img:v1")
        assert any(m == "POST" for m, _, _ in tokens.requests), tokens.requests
        assert proxy_metric(d, "p2p") == 1 + len(img.layers)

        # A cached blob, asked for with no token: the registry's challenge, not the blob.
        layer = img.layers[0]
        status, hdrs, _ = raw_get(d.proxy_port,
                                  f"/v2/test/img/blobs/{layer['digest']}?ns={reg.host}")
        assert status == 401
        assert hdrs.get("www-authenticate", "").startswith("Bearer realm="), hdrs
        tok = tokens.token(USER, ["repository:test/img:pull"])
        status, hdrs, body = raw_get(d.proxy_port,
                                     f"/v2/test/img/blobs/{layer['digest']}?ns={reg.host}",
                                     [f"Authorization: Bearer {tok}"])
        assert status == 200 and len(body) == layer["size"]

        leaks = logs_without_secret(tmp_path, [PASSWORD, tok.split(".")[2]])
        assert not leaks, f"credentials in logs: {leaks}"
    finally:
        tokens.stop()
