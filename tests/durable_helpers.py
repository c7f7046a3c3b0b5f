"""Worker processes and Redis checks for the durable-queue tests."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import IO

import trio

from tests.redis_server import RedisServer
from trio_bg.durable import DurableQueue


def spawn_worker(
    server: RedisServer,
    *,
    concurrency: int = 4,
    reclaim: float | None = 2.0,
    grace: float = 5.0,
    stderr: IO[bytes] | IO[str] | None = None,
) -> subprocess.Popen[bytes]:
    """``python -m trio_bg worker tests.durable_jobs:queue`` on ``server`` (PYTHONPATH kept)."""
    env = dict(
        os.environ,
        TRIO_BG_TEST_REDIS_URL=server.url,
        TRIO_BG_TEST_RECLAIM="" if reclaim is None else str(reclaim),
    )
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "trio_bg",
            "worker",
            "tests.durable_jobs:queue",
            "--concurrency",
            str(concurrency),
            "--grace",
            str(grace),
            "--max-backoff",
            "0.5",
            "--log-level",
            "WARNING",
        ],
        env=env,
        stdin=subprocess.DEVNULL,
        stderr=stderr,
    )


def stop(process: subprocess.Popen[bytes], sig: int = signal.SIGTERM, timeout: float = 20) -> int:
    """Send ``sig`` to the process by PID (if it still runs) and wait for its exit code."""
    if process.poll() is None:
        os.kill(process.pid, sig)
    try:
        return process.wait(timeout)
    except subprocess.TimeoutExpired:
        os.kill(process.pid, signal.SIGKILL)
        process.wait()
        raise


@contextmanager
def workers(
    server: RedisServer, count: int = 1, **options: float
) -> Iterator[list[subprocess.Popen[bytes]]]:
    """``count`` worker processes for the block; any still running at the end is SIGKILLed."""
    processes = [spawn_worker(server, **options) for _ in range(count)]  # type: ignore[arg-type]
    try:
        yield processes
    finally:
        for process in processes:
            if process.poll() is None:
                os.kill(process.pid, signal.SIGKILL)
            process.wait()


async def counts(queue: DurableQueue, prefix: str, tags: list[str]) -> list[int]:
    """The INCR counters ``<prefix>:<tag>`` (0 for none), in the order of ``tags``."""
    values = await queue.redis.mget([f"{prefix}:{tag}" for tag in tags])
    return [int(v or 0) for v in values]


async def wait_for_count(
    queue: DurableQueue, prefix: str, tags: list[str], at_least: int, seconds: float = 15
) -> None:
    """Poll (real time: other processes count; no event to wait on) until every counter reaches
    ``at_least``; at most ``seconds``."""
    with trio.fail_after(seconds):
        while min(await counts(queue, prefix, tags)) < at_least:  # noqa: ASYNC110
            await trio.sleep(0.05)


async def stream_state(queue: DurableQueue) -> tuple[int, int]:
    """(entries in the stream, entries delivered and not acked) of the queue's stream."""
    stream = f"streaq:{queue.name}:queues:normal"
    length = await queue.redis.xlen(stream)
    if not await queue.redis.exists([stream]):
        return 0, 0
    groups = await queue.redis.xinfo_groups(stream)
    if not groups:
        return int(length), 0
    pending = await queue.redis.xpending(stream, "workers")
    return int(length), int(pending.pending)
