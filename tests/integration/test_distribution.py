"""One file to many hosts: the origin serves it about once and the bytes flow between daemons."""

import pytest

from harness import (MiB, describe, sha256_file, spawn_get, start_cluster, run_get, wait_gets)

SOURCES = ("origin", "seed", "peer", "local")


def download_counters(d):
    m = d.metrics()
    return {s: m.value("damselfly_download_bytes_total", source=s) for s in SOURCES}


@pytest.mark.deadline(360)
def test_five_daemons_one_origin_fetch_bytes_from_peers(tmp_path, origin, need_binary):
    size = 64 * MiB
    sha = origin.add_random("/blob-64m.bin", size, tmp_path / "origin")
    url = origin.url("/blob-64m.bin")
    c = start_cluster(tmp_path, daemons=5)

    outs = [tmp_path / f"out-{d.name}" for d in c.daemons]
    gets = [spawn_get(d, url, out, log_dir=tmp_path, name=f"get-{d.name}")
            for d, out in zip(c.daemons, outs)]
    results = wait_gets(gets, 240)

    for d, cp, out in zip(c.daemons, results, outs):
        assert cp.returncode == 0, f"get on {d.name}: {describe(cp)}"
        assert sha256_file(out) == sha, f"{d.name}: content differs from the origin's"

    sent = origin.sent("/blob-64m.bin")
    assert sent <= 1.05 * size, \
        f"origin sent {sent} bytes for a {size}-byte file (more than 1.05x)"

    per = {d.name: download_counters(d) for d in c.daemons}
    peer = sum(v["peer"] for v in per.values())
    seed = sum(v["seed"] for v in per.values())
    print(f"origin sent {sent} of {size}; daemons got {peer} from peers, {seed} from the seed")
    assert peer + seed > 0, f"no bytes from seed or peers in any daemon's /metrics: {per}"
    assert peer >= 0.5 * (peer + seed), \
        f"only {peer} of {peer + seed} bytes came from other daemons (not the seed): {per}"
    # The seed's uplink is the origin's: it sends each piece into the swarm once and the
    # daemons pass it on (a piece is asked of a seed only when no other parent holds it).
    assert seed <= 1.1 * size, \
        f"the seed sent {seed} bytes of a {size}-byte file (more than 1.1 copies): {per}"
    for d in c.daemons:
        ok = d.metrics().value("damselfly_tasks_total", result="succeeded")
        assert ok >= 1, f"{d.name}: damselfly_tasks_total{{result=\"succeeded\"}} is {ok}"


@pytest.mark.deadline(180)
def test_second_get_on_holder_contacts_neither_origin_nor_parents(tmp_path, origin, need_binary):
    size = 8 * MiB + 4321
    sha = origin.add_random("/again.bin", size, tmp_path / "origin")
    url = origin.url("/again.bin")
    c = start_cluster(tmp_path, daemons=2)
    d1, d2 = c.daemons

    for d in (d1, d2):
        cp = run_get(d, url, tmp_path / f"first-{d.name}", timeout=90)
        assert cp.returncode == 0, f"first get on {d.name}: {describe(cp)}"
        assert sha256_file(tmp_path / f"first-{d.name}") == sha

    requests_before = origin.request_count()
    uploads_before = {d.name: d.upload_bytes() for d in c.all}
    d1_before = download_counters(d1)

    out = tmp_path / "second-d1"
    cp = run_get(d1, url, out, timeout=60)
    assert cp.returncode == 0, f"second get on d1: {describe(cp)}"
    assert sha256_file(out) == sha

    assert origin.request_count() == requests_before, \
        f"origin got requests during the second get: {origin.requests_for()[requests_before:]}"
    uploads_after = {d.name: d.upload_bytes() for d in c.all}
    for d in c.all:
        if d is d1:
            continue
        assert uploads_after[d.name] == uploads_before[d.name], \
            f"{d.name} uploaded {uploads_after[d.name] - uploads_before[d.name]} bytes " \
            f"during d1's second get"
    d1_after = download_counters(d1)
    for s in ("origin", "seed", "peer"):
        assert d1_after[s] == d1_before[s], \
            f"d1 received {d1_after[s] - d1_before[s]} bytes from {s} for a file it held"
    assert d1_after["local"] - d1_before["local"] >= size, \
        f"d1's source=\"local\" grew by {d1_after['local'] - d1_before['local']}, " \
        f"expected at least {size}"
