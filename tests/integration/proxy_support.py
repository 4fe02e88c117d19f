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
