"""Results are pushed, not polled: with a poll interval of a minute, a job's result still reaches
its waiter as soon as the worker stores it (streaq publishes each stored result; the queue
listens), and a job that finished before its enqueue returned is not missed."""

from __future__ import annotations

import trio

from tests import durable_jobs as jobs
from tests.durable_helpers import workers
from tests.redis_server import RedisServer, redis_server

__all__ = ["redis_server"]


async def test_a_waiter_wakes_on_the_published_result_not_the_next_poll(
    redis_server: RedisServer,
) -> None:
    queue = jobs.make_queue(redis_server.url, poll_interval=60)
    with workers(redis_server, concurrency=4):
        async with queue:
            warm = await queue.enqueue(jobs.add, 0, 0)
            with trio.fail_after(15):
                await warm.get()  # the worker is up (a first round answers this one)
            handles = [await queue.enqueue(jobs.slow, f"s{i}", 0.3) for i in range(3)]
            fast = [await queue.enqueue(jobs.add, i, 1) for i in range(20)]
            began = trio.current_time()
            # The slow ones are still running when their waits begin: the round that a wait
            # starts finds nothing, and the next would come a minute later.
            with trio.fail_after(10):
                assert [await h.get() for h in handles] == ["s0", "s1", "s2"]
                assert [await h.get() for h in fast] == [i + 1 for i in range(20)]
            assert trio.current_time() - began < 10
