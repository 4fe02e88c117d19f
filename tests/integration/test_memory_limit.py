"""--memory-limit: the piece bytes a daemon holds between the network and the disk stay
within the bound (plus one piece, slack for a piece larger than what is left: one may go
when nothing else is held), transfers are held back to keep them there, and the download is
exact and not starved. Each test uses settings under which the daemon would hold several
times the bound without it (measured with the bound ignored: see the comments), so the bound
is what keeps memory down: a small content from the origin, a 2 GiB task through a seed and
a daemon (RSS too), and an origin without range support read as one stream."""

import pytest

from harness import (DAEMON_RSS_OVERHEAD, MiB, RssSampler, describe, generated_through_a_seed,
                     get_sha256, piece_length_for, run_get, sanitized, sha256_file,
                     start_daemon)

PIECE = 256 << 10  # the piece length of a 64 MiB task


def _peak_of_a_download(tmp_path, origin, name, url, sha, memory_limit):
    d = start_daemon(tmp_path, name, memory_limit=memory_limit, source_concurrency=16)
    out = tmp_path / f"out-{name}"
    cp = run_get(d, url, out, timeout=90)
    assert cp.returncode == 0, f"get with --memory-limit {memory_limit}: {describe(cp)}"
    assert sha256_file(out) == sha
    m = d.metrics()
    assert m.value("damselfly_piece_buffer_bytes") == 0, "piece buffers left after the download"
    return m.value("damselfly_piece_buffer_peak_bytes"), m.value(
        "damselfly_piece_buffer_waits_total")


@pytest.mark.deadline(120)
def test_piece_memory_stays_within_the_limit(tmp_path, origin, need_binary):
    size = 64 * MiB
    sha = origin.add_random("/mem.bin", size, tmp_path / "origin")
    url = origin.url("/mem.bin")
    free_peak, free_waits = _peak_of_a_download(tmp_path, origin, "free", url, sha, "0")
    peak, waits = _peak_of_a_download(tmp_path, origin, "bounded", url, sha, "512k")
    print(f"peak piece memory: {free_peak / MiB:.2f} MiB unbounded, {peak / MiB:.2f} MiB "
          f"with --memory-limit 512k ({waits:.0f} waits)")
    assert free_waits == 0
    assert free_peak > 512 * 1024 + PIECE, \
        f"the unbounded download held only {free_peak} bytes: the test proves nothing"
    assert peak <= 512 * 1024 + PIECE, f"{peak} bytes held with --memory-limit 512k"
    assert waits > 0


# ---- a limit far below what the download would hold ----------------------------------------
#
# What a download holds in piece buffers without a bound, per daemon: every transfer
# allocates its whole piece when it starts, so a back-to-source download holds
# --source-concurrency pieces in flight, a P2P one --parent-concurrency per parent, and on
# top of either the pieces waiting to be hashed and written (up to DMF_PIECE_JOBS_MAX = 32,
# task.h). The piece length grows with the content (at most 1024 pieces): 4 MiB from 2 GiB
# + 1 byte. So with concurrency 16 a daemon would hold up to (16 + 32) x 4 MiB = 192 MiB
# (measured with --memory-limit 0: seed 188 MiB of buffers and 211-216 MiB RSS, daemon
# 128 MiB and 148 MiB RSS), six times the 32 MiB allowed here.
BIG = (2 << 30) + 1
BIG_PIECE = 4 * MiB
LIMIT = 32 * MiB


def _piece_memory(d):
    m = d.metrics()
    return (m.value("damselfly_piece_buffer_peak_bytes"),
            m.value("damselfly_piece_buffer_waits_total"),
            m.value("damselfly_piece_buffer_bytes"))


def _check_bounded(procs, peak_rss, limit, piece):
    """The limit bound every daemon of procs ({name: Daemon}): transfers were held back, the
    buffers never held more than the limit and one piece, none are left, and (but under a
    sanitizer) the RSS peak stayed within the limit and the measured overhead."""
    for name, d in procs.items():
        peak, waits, left = _piece_memory(d)
        print(f"{name}: piece buffers peak {peak / MiB:.1f} MiB, {waits:.0f} transfers held "
              f"back; peak RSS {peak_rss[name] / MiB:.1f} MiB (bound "
              f"{(limit + DAEMON_RSS_OVERHEAD) / MiB:.0f} MiB)")
        assert waits > 0, f"{name}: nothing was held back: the limit was never reached"
        assert peak <= limit + piece, \
            f"{name}: {peak / MiB:.1f} MiB of piece buffers held with a limit of {limit / MiB} MiB"
        assert left == 0, f"{name}: {left:.0f} bytes of piece buffers left after the download"
    if sanitized():
        pytest.skip("RSS is not bounded under ASan (freed memory stays in quarantine)")
    for name in procs:
        assert peak_rss[name] <= limit + DAEMON_RSS_OVERHEAD, \
            f"{name}: peak RSS {peak_rss[name] / MiB:.1f} MiB with a limit of {limit / MiB} MiB"


@pytest.mark.serial
@pytest.mark.deadline(60)
def test_limit_binds_through_a_seed_and_a_daemon(tmp_path, origin, need_binary):
    """2 GiB + 1 byte from the origin through a seed (16 range requests at once) to a daemon
    (16 requests to its parent at once), both --memory-limit 32m: each would hold up to 192
    MiB of pieces; both are held back, stay within 32 MiB + one piece of buffers and 32 MiB +
    the measured overhead of RSS, and the bytes are exact. Disk: the two piece stores (2 GiB
    each), deleted after the test; the origin makes the content on the fly."""
    assert piece_length_for(BIG) == BIG_PIECE
    procs, peak_rss, elapsed, _ = generated_through_a_seed(tmp_path, origin, BIG, 32, "32m")
    print(f"2 GiB through a seed in {elapsed:.1f} s")
    _check_bounded(procs, peak_rss, LIMIT, BIG_PIECE)


# An origin without range support is read as one stream; with no length either, its pieces
# are 4 MiB (the length is unknown). The stream is cut into pieces as fast as it comes, and
# queues up to 32 pieces for the workers (128 MiB) besides the one being filled: measured
# with the limit ignored, 100-132 MiB held at the peak (28 MiB once) for 256 MiB of content.
# 8 MiB allows the piece being filled and one waiting for the disk, so it is reached as soon
# as the workers are one piece behind.
STREAMED = 256 * MiB
STREAM_LIMIT = 8 * MiB


@pytest.mark.serial
@pytest.mark.deadline(60)
def test_limit_binds_on_an_origin_without_ranges(tmp_path, origin, need_binary):
    """A streamed origin (no Range, chunked) is held back while its pieces waiting for the
    disk fill --memory-limit 8m: the stream pauses (and with it the origin) instead of
    queueing up to 33 pieces of 4 MiB; it is read once and the bytes are exact. Disk: the
    piece store, 256 MiB."""
    gen = origin.add_generated("/stream.bin", STREAMED, seed=33, ranges=False,
                               length_mode="chunked")
    expected = gen.sha256()
    d = start_daemon(tmp_path, "d1", memory_limit="8m")
    sampler = RssSampler({"d1": d.proc.pid})
    sampler.start()
    rc, got, sha = get_sha256(d, origin.url("/stream.bin"), tmp_path / "get.stderr")
    peak_rss = sampler.finish()
    assert rc == 0, f"get exited {rc}: {(tmp_path / 'get.stderr').read_bytes()[-2000:]!r}"
    assert got == STREAMED and sha == expected, "the bytes written differ from the origin's"
    assert origin.request_count("/stream.bin") == 1, "the stream was read more than once"
    _check_bounded({"d1": d}, peak_rss, STREAM_LIMIT, piece_length_for(None))
