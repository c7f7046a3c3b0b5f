"""Durable workers under failure: SIGTERM, SIGKILL, Redis restarted or gone, load, idling.

Real ``redis-server`` (AOF on) and real ``python -m trio_bg worker`` processes on loopback; the
reclaim timeout is 2 s here (60 s by default), so the waits are short and bounded.
"""

from __future__ import annotations

import signal
import subprocess

import pytest
import trio

from tests import durable_jobs as jobs
from tests.durable_helpers import counts, stop, stream_state, wait_for_count, workers
from tests.redis_server import RedisServer, redis_server
from trio_bg.durable import DurableHandle

__all__ = ["redis_server"]

pytestmark = pytest.mark.slow


async def get_all(handles: list[DurableHandle[str]], seconds: float) -> list[str]:
    """Await every handle's ``get()`` at once; their values in order."""
    values: list[str] = [""] * len(handles)

    async def one(index: int) -> None:
        values[index] = await handles[index].get()

    with trio.fail_after(seconds):
        async with trio.open_nursery() as nursery:
            for index in range(len(handles)):
                nursery.start_soon(one, index)
    return values


def alive(processes: list[subprocess.Popen[bytes]]) -> bool:
    return all(p.poll() is None for p in processes)


async def test_sigterm_stops_taking_jobs_and_finishes_running_ones(
    redis_server: RedisServer,
) -> None:
    queue = jobs.make_queue(redis_server.url, reclaim_timeout=2)
    tags = [f"t{i}" for i in range(3)]
    with workers(redis_server, concurrency=3, grace=10) as (worker,):
        async with queue:
            handles = [await queue.enqueue(jobs.slow, tag, 1.5) for tag in tags]
            await wait_for_count(queue, "started", tags, 1)
            worker.send_signal(signal.SIGTERM)
            await trio.sleep(0.3)
            late = await queue.enqueue(jobs.record, "late")
            assert await trio.to_thread.run_sync(worker.wait, 15) == 0
            assert await counts(queue, "effects", tags) == [1, 1, 1]
            assert await get_all(handles, 5) == tags
            # The job enqueued after the signal was not taken: it waits for another worker.
            assert await counts(queue, "effects", ["late"]) == [0]
            assert not late.done


async def test_sigkill_with_jobs_in_flight_another_worker_completes_them(
    redis_server: RedisServer,
) -> None:
    queue = jobs.make_queue(redis_server.url, reclaim_timeout=2)
    tags = [f"k{i}" for i in range(4)]
    async with queue:
        handles = [await queue.enqueue(jobs.slow, tag, 2) for tag in tags]
        with workers(redis_server, concurrency=4) as (doomed,):
            await wait_for_count(queue, "started", tags, 1)
            assert stop(doomed, signal.SIGKILL) == -signal.SIGKILL
        assert await counts(queue, "effects", tags) == [0, 0, 0, 0]
        with workers(redis_server, concurrency=4) as (rescuer,):
            # Reclaimed after the 2 s reclaim timeout (up to twice that), then 2 s of work.
            assert await get_all(handles, 20) == tags
            assert await counts(queue, "started", tags) == [2, 2, 2, 2]
            assert await counts(queue, "effects", tags) == [1, 1, 1, 1]
            assert all(h.attempts == 2 for h in handles)
            assert await stream_state(queue) == (0, 0)
            assert stop(rescuer) == 0


async def test_jobs_survive_a_redis_restart_between_enqueue_and_processing(
    redis_server: RedisServer,
) -> None:
    queue = jobs.make_queue(redis_server.url, reclaim_timeout=2)
    tags = [f"a{i}" for i in range(20)]
    async with queue:
        handles = [await queue.enqueue(jobs.record, tag) for tag in tags]
        delayed = await queue.enqueue(jobs.record, "delayed", delay=1)
        redis_server.restart()  # SIGTERM: the AOF is written; the same port and directory
        assert await stream_state(queue) == (20, 0)
        with workers(redis_server) as (worker,):
            assert await get_all([*handles, delayed], 20) == [*tags, "delayed"]
            assert await counts(queue, "effects", tags) == [1] * 20
            assert stop(worker) == 0


async def test_workers_ride_out_redis_stopped_for_five_seconds(redis_server: RedisServer) -> None:
    queue = jobs.make_queue(redis_server.url, reclaim_timeout=2)
    tags = [f"o{i}" for i in range(60)]
    with workers(redis_server, count=2, concurrency=4) as processes:
        async with queue:
            handles = [await queue.enqueue(jobs.slow, tag, 0.1) for tag in tags]
            await wait_for_count(queue, "effects", tags[:4], 1)
            redis_server.stop()
            await trio.sleep(5)
            assert alive(processes)
            redis_server.start()
            assert await get_all(handles, 40) == tags
            # At least once: every job ran; one cut short by the outage may have run twice.
            assert min(await counts(queue, "effects", tags)) >= 1
            assert alive(processes)
        assert [stop(p) for p in processes] == [0, 0]


async def test_three_workers_run_3000_jobs_exactly_once(redis_server: RedisServer) -> None:
    queue = jobs.make_queue(redis_server.url, reclaim_timeout=10)
    tags = [f"j{i}" for i in range(3000)]
    with workers(redis_server, count=3, concurrency=16, reclaim=10) as processes:
        async with queue:
            handles = [await queue.enqueue(jobs.record, tag) for tag in tags]
            # 3,000 concurrent get() in one process, through the one result poller.
            assert await get_all(handles, 90) == tags
            assert await counts(queue, "effects", tags) == [1] * 3000
            assert await stream_state(queue) == (0, 0)
            assert alive(processes)
        assert [stop(p) for p in processes] == [0, 0, 0]


async def test_an_idle_worker_outlives_its_client_timeouts(redis_server: RedisServer) -> None:
    # reclaim 2 s: streaq blocks 2 s in XREADGROUP; coredis read and idle timeouts are 4 s.
    queue = jobs.make_queue(redis_server.url, reclaim_timeout=2)
    with workers(redis_server, reclaim=2) as (worker,):
        await trio.sleep(20)  # five times the client timeouts, with nothing to do
        assert worker.poll() is None
        async with queue:
            handle = await queue.enqueue(jobs.add, 20, 22)
            with trio.fail_after(10):
                assert await handle.get() == 42
        assert stop(worker) == 0
