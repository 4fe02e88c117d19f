#!/usr/bin/python3
"""A hostile scheduler client: one host that floods the scheduler with AnnouncePeer streams
or with short tasks, over python3-grpcio's asyncio API (thousands of calls on one thread).
Used by tests/integration/test_hostile.py and bench/sched-flood; prints one JSON line.

  hostile_flood.py --addr 127.0.0.1:PORT --host flood streams N --hold SECONDS
      opens N streams, each registering a distinct task, holds them open, then cancels;
      reports how many were answered and how many refused (RESOURCE_EXHAUSTED)
  hostile_flood.py --addr ... --host flood2 tasks N
      N short tasks: register, progress (one 1 MiB piece and its digest), finished,
      half-close; reports how many finished and how many were refused
"""

import argparse
import asyncio
import hashlib
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import harness  # noqa: E402  (proto stubs only)

MiB = 1 << 20


def task_of(host, i):
    return hashlib.sha256(f"{host}/{i}".encode()).hexdigest()


def reg(pb, host, i):
    return pb.scheduler_pb2.AnnouncePeerRequest(register=pb.scheduler_pb2.RegisterPeer(
        task_id=task_of(host, i), peer_id=f"{host}-p{i}", host_id=host,
        url=f"http://flood.invalid/{host}/{i}"))


async def announce(stub, pb, host):
    s = pb.scheduler_pb2
    await stub.AnnounceHost(s.AnnounceHostRequest(host=s.Host(
        id=host, hostname=host, ip="127.0.0.1", piece_port=9, type=s.HOST_TYPE_NORMAL,
        upload_capacity=MiB)), timeout=10)


async def streams(stub, pb, host, n, hold, timeout):
    import grpc
    out = {"answered": 0, "exhausted": 0, "other": 0}
    calls = []

    async def one(i):
        q = asyncio.Queue()
        await q.put(reg(pb, host, i))

        async def reqs():
            while True:
                m = await q.get()
                if m is None:
                    return
                yield m

        call = stub.AnnouncePeer(reqs(), timeout=timeout)
        calls.append((call, q))
        try:
            await call.read()
            out["answered"] += 1
        except grpc.aio.AioRpcError as e:
            out["exhausted" if e.code() == grpc.StatusCode.RESOURCE_EXHAUSTED else "other"] += 1

    t0 = time.monotonic()
    await asyncio.gather(*(one(i) for i in range(n)))
    out["open_s"] = round(time.monotonic() - t0, 3)
    print(json.dumps({"phase": "open", **out}), flush=True)
    await asyncio.sleep(hold)
    for call, q in calls:
        call.cancel()
    return out


async def tasks(stub, pb, host, n, concurrency, timeout):
    import grpc
    s = pb.scheduler_pb2
    out = {"finished": 0, "exhausted": 0, "other": 0}
    sem = asyncio.Semaphore(concurrency)

    async def one(i):
        async with sem:
            call = stub.AnnouncePeer(timeout=timeout)
            try:
                await call.write(reg(pb, host, i))
                await call.read()
                await call.write(s.AnnouncePeerRequest(progress=s.PieceProgress(
                    pieces=[0], content_length=MiB, piece_length=MiB,
                    digests=[pb.common_pb2.PieceDigest(number=0, sha256=bytes(32))])))
                await call.write(s.AnnouncePeerRequest(finished=s.PeerFinished(
                    content_length=MiB, total_pieces=1)))
                await call.done_writing()
                await call.wait_for_connection()
                code = await call.code()
                if code == grpc.StatusCode.OK:
                    out["finished"] += 1
                elif code == grpc.StatusCode.RESOURCE_EXHAUSTED:
                    out["exhausted"] += 1
                else:
                    out["other"] += 1
            except grpc.aio.AioRpcError as e:
                out["exhausted" if e.code() == grpc.StatusCode.RESOURCE_EXHAUSTED else "other"] += 1
            except asyncio.InvalidStateError:
                out["other"] += 1

    t0 = time.monotonic()
    await asyncio.gather(*(one(i) for i in range(n)))
    out["seconds"] = round(time.monotonic() - t0, 3)
    return out


async def main_async(a):
    import grpc
    pb = harness.proto_modules()
    async with grpc.aio.insecure_channel(a.addr) as ch:
        stub = pb.scheduler_pb2_grpc.SchedulerStub(ch)
        await announce(stub, pb, a.host)

        async def keep_announcing():  # a live host: it is not expired under the flood
            while True:
                await asyncio.sleep(2)
                try:
                    await announce(stub, pb, a.host)
                except grpc.aio.AioRpcError:
                    pass

        keeper = asyncio.ensure_future(keep_announcing())
        if a.mode == "streams":
            r = await streams(stub, pb, a.host, a.n, a.hold, a.timeout)
        else:
            r = await tasks(stub, pb, a.host, a.n, a.concurrency, a.timeout)
        keeper.cancel()
        print(json.dumps({"phase": "done", **r}), flush=True)
        # grpc.aio can hang closing a channel with thousands of cancelled calls: the
        # process ends here, the kernel closes the connection (the server sees it).
        os._exit(0)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--addr", required=True)
    p.add_argument("--host", default="flood")
    p.add_argument("--timeout", type=float, default=60)
    p.add_argument("mode", choices=["streams", "tasks"])
    p.add_argument("n", type=int)
    p.add_argument("--hold", type=float, default=5)
    p.add_argument("--concurrency", type=int, default=64)
    a = p.parse_args(argv)
    asyncio.run(main_async(a))
    sys.stdout.flush()
    os._exit(0)  # grpc.aio can linger on thousands of cancelled calls at exit


if __name__ == "__main__":
    main()
