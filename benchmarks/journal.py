"""``python -m benchmarks.journal [--jobs N] [--million]``: the embedded journal, side by side.

One run on this machine prints, in one table:

- the SQLite floor on this disk: fsyncs/s; one insert + commit per row (WAL, NORMAL); a full
  insert / claim / done cycle with a transaction each; batches of 100 rows per commit;
- trio_bg's journal with in-process workers (``open_worker(concurrency=16)``) at
  ``durability="normal"`` and ``"full"``: trivial jobs end to end (enqueue -> done -> result
  readable by ``get()``), started one by one by 256 concurrent tasks, and enqueued with
  ``enqueue_many`` in batches of 500;
- the same harness on the Redis backend (its own ``redis-server`` on a free loopback port,
  the in-process streaq worker);
- SqliteHuey (Huey's SQLite storage, its consumer process with 4 threads): end to end and
  draining a queued backlog;
- one job at a time, enqueue -> result: p50 / p99 with an in-process worker and with a worker
  process (``python -m trio_bg worker``) on the same file.

``--million``: 1,000,000 queued jobs through ``enqueue_many`` (batches of 1,000): the time per
batch at the start and at the end, then a claim + finish of 100 jobs with a million queued
against a fresh file, and the RSS.

Figures depend on the machine and on what else runs on it; docs/journal.md keeps them with the
machine's description.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import resource
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import trio

from tests import journal_jobs as jobs
from tests.redis_server import RedisServer

WORKER_OPTIONS = ("--concurrency", "16", "--log-level", "WARNING")
HUEY_OPTIONS = ("-w", "4", "-k", "thread", "-q")

# -- the SQLite floor ----------------------------------------------------------------------------


def floor_fsync(directory: Path, seconds: float = 1.0) -> float:
    path = directory / "fsync.bin"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        count, end = 0, time.perf_counter() + seconds
        while time.perf_counter() < end:
            os.write(fd, b"x")
            os.fsync(fd)
            count += 1
    finally:
        os.close(fd)
    return count / seconds


def _floor_db(directory: Path, name: str) -> sqlite3.Connection:
    connection = sqlite3.connect(directory / name, isolation_level=None)
    connection.execute("PRAGMA journal_mode=WAL")
    connection.execute("PRAGMA synchronous=NORMAL")
    connection.execute(
        "CREATE TABLE jobs (seq INTEGER PRIMARY KEY, payload TEXT, state TEXT NOT NULL)"
    )
    return connection


def floor_insert_commit(directory: Path, count: int) -> float:
    connection = _floor_db(directory, "floor1.db")
    start = time.perf_counter()
    for i in range(count):
        connection.execute("BEGIN")
        connection.execute("INSERT INTO jobs (payload, state) VALUES (?, 'queued')", (str(i),))
        connection.execute("COMMIT")
    return count / (time.perf_counter() - start)


def floor_cycle(directory: Path, count: int) -> float:
    connection = _floor_db(directory, "floor2.db")
    start = time.perf_counter()
    for i in range(count):
        for sql, args in (
            ("INSERT INTO jobs (payload, state) VALUES (?, 'queued')", (str(i),)),
            ("UPDATE jobs SET state = 'running' WHERE seq = ?", (i + 1,)),
            ("UPDATE jobs SET state = 'done' WHERE seq = ?", (i + 1,)),
        ):
            connection.execute("BEGIN")
            connection.execute(sql, args)
            connection.execute("COMMIT")
    return count / (time.perf_counter() - start)


def floor_batches(directory: Path, count: int) -> float:
    connection = _floor_db(directory, "floor3.db")
    start = time.perf_counter()
    for first in range(0, count, 100):
        connection.execute("BEGIN")
        connection.executemany(
            "INSERT INTO jobs (payload, state) VALUES (?, 'queued')",
            [(str(i),) for i in range(first, first + 100)],
        )
        connection.execute("COMMIT")
    return count / (time.perf_counter() - start)


# -- trio_bg, in-process workers -------------------------------------------------------------------


async def end_to_end(url: str, count: int, **options: Any) -> tuple[float, float]:
    """(jobs/s one by one from 256 tasks, jobs/s with enqueue_many of 500), enqueue -> result."""
    queue = jobs.make_queue(url, **options)
    async with queue.open_worker(concurrency=16, grace=5):
        await (await queue.enqueue(jobs.add, 0, 0)).get()  # warm
        limiter = trio.CapacityLimiter(256)

        async def one(i: int) -> None:
            async with limiter:
                handle = await queue.enqueue(jobs.add, i, 1)
                assert await handle.get() == i + 1

        start = time.perf_counter()
        async with trio.open_nursery() as nursery:
            for i in range(count):
                nursery.start_soon(one, i)
        single = count / (time.perf_counter() - start)

        start = time.perf_counter()
        for first in range(0, count, 500):
            handles = await queue.enqueue_many(
                [(jobs.add, (i, 1)) for i in range(first, min(first + 500, count))]
            )
            for handle in handles:
                await handle.get()
        batched = count / (time.perf_counter() - start)
    return single, batched


async def one_at_a_time(url: str, samples: int, *, in_process: bool) -> tuple[float, float]:
    """p50, p99 in ms of enqueue -> get() for one job at a time."""
    queue = jobs.make_queue(url)
    times: list[float] = []
    worker = queue.open_worker(concurrency=16, grace=5) if in_process else queue
    async with worker:
        await (await queue.enqueue(jobs.add, 0, 0)).get()  # warm (and a worker is there)
        for i in range(samples):
            start = time.perf_counter()
            handle = await queue.enqueue(jobs.add, i, 1)
            await handle.get()
            times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times), statistics.quantiles(times, n=100)[98]


@contextlib.contextmanager
def worker_process(db: Path) -> Iterator[subprocess.Popen[bytes]]:
    env = dict(os.environ, TRIO_BG_TEST_JOURNAL=str(db))
    process = subprocess.Popen(
        [sys.executable, "-m", "trio_bg", "worker", "tests.journal_jobs:queue", *WORKER_OPTIONS],
        env=env,
    )
    try:
        yield process
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


# -- SqliteHuey ----------------------------------------------------------------------------------


@contextlib.contextmanager
def huey_consumer(db: Path) -> Iterator[None]:
    env = dict(os.environ, TRIO_BG_BENCH_HUEY=str(db))
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "huey.bin.huey_consumer",
            "benchmarks.huey_jobs.huey",
            *HUEY_OPTIONS,
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        yield
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def huey_rates(directory: Path, count: int) -> tuple[float, float]:
    """(jobs/s end to end, jobs/s draining a queued backlog) of SqliteHuey."""
    os.environ["TRIO_BG_BENCH_HUEY"] = str(directory / "huey.db")
    from benchmarks import huey_jobs

    with huey_consumer(directory / "huey.db"):
        huey_jobs.add(0, 0).get(blocking=True, timeout=30)
        start = time.perf_counter()
        results = [huey_jobs.add(i, 1) for i in range(count)]
        for result in results:
            result.get(blocking=True, timeout=120)
        end_to_end_rate = count / (time.perf_counter() - start)
    results = [huey_jobs.add(i, 1) for i in range(count)]
    start = time.perf_counter()
    with huey_consumer(directory / "huey.db"):
        for result in results:
            result.get(blocking=True, timeout=120)
        drain_rate = count / (time.perf_counter() - start)
    return end_to_end_rate, drain_rate


# -- a million ------------------------------------------------------------------------------------


def rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


async def million(directory: Path, total: int = 1_000_000) -> None:
    queue = jobs.make_queue(f"sqlite:///{directory / 'million.db'}")
    batch_times: list[float] = []
    first: list[str] = []
    async with queue:
        for start_at in range(0, total, 1000):
            start = time.perf_counter()
            handles = await queue.enqueue_many(
                [(jobs.add, (i, 1)) for i in range(start_at, start_at + 1000)]
            )
            batch_times.append(time.perf_counter() - start)
            if not first:
                first = [handle.id for handle in handles[:100]]
            del handles
        stats = await queue.statistics()
    head = statistics.median(batch_times[:50]) * 1000
    tail = statistics.median(batch_times[-50:]) * 1000
    print(
        f"  enqueue_many of 1,000: {head:.1f} ms per batch at the start, {tail:.1f} ms at "
        f"{stats.depth:,} queued ({tail / head:.2f}x); app RSS {rss_mib():.0f} MiB"
    )
    big = await claim_and_finish(directory / "million.db", first)
    fresh = jobs.make_queue(f"sqlite:///{directory / 'fresh.db'}")
    async with fresh:
        handles = await fresh.enqueue_many([(jobs.add, (i, 1)) for i in range(1000)])
    small = await claim_and_finish(directory / "fresh.db", [h.id for h in handles[:100]])
    print(
        f"  the first 100 jobs claimed, run and finished by a worker: {small:.1f} ms with "
        f"1,000 queued, {big:.1f} ms with a million ({big / small:.2f}x); RSS {rss_mib():.0f} MiB"
    )


async def claim_and_finish(db: Path, ids: list[str]) -> float:
    """ms for an in-process worker to run the jobs ``ids`` (the oldest queued: claimed first)."""
    queue = jobs.make_queue(f"sqlite:///{db}")
    async with queue:
        handles = [await queue.find_job(job_id) for job_id in ids]
        start = time.perf_counter()
        async with queue.open_worker(concurrency=100, grace=1):
            for handle in handles:
                assert handle is not None
                await handle.get()
            elapsed = time.perf_counter() - start
        return elapsed * 1000


# -- the run --------------------------------------------------------------------------------------


async def run(count: int, samples: int, with_million: bool) -> None:
    load = os.getloadavg()[0]
    print(f"journal benchmark: {count} jobs, {os.cpu_count()} CPUs, load average {load:.2f}")
    with tempfile.TemporaryDirectory() as name:
        directory = Path(name)
        fsyncs = floor_fsync(directory)
        insert = floor_insert_commit(directory, 5000)
        cycle = floor_cycle(directory, 2000)
        batches = floor_batches(directory, 100_000)
        print("SQLite floor on this disk")
        print(f"  fsync:                                 {fsyncs:9.0f} /s")
        print(f"  insert + commit per row (WAL, NORMAL): {insert:9.0f} rows/s")
        print(f"  insert / claim / done, a commit each:  {cycle:9.0f} jobs/s")
        print(f"  100 rows per commit:                   {batches:9.0f} rows/s")
        rows: list[tuple[str, float, float]] = []
        for durability in ("normal", "full"):
            url = f"sqlite:///{directory / f'{durability}.db'}"
            single, batched = await end_to_end(url, count, durability=durability)
            rows.append((f"trio_bg journal, {durability}", single, batched))
        redis_dir = directory / "redis"
        redis_dir.mkdir()
        server = RedisServer(redis_dir)
        server.start()
        try:
            single, batched = await end_to_end(server.url, count, reclaim_timeout=10)
            rows.append(("trio_bg Redis (in-process streaq worker)", single, batched))
        finally:
            server.stop()
        print(f"end to end, enqueue -> result ({count} trivial jobs)")
        print(f"  {'':42} {'one by one':>12} {'enqueue_many':>13}")
        for label, single, batched in rows:
            print(f"  {label:42} {single:9.0f} /s {batched:10.0f} /s")
        huey_e2e, huey_drain = huey_rates(directory, count)
        print(
            f"  {'SqliteHuey (consumer, 4 threads)':42} {huey_e2e:9.0f} /s"
            f"   (drain {huey_drain:.0f} /s)"
        )
        normal = rows[0][1]
        print(
            f"  ratios: journal normal / SqliteHuey {normal / huey_e2e:.2f}x; "
            f"journal normal / insert+commit floor {normal / insert:.2f}x; "
            f"journal normal / Redis {normal / rows[2][1]:.2f}x"
        )
        print(f"one job at a time, enqueue -> result ({samples} samples)")
        p50, p99 = await one_at_a_time(
            f"sqlite:///{directory / 'latency.db'}", samples, in_process=True
        )
        print(f"  in-process worker:         p50 {p50:.2f} ms, p99 {p99:.2f} ms")
        db = directory / "latency2.db"
        with worker_process(db):
            p50, p99 = await one_at_a_time(f"sqlite:///{db}", samples, in_process=False)
        print(f"  worker process, same host: p50 {p50:.2f} ms, p99 {p99:.2f} ms")
        if with_million:
            print("a million queued jobs")
            await million(directory)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.journal")
    parser.add_argument("--jobs", type=int, default=5000, help="jobs per throughput run")
    parser.add_argument("--samples", type=int, default=500, help="one-at-a-time samples")
    parser.add_argument("--million", action="store_true", help="also queue 1,000,000 jobs")
    args = parser.parse_args(argv)
    os.environ.setdefault("PYTHONPATH", str(Path(__file__).resolve().parent.parent))
    trio.run(run, args.jobs, args.samples, args.million)
    return 0


if __name__ == "__main__":
    sys.exit(main())
