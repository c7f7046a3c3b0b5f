"""What Redis Streams cost without streaq: ``python -m benchmarks.streams_floor [--jobs N]``.

Issue 18 asks whether streaq stands in the way of the Redis path's goals. This is the smallest
queue on the same engine (Redis Streams, a consumer group, acks), written here from the Redis
documentation, never from streaq, and measured the way :mod:`benchmarks.redis_path` measures
trio_bg and raw streaq (it imports that module's harness and runs its rows too, interleaved, in
the same run):

- enqueue: one ``XADD`` with the job's JSON inline (``enqueue_many``: the XADDs of a batch in one
  MULTI/EXEC);
- a worker process: ``XREADGROUP COUNT 32 BLOCK``, each job run as a trio task (at most 32 at
  once), then one pipeline per finished job: ``XACK``, ``XDEL``, ``SET`` of the result with a TTL
  and ``PUBLISH`` on the job's channel;
- the app waits through one pattern subscription, opened once.

It has none of what a queue needs besides (reclaiming a dead worker's jobs, retries, delays,
keys, dead letters, schedules, progress, statistics): a floor, not a competitor. Besides the
rates it prints the Redis commands per drained job (``INFO commandstats``) and the worker's CPU
per job for the three (trio_bg, raw streaq, this floor).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable
from pathlib import Path
from typing import Any

import trio

from tests.redis_server import RedisServer

from . import redis_path

ROOT = Path(__file__).resolve().parent.parent
STREAM = "floor:jobs"
GROUP = "workers"
CONCURRENCY = 32


def _client(url: str) -> Any:
    from coredis import Redis

    return Redis.from_url(url, decode_responses=True)


async def _worker(url: str) -> None:
    """The floor's worker: read, run, ack + delete + store + publish in one pipeline per job."""
    from coredis.exceptions import StreamDuplicateConsumerGroupError

    client = _client(url)
    async with client:
        # The group may have been made by the app or an earlier worker.
        with contextlib.suppress(StreamDuplicateConsumerGroupError):
            await client.xgroup_create(STREAM, GROUP, identifier="0", mkstream=True)
        limiter = trio.CapacityLimiter(CONCURRENCY)

        async def run(entry: str, fields: dict[str, str]) -> None:
            try:
                job = json.loads(fields["data"])
                result = json.dumps({"ok": sum(job["args"])})
                async with client.pipeline(transaction=False) as pipe:
                    pipe.xack(STREAM, GROUP, [entry])
                    pipe.xdel(STREAM, [entry])
                    pipe.set(f"floor:result:{fields['id']}", result, ex=600)
                    pipe.publish(f"floor:done:{fields['id']}", result)
            finally:
                limiter.release_on_behalf_of(entry)

        async with trio.open_nursery() as nursery:
            while True:
                free = max(1, int(limiter.available_tokens))
                got = await client.xreadgroup(
                    GROUP, "w1", streams={STREAM: ">"}, count=free, block=10_000
                )
                for entries in (got or {}).values():
                    for entry in entries:
                        await limiter.acquire_on_behalf_of(entry.identifier)
                        nursery.start_soon(run, entry.identifier, dict(entry.field_values))


def _spawn_worker(url: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "benchmarks.streams_floor", "--worker", url],
        cwd=ROOT,
        stdin=subprocess.DEVNULL,
    )


def _job(i: int) -> dict[str, str]:
    job_id = f"{time.time_ns():x}-{i}"
    return {"id": job_id, "data": json.dumps({"f": "add", "args": [i, 1]})}


async def _fresh(client: Any) -> None:
    await client.flushall()
    await client.xgroup_create(STREAM, GROUP, identifier="0", mkstream=True)


async def drain(url: str, count: int) -> tuple[float, float, float]:
    """Jobs/s for one worker started on ``count`` queued jobs; Redis commands and worker CPU
    (µs) per job."""
    client = _client(url)
    async with client:
        await _fresh(client)
        for start in range(0, count, 500):
            async with client.pipeline(transaction=True) as pipe:
                for i in range(start, start + 500):
                    pipe.xadd(STREAM, _job(i))
        return await redis_path.watch_drain(client, STREAM, count, lambda: _spawn_worker(url))


async def enqueues(url: str, count: int, batch: bool) -> float:
    client = _client(url)
    async with client:
        await _fresh(client)
        began = time.perf_counter()
        if batch:
            for start in range(0, count, 100):
                async with client.pipeline(transaction=True) as pipe:
                    for i in range(start, start + 100):
                        pipe.xadd(STREAM, _job(i))
        else:
            for i in range(count):
                await client.xadd(STREAM, _job(i))
        return count / (time.perf_counter() - began)


async def one_at_a_time(url: str, samples: int) -> tuple[float, float]:
    """p50 and p99 (ms) of enqueue -> result, one job at a time, through one subscription."""
    client = _client(url)
    async with client:
        await _fresh(client)
        process = _spawn_worker(url)
        try:

            def enqueue(i: int) -> tuple[str, Awaitable[object]]:
                job = _job(i)
                return job["id"], client.xadd(STREAM, job)

            return await redis_path.pushed_round_trips(client, "floor:done:", samples, enqueue)
        finally:
            process.kill()
            process.wait()


async def run(count: int, rounds: int, samples: int) -> None:
    server = RedisServer(Path(os.environ.get("TMPDIR", "/tmp")))
    server.start()
    try:
        url = server.url
        rows: dict[str, list[tuple[float, ...]]] = {}
        for _ in range(rounds):
            for kind in ("trio_bg", "raw"):
                drained = await redis_path.measured_drain(kind, url, count)
                rows.setdefault(f"drain {kind}", []).append(drained)
                one = await redis_path.enqueues(kind, url, count, False)
                rows.setdefault(f"one {kind}", []).append((one,))
                many = await redis_path.enqueues(kind, url, count, True)
                rows.setdefault(f"many {kind}", []).append((many,))
            rows.setdefault("drain floor", []).append(await drain(url, count))
            rows.setdefault("one floor", []).append((await enqueues(url, count, False),))
            rows.setdefault("many floor", []).append((await enqueues(url, count, True),))
        ours = await redis_path.one_at_a_time(url, samples)
        raw = await redis_path.raw_one_at_a_time(url, samples)
        floor = await one_at_a_time(url, samples)
        handoff = await redis_path.floor(url, samples)
    finally:
        server.stop()

    def med(key: str, index: int = 0) -> float:
        return statistics.median(r[index] for r in rows[key])

    print(f"Redis Streams with and without streaq, {count:,} jobs, medians of {rounds} rounds:")
    print(f"  {'':34} {'trio_bg':>10} {'raw streaq':>11} {'floor':>10}   trio_bg/floor")
    labels = {"drain": "drain, jobs/s", "one": "enqueue one by one, /s", "many": "enqueue_many, /s"}
    for what, label in labels.items():
        a, b, c = med(f"{what} trio_bg"), med(f"{what} raw"), med(f"{what} floor")
        print(f"  {label:34} {a:10.0f} {b:11.0f} {c:10.0f}   {a / c:5.2f}x")
    a, b, c = (med(f"drain {k}", 1) for k in ("trio_bg", "raw", "floor"))
    print(f"  {'Redis commands per drained job':34} {a:10.1f} {b:11.1f} {c:10.1f}")
    a, b, c = (med(f"drain {k}", 2) for k in ("trio_bg", "raw", "floor"))
    print(f"  {'worker CPU per drained job, us':34} {a:10.0f} {b:11.0f} {c:10.0f}   {a / c:5.2f}x")
    print(f"One job at a time, enqueue -> result, {samples} samples (ms):")
    for label, (p50, p99) in (
        ("trio_bg (defaults)", ours),
        ("raw streaq, one pattern subscription", raw),
        ("floor queue above", floor),
        ("LPUSH/BLPOP hand-off", handoff),
    ):
        print(
            f"  {label:38} p50 {p50:6.2f} ({p50 / handoff[0]:4.1f}x)"
            f"   p99 {p99:6.2f} ({p99 / handoff[1]:4.1f}x)"
        )


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.streams_floor")
    parser.add_argument("--jobs", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--samples", type=int, default=300)
    parser.add_argument("--worker", metavar="URL", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        trio.run(_worker, args.worker)
    else:
        trio.run(run, args.jobs, args.rounds, args.samples)


if __name__ == "__main__":
    main()
