"""What the backend seam added to the Redis backend: ``enqueue_many`` (one MULTI/EXEC),
``find_job`` and ``open_worker`` (streaq's worker in this process, stopped by the block's end)."""

from __future__ import annotations

import trio

from tests import durable_jobs as jobs
from tests.redis_server import RedisServer, redis_server
from trio_bg import TaskState

__all__ = ["redis_server"]


async def test_enqueue_many_find_job_and_an_in_process_worker(redis_server: RedisServer) -> None:
    queue = jobs.make_queue(redis_server.url, reclaim_timeout=2)
    async with queue:
        handles = await queue.enqueue_many([(jobs.add, (i, 1)) for i in range(20)])
        assert (await queue.statistics()).depth == 20
        found = await queue.find_job(handles[0].id)
        assert found is not None
        assert (found.id, found.name, found.state) == (handles[0].id, "add", TaskState.PENDING)
        assert await queue.find_job("job-" + "0" * 32) is None
        assert await queue.find_job("x" * 5000) is None
        async with queue.open_worker(concurrency=4, grace=1):
            with trio.fail_after(15):
                assert [await h.get() for h in handles] == [i + 1 for i in range(20)]
        done = await queue.find_job(handles[1].id)
        assert done is not None
        assert (done.name, done.state, await done.get()) == ("add", TaskState.SUCCEEDED, 2)
    assert not queue.is_open
