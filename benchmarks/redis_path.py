"""The Redis path against its engine: ``python -m benchmarks.redis_path [--jobs N]``.

Starts its own ``redis-server`` (free loopback port) and prints, side by side, each figure for
trio_bg's ``DurableQueue`` on Redis and for raw streaq on trio with the same JSON serializer:

- **drain**: ``--jobs`` ``add`` jobs queued with no worker, then one worker process
  (concurrency 32) started; jobs/s from its start until the stream is empty and nothing is
  pending (the workers' start-up is inside both);
- **enqueue one by one** and **enqueue_many** (batches of 100), jobs/s, from the app;
- **one job at a time**, p50 / p99 enqueue -> result with default settings, a worker process;
  beside it the floor of a hand-off between two processes through Redis (coredis on trio: an
  LPUSH answered by a BLPOP in the other process, round trip).

Medians of ``--rounds`` rounds, the two sides interleaved. Figures depend on the machine.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import trio

from tests import durable_jobs as jobs
from tests.redis_server import RedisServer

ROOT = Path(__file__).resolve().parent.parent
CONCURRENCY = 32
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def raw_worker(url: str) -> Any:
    """A raw streaq worker (trio backend, trio_bg's JSON) with ``add`` registered."""
    from streaq import Worker

    from trio_bg.durable._serialization import dumps, loads

    worker: Any = Worker(
        redis_url=url,
        queue_name="raw",
        concurrency=CONCURRENCY,
        prefetch=1,
        serializer=dumps,
        deserializer=loads,
        anyio_backend="trio",
    )

    async def add(a: int, b: int) -> int:
        return a + b

    worker.add = worker.task(name="add")(add)
    return worker


def spawn(kind: str, url: str) -> subprocess.Popen[bytes]:
    if kind == "trio_bg":
        env = dict(os.environ, TRIO_BG_TEST_REDIS_URL=url, TRIO_BG_TEST_RECLAIM="")
        command = [
            sys.executable, "-m", "trio_bg", "worker", "tests.durable_jobs:queue",
            "--concurrency", str(CONCURRENCY), "--log-level", "WARNING",
        ]  # fmt: skip
    else:
        env = dict(os.environ)
        command = [sys.executable, "-m", "benchmarks.redis_path", "--raw-worker", url]
    return subprocess.Popen(command, cwd=ROOT, env=env, stdin=subprocess.DEVNULL)


async def settled(redis: Any, stream: str) -> bool:
    """The stream holds nothing undelivered and nothing pending."""
    if not await redis.exists([stream]):
        return False
    length = int(await redis.xlen(stream))
    groups = await redis.xinfo_groups(stream)
    pending = sum(int(g["pending"] or 0) for g in groups)
    return length == 0 and pending == 0 and bool(groups)


async def drain(kind: str, url: str, count: int) -> float:
    """Jobs/s of one worker process of ``kind`` started on ``count`` queued jobs."""
    return (await measured_drain(kind, url, count))[0]


async def measured_drain(kind: str, url: str, count: int) -> tuple[float, float, float]:
    """:func:`drain`, with the Redis commands per job (``INFO commandstats``, the harness's own
    polling left out) and the worker process's CPU per job in microseconds."""
    queue = jobs.make_queue(url)
    async with queue:
        redis = queue.redis
        await redis.flushall()
        if kind == "trio_bg":
            for start in range(0, count, 500):
                await queue.enqueue_many([(jobs.add, (i, 1)) for i in range(start, start + 500)])
            stream = f"streaq:{jobs.QUEUE_NAME}:queues:normal"
        else:
            raw = raw_worker(url)
            async with raw:
                for start in range(0, count, 500):
                    await raw.enqueue_many(
                        [raw.add.enqueue(i, 1) for i in range(start, start + 500)]
                    )
            stream = "streaq:raw:queues:normal"
        return await watch_drain(redis, stream, count, lambda: spawn(kind, url))


async def watch_drain(
    redis: Any, stream: str, count: int, start: Callable[[], subprocess.Popen[bytes]]
) -> tuple[float, float, float]:
    """Start a worker process and wait until ``stream`` is drained: jobs/s, Redis commands per
    job (each :func:`settled` poll's three left out), worker CPU per job (µs)."""
    before = await commands_run(redis)
    process = start()
    began = time.perf_counter()
    polls = 0
    try:
        with trio.fail_after(120):
            while not await settled(redis, stream):
                polls += 1
                await trio.sleep(0.005)
        rate = count / (time.perf_counter() - began)
        cpu = cpu_seconds(process.pid)
    finally:
        process.kill()
        process.wait()
    # The last poll, the INFO of the count itself: 3 + 1 more.
    commands = await commands_run(redis) - before - 3 * (polls + 1) - 1
    return rate, commands / count, cpu / count * 1e6


async def commands_run(redis: Any) -> int:
    """Commands Redis has run since its start (``INFO commandstats``; a script's count too)."""
    stats = await redis.info("commandstats")
    return sum(int(v["calls"]) for v in stats.values())


def cpu_seconds(pid: int) -> float:
    """utime + stime of a live process, from /proc (Linux)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


async def enqueues(kind: str, url: str, count: int, batch: bool) -> float:
    queue = jobs.make_queue(url)
    async with queue:
        await queue.redis.flushall()
        if kind == "trio_bg":
            began = time.perf_counter()
            if batch:
                for start in range(0, count, 100):
                    await queue.enqueue_many(
                        [(jobs.add, (i, 1)) for i in range(start, start + 100)]
                    )
            else:
                for i in range(count):
                    await queue.enqueue(jobs.add, i, 1)
            return count / (time.perf_counter() - began)
        raw = raw_worker(url)
        async with raw:
            began = time.perf_counter()
            if batch:
                for start in range(0, count, 100):
                    await raw.enqueue_many(
                        [raw.add.enqueue(i, 1) for i in range(start, start + 100)]
                    )
            else:
                for i in range(count):
                    await raw.add.enqueue(i, 1)
            return count / (time.perf_counter() - began)


async def one_at_a_time(url: str, samples: int) -> tuple[float, float]:
    queue = jobs.make_queue(url)
    process = spawn("trio_bg", url)
    try:
        async with queue:
            warm = await queue.enqueue(jobs.add, 0, 0)
            with trio.fail_after(30):
                await warm.get()
            times: list[float] = []
            for i in range(samples):
                began = time.perf_counter()
                handle = await queue.enqueue(jobs.add, i, 1)
                await handle.get()
                times.append((time.perf_counter() - began) * 1000)
    finally:
        process.kill()
        process.wait()
    return p50_p99(times)


async def raw_one_at_a_time(url: str, samples: int) -> tuple[float, float]:
    """:func:`one_at_a_time` for raw streaq: its worker process, an enqueue with streaq, and the
    result taken from one pattern subscription on streaq's result channels, opened once (streaq's
    own ``Task.result()`` subscribes per call, about 100 ms each)."""
    process = spawn("raw", url)
    try:
        raw = raw_worker(url)
        async with raw:

            def enqueue(i: int) -> tuple[str, Awaitable[object]]:
                task = raw.add.enqueue(i, 1)
                return task.id, task

            channels = f"{raw.prefix}:channels:"
            return await pushed_round_trips(raw.redis, channels, samples, enqueue)
    finally:
        process.kill()
        process.wait()


async def pushed_round_trips(
    client: Any,
    channels: str,
    samples: int,
    enqueue: Callable[[int], tuple[str, Awaitable[object]]],
) -> tuple[float, float]:
    """p50 and p99 (ms) of one job at a time: ``enqueue(i)`` gives the job's id and the
    awaitable that enqueues it; its result is the message on channel ``channels + id``, taken
    from one pattern subscription opened first. The first 10 (the worker's start-up and first
    reads) are not counted."""
    waiting: dict[str, trio.Event] = {}

    async def listen() -> None:
        async with client.pubsub(patterns=[channels + "*"]) as pubsub:
            async for message in pubsub:
                channel = message.get("channel")
                if isinstance(channel, bytes):
                    channel = channel.decode()
                event = waiting.pop(str(channel).removeprefix(channels), None)
                if event is not None:
                    event.set()

    times: list[float] = []
    async with trio.open_nursery() as nursery:
        nursery.start_soon(listen)
        await trio.sleep(0.2)  # the subscription is in place
        for i in range(samples + 10):
            job_id, enqueued = enqueue(i)
            done = waiting[job_id] = trio.Event()  # before the enqueue: a result may be quick
            began = time.perf_counter()
            await enqueued
            with trio.fail_after(30):
                await done.wait()
            if i >= 10:
                times.append((time.perf_counter() - began) * 1000)
        nursery.cancel_scope.cancel()
    return p50_p99(times)


def p50_p99(times: list[float]) -> tuple[float, float]:
    """The median and the 99th percentile of ``times``."""
    ordered = sorted(times)
    return statistics.median(ordered), ordered[max(0, int(len(ordered) * 0.99) - 1)]


async def floor(url: str, samples: int) -> tuple[float, float]:
    """LPUSH in this process, BLPOP and LPUSH back in another: one hand-off each way."""
    from coredis import Redis

    echo = subprocess.Popen(  # noqa: ASYNC220 - a process started once, before the timing
        [sys.executable, "-m", "benchmarks.redis_path", "--echo", url], cwd=ROOT
    )
    try:
        client: Any = Redis.from_url(url)
        async with client:
            await client.delete(["bench:ping", "bench:pong"])
            times: list[float] = []
            for i in range(samples + 10):
                began = time.perf_counter()
                await client.lpush("bench:ping", [str(i)])
                await client.blpop(["bench:pong"], timeout=10)
                if i >= 10:
                    times.append((time.perf_counter() - began) * 1000)
    finally:
        echo.kill()
        echo.wait()
    return p50_p99(times)


async def _echo(url: str) -> None:
    from coredis import Redis

    client: Any = Redis.from_url(url)
    async with client:
        while True:
            got = await client.blpop(["bench:ping"], timeout=30)
            if got is None:
                return
            await client.lpush("bench:pong", [got[1]])


async def _raw_worker(url: str) -> None:
    worker = raw_worker(url)
    await worker.run_async()


async def run(count: int, rounds: int, samples: int) -> None:
    server = RedisServer(Path(os.environ.get("TMPDIR", "/tmp")))
    server.start()
    try:
        url = server.url
        rows: dict[str, list[float]] = {}
        for _ in range(rounds):
            for kind in ("trio_bg", "raw"):
                rows.setdefault(f"drain {kind}", []).append(await drain(kind, url, count))
                rows.setdefault(f"one {kind}", []).append(await enqueues(kind, url, count, False))
                rows.setdefault(f"many {kind}", []).append(await enqueues(kind, url, count, True))
        p50, p99 = await one_at_a_time(url, samples)
        f50, f99 = await floor(url, samples)
    finally:
        server.stop()
    med = {key: statistics.median(values) for key, values in rows.items()}
    print(f"Redis path, {count:,} jobs, medians of {rounds} rounds (jobs/s):")
    labels = {
        "drain": "drain, 1 worker, concurrency 32",
        "one": "enqueue one by one",
        "many": "enqueue_many, batches of 100",
    }
    for what, label in labels.items():
        ours, raw = med[f"{what} trio_bg"], med[f"{what} raw"]
        print(f"  {label:32} trio_bg {ours:8.0f}   raw streaq {raw:8.0f}   {ours / raw:5.2f}x")
    print(f"One job at a time, {samples} samples (ms):")
    print(f"  trio_bg enqueue -> get()        p50 {p50:6.2f}   p99 {p99:6.2f}")
    print(f"  LPUSH/BLPOP hand-off (floor)    p50 {f50:6.2f}   p99 {f99:6.2f}")
    print(f"  ratio                           p50 {p50 / f50:6.2f}x  p99 {p99 / f99:6.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.redis_path")
    parser.add_argument("--jobs", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--samples", type=int, default=200)
    parser.add_argument("--raw-worker", metavar="URL", help=argparse.SUPPRESS)
    parser.add_argument("--echo", metavar="URL", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.raw_worker:
        trio.run(_raw_worker, args.raw_worker)
    elif args.echo:
        trio.run(_echo, args.echo)
    else:
        trio.run(run, args.jobs, args.rounds, args.samples)


if __name__ == "__main__":
    main()
