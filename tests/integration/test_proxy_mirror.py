"""The daemon as a registry mirror for skopeo and containerd, with the real Debian
docker-registry, skopeo and containerd; an OCI image built from scratch in the test."""

import json
import socket
import urllib.request
from pathlib import Path

import pytest

import harness
from harness import scaled, start_daemon, start_scheduler, wait_hosts
from proxy_support import (Containerd, Registry, build_oci_image, check_pulled_layout,
                           proxy_metric, pull_image, push_image)


def registry_manifest_digest(registry, repo, tag):
    req = urllib.request.Request(
        f"{registry.url}/v2/{repo}/manifests/{tag}", method="HEAD",
        headers={"Accept": "application/vnd.oci.image.manifest.v1+json"})
    with urllib.request.urlopen(req, timeout=10) as r:
        return r.headers["Docker-Content-Digest"]


def raw_get(port, path, headers=(), timeout=20):
    """GET over a fresh socket; returns (status, {lower-name: value}, body)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        lines = [f"GET {path} HTTP/1.1", f"Host: 127.0.0.1:{port}", "Connection: close"]
        lines += list(headers)
        s.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        data = b""
        while True:
            chunk = s.recv(1 << 16)
            if not chunk:
                break
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    hl = head.decode("latin-1").split("\r\n")
    status = int(hl[0].split()[1])
    hdrs = {}
    for l in hl[1:]:
        k, _, v = l.partition(":")
        hdrs.setdefault(k.strip().lower(), v.strip())
    return status, hdrs, body


@pytest.mark.deadline(150)
def test_skopeo_pulls_through_two_daemons_registry_serves_each_blob_once(tmp_path, need_binary):
    reg = Registry(tmp_path).start()
    img = build_oci_image(tmp_path / "layout", layer_sizes=(3 << 20, 1 << 20, 300 << 10))
    push_image(tmp_path, img, reg)
    pushed_requests = len(reg.requests())

    s = start_scheduler(tmp_path)
    seed = start_daemon(tmp_path, "seed", scheduler=s, seed=True, registry_mirror=reg.url)
    d1 = start_daemon(tmp_path, "d1", scheduler=s, registry_mirror=reg.url)
    d2 = start_daemon(tmp_path, "d2", scheduler=s, registry_mirror=reg.url)
    wait_hosts(s, 3)

    blobs = [img.config_digest] + [l["digest"] for l in img.layers]
    for d in (d1, d2):
        out = tmp_path / f"pulled-{d.name}"
        pull_image(tmp_path, reg, out, d.proxy_port)
        check_pulled_layout(out, img)
        assert proxy_metric(d, "p2p") == len(blobs), \
            f"{d.name} served {proxy_metric(d, 'p2p')} blobs through P2P, expected {len(blobs)}"
    assert registry_manifest_digest(reg, "test/img", "v1") == img.manifest_digest

    sizes = {img.config_digest: len((img.layout / "blobs" / "sha256" /
                                     img.config_digest[7:]).read_bytes())}
    sizes.update({l["digest"]: l["size"] for l in img.layers})
    report = []
    for dg in blobs:
        served = reg.blob_bytes_served(dg)
        gets = len(reg.blob_gets(dg))
        report.append(f"{dg[7:19]}: {sizes[dg]} bytes, registry sent {served} in {gets} GETs")
        # Once in total: the seed's one-byte probe (Range: bytes=0-0), then each piece once.
        assert sizes[dg] <= served <= sizes[dg] + 1, "\n".join(report)
    print("registry after the push:", pushed_requests, "requests;", "; ".join(report))
    print("seed from origin:", seed.download_bytes("origin"),
          "d1 from seed/peers:", d1.download_bytes("seed") + d1.download_bytes("peer"),
          "d2 from seed/peers:", d2.download_bytes("seed") + d2.download_bytes("peer"))

    # A range of a layer, from the task's pieces on d2 (cached now).
    layer = img.layers[0]
    data = (img.layout / "blobs" / "sha256" / layer["digest"][7:]).read_bytes()
    status, hdrs, body = raw_get(d2.proxy_port, f"/v2/test/img/blobs/{layer['digest']}",
                                 ["Range: bytes=1000-1500000"])
    assert status == 206, hdrs
    assert hdrs["content-range"] == f"bytes 1000-1500000/{len(data)}"
    assert body == data[1000:1500001]


@pytest.mark.deadline(120)
def test_containerd_pulls_and_unpacks_through_the_mirror(tmp_path, need_binary):
    reg = Registry(tmp_path).start()
    img = build_oci_image(tmp_path / "layout", layer_sizes=(2 << 20, 600 << 10), seed=b"ctd")
    push_image(tmp_path, img, reg)
    # No default upstream: the ?ns= that containerd adds names the registry, mapped to its URL.
    d = start_daemon(tmp_path, "d1", registry_map=f"{reg.host}={reg.url}")
    ctd = Containerd(tmp_path).start()
    ctd.mirror(reg.host, d.proxy_port)

    cp = ctd.ctr("images", "pull", "--hosts-dir", ctd.hosts, "--snapshotter", "native",
                 f"{reg.host}/test/img:v1")
    assert b"unpacking" in cp.stdout, cp.stdout.decode(errors="replace")[-1000:]
    ls = ctd.ctr("images", "ls").stdout.decode()
    assert img.manifest_digest in ls, ls
    blobs = 1 + len(img.layers)
    assert proxy_metric(d, "p2p") == blobs, "containerd's blobs did not come through P2P"
    for l in img.layers:
        assert reg.blob_bytes_served(l["digest"]) <= l["size"] + 1

    # Unpacked: the layers' files are in the native snapshotter's directories.
    snaps = ctd.dir / "root" / "io.containerd.snapshotter.v1.native" / "snapshots"
    found = {}
    for p in snaps.rglob("data.bin"):
        found[p.parent.name + "/" + p.name] = harness.sha256_file(p)
    assert found == img.files, f"unpacked files {found}, expected {img.files}"
