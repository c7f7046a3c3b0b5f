"""``python -m benchmarks.durable [--jobs N]``: durable-queue figures on a real redis-server.

Starts its own ``redis-server`` (free loopback port, temp dir, AOF on, as the tests do) and
``python -m trio_bg worker tests.durable_jobs:queue`` processes, then prints:

- throughput with 1 and with 3 worker processes (concurrency 16 each): ``--jobs`` ``add`` jobs
  enqueued one after another, then all awaited; jobs/s from the first enqueue to the last result;
- drain rate with 1 and with 3 worker processes: ``--jobs`` jobs enqueued first, with no worker
  running, then the workers started; jobs/s from their start to the last result (the workers'
  start-up, about 0.5 s, is inside it). This is the workers' side alone: end to end, the app
  that enqueues shares the machine with them;
- ``get()`` latency on a finished job: (a) a handle whose result this process has not seen yet
  (the job finished on the worker; the poller's next round fetches it), (b) a handle that
  already has its result (no Redis); median and p99;
- 1,000 concurrent ``get()`` in one process (time until all returned).

Figures depend on the machine; record them with its description (docs/durable.md).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import trio

from tests import durable_jobs as jobs
from tests.durable_helpers import spawn_worker, stop
from tests.redis_server import RedisServer
from trio_bg.durable import DurableHandle, DurableQueue


async def _get_all(handles: Sequence[DurableHandle[int]]) -> None:
    async with trio.open_nursery() as nursery:
        for handle in handles:
            nursery.start_soon(handle.get)


async def _ready(queue: DurableQueue) -> None:
    handle = await queue.enqueue(jobs.add, 0, 0)
    with trio.fail_after(30):
        await handle.get()


async def throughput(server: RedisServer, workers: int, count: int) -> tuple[float, float]:
    """(enqueues/s, jobs/s end to end) with ``workers`` worker processes."""
    processes = [spawn_worker(server, concurrency=16, reclaim=10) for _ in range(workers)]
    try:
        async with jobs.make_queue(server.url, reclaim_timeout=10) as queue:
            for _ in range(workers):
                await _ready(queue)
            start = time.perf_counter()
            handles = [await queue.enqueue(jobs.add, i, 1) for i in range(count)]
            enqueued = time.perf_counter()
            with trio.fail_after(600):
                await _get_all(handles)
            end = time.perf_counter()
    finally:
        for process in processes:
            stop(process)
    return count / (enqueued - start), count / (end - start)


async def drain(server: RedisServer, workers: int, count: int) -> float:
    """jobs/s of ``workers`` worker processes started on ``count`` jobs already queued."""
    async with jobs.make_queue(server.url, reclaim_timeout=10) as queue:
        handles = [await queue.enqueue(jobs.add, i, 1) for i in range(count)]
        start = time.perf_counter()
        processes = [spawn_worker(server, concurrency=16, reclaim=10) for _ in range(workers)]
        try:
            with trio.fail_after(600):
                await _get_all(handles)
            return count / (time.perf_counter() - start)
        finally:
            for process in processes:
                stop(process)


async def get_latency(server: RedisServer, samples: int) -> dict[str, float]:
    """Milliseconds for get() on finished jobs: first sight, and cached."""
    process = spawn_worker(server, concurrency=16, reclaim=10)
    first: list[float] = []
    cached: list[float] = []
    try:
        async with jobs.make_queue(server.url, reclaim_timeout=10) as queue:
            await _ready(queue)
            for i in range(samples):
                handle = await queue.enqueue(jobs.add, i, 1)
                key = f"streaq:{queue.name}:task:results:{handle.id}"
                with trio.fail_after(30):
                    while not await queue.redis.exists([key]):  # noqa: ASYNC110 - other process
                        await trio.sleep(0.001)
                start = time.perf_counter()
                await handle.get()
                first.append((time.perf_counter() - start) * 1000)
                start = time.perf_counter()
                await handle.get()
                cached.append((time.perf_counter() - start) * 1000)
    finally:
        stop(process)
    return {
        "first_median_ms": statistics.median(first),
        "first_p99_ms": statistics.quantiles(first, n=100)[98],
        "cached_median_ms": statistics.median(cached),
        "cached_p99_ms": statistics.quantiles(cached, n=100)[98],
    }


async def concurrent_gets(server: RedisServer, count: int) -> float:
    """Seconds until ``count`` concurrent get() calls all returned (jobs already enqueued)."""
    processes = [spawn_worker(server, concurrency=16, reclaim=10) for _ in range(3)]
    try:
        async with jobs.make_queue(server.url, reclaim_timeout=10) as queue:
            for _ in processes:
                await _ready(queue)
            handles = [await queue.enqueue(jobs.add, i, 1) for i in range(count)]
            start = time.perf_counter()
            with trio.fail_after(120):
                await _get_all(handles)
            return time.perf_counter() - start
    finally:
        for process in processes:
            stop(process)


async def run(count: int, samples: int) -> None:
    with tempfile.TemporaryDirectory() as directory:
        server = RedisServer(Path(directory))
        server.start()
        try:
            print(f"durable queue benchmark: {count} jobs, {os.cpu_count()} CPUs")
            for workers in (1, 3):
                await server_flush(server)
                enqueue_rate, rate = await throughput(server, workers, count)
                print(
                    f"  {workers} worker(s) x 16: {rate:8.0f} jobs/s end to end "
                    f"(enqueue {enqueue_rate:.0f}/s)"
                )
            for workers in (1, 3):
                await server_flush(server)
                rate = await drain(server, workers, count)
                print(f"  {workers} worker(s) x 16: {rate:8.0f} jobs/s draining a queued backlog")
            await server_flush(server)
            latency = await get_latency(server, samples)
            print(
                "  get() on a finished job, first sight: median "
                f"{latency['first_median_ms']:.2f} ms, p99 {latency['first_p99_ms']:.2f} ms"
            )
            print(
                "  get() on a finished job, cached:      median "
                f"{latency['cached_median_ms'] * 1000:.1f} us, "
                f"p99 {latency['cached_p99_ms'] * 1000:.1f} us"
            )
            await server_flush(server)
            seconds = await concurrent_gets(server, 1000)
            print(f"  1,000 concurrent get(): all returned in {seconds:.2f} s (3 workers)")
        finally:
            server.stop()


async def server_flush(server: RedisServer) -> None:
    """Start each measurement on an empty Redis."""
    await jobs.redis_command(server.url, "FLUSHALL")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.durable")
    parser.add_argument("--jobs", type=int, default=2000, help="jobs per throughput run")
    parser.add_argument("--samples", type=int, default=200, help="get() latency samples")
    args = parser.parse_args(argv)
    os.environ.setdefault("PYTHONPATH", str(Path(__file__).resolve().parent.parent))
    trio.run(run, args.jobs, args.samples)
    return 0


if __name__ == "__main__":
    sys.exit(main())
