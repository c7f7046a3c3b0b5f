"""No message can stop a Redis worker: hostile entries written straight into Redis, with three real
worker processes running; every worker stays up, every good job around them completes, each bad
one is acked, logged and kept as a dead letter (counted, listed, deletable)."""

from __future__ import annotations

import json

import pytest
import trio

from tests import durable_jobs as jobs
from tests.durable_helpers import workers
from tests.redis_server import RedisServer, redis_server

__all__ = ["redis_server"]

pytestmark = pytest.mark.slow

UNKNOWN = "job-" + "e" * 32  # a well-formed id: find_job gives its handle

HOSTILE_DATA = {
    "job-a-list": ("[1, 2, 3]", "task data is a JSON list, not an object"),
    "job-no-f": (json.dumps({"a": [], "k": {}, "t": 1}), "task data has no function name ('f')"),
    "job-no-k": (
        json.dumps({"f": "add", "a": [1, 2], "t": 1}),
        "task data has no keyword arguments ('k')",
    ),
    "job-no-t": (
        json.dumps({"f": "add", "a": [1, 2], "k": {}}),
        "task data has no enqueue time ('t')",
    ),
    "job-args-dict": (
        json.dumps({"f": "add", "a": {"x": 1}, "k": {}, "t": 1}),
        "task data's arguments ('a') are not a list",
    ),
    "job-not-json": ("{not json", "task data is not JSON"),
    UNKNOWN: (
        json.dumps({"f": "nope", "a": [], "k": {}, "t": 1}),
        "no job named 'nope' is registered in this worker",
    ),
}


async def test_hostile_entries_are_dead_lettered_and_every_worker_stays_up(
    redis_server: RedisServer,
) -> None:
    queue = jobs.make_queue(redis_server.url, poll_interval=0.05)
    with workers(redis_server, count=3, concurrency=2) as processes:
        async with queue:
            worker = queue.streaq_worker()
            stream = worker.stream_key + worker.priorities[-1]
            redis = queue.redis
            before = [await queue.enqueue(jobs.add, i, 1) for i in range(10)]
            # An entry that names no job at all: streaq's producer would index it.
            await redis.xadd(stream, {"enqueue_time": "0", "what": "no task id"})
            for job_id, (data, _) in HOSTILE_DATA.items():
                await redis.set(worker.task_key + job_id, data)
                await redis.xadd(stream, {"task_id": job_id, "enqueue_time": "0"})
            after = [await queue.enqueue(jobs.add, i, 2) for i in range(10)]
            with trio.fail_after(20):
                results = [await h.get() for h in before + after]
            assert results == [i + 1 for i in range(10)] + [i + 2 for i in range(10)]

            expected = len(HOSTILE_DATA) + 1
            with trio.fail_after(10):
                # Other processes write them: nothing to wait on but the hash itself.
                while len(letters := await queue.dead_letters()) < expected:  # noqa: ASYNC110
                    await trio.sleep(0.05)
            assert all(p.poll() is None for p in processes), "a worker died"
            by_job = {letter.job: letter for letter in letters if letter.job is not None}
            assert {job: letter.reason for job, letter in by_job.items()} == {
                job: reason for job, (_, reason) in HOSTILE_DATA.items()
            }
            assert by_job["job-a-list"].raw == "[1, 2, 3]"
            [no_id] = [letter for letter in letters if letter.job is None]
            assert no_id.reason == "stream entry names no job ('task_id')"
            assert "no task id" in no_id.raw
            stats = await queue.statistics()
            assert stats.dead == len(HOSTILE_DATA) + 1
            assert stats.depth == 0  # every entry was acked: none is waiting or stuck
            assert await queue.discard_dead(no_id.id) is True
            assert await queue.discard_dead(no_id.id) is False
            assert (await queue.statistics()).dead == len(HOSTILE_DATA)
            # A handle to a dead-lettered job ends FAILED (streaq stored the failure).
            found = await queue.find_job(UNKNOWN)
            assert found is not None
            with trio.fail_after(10):
                await found.wait()
            assert found.state.value == "failed"
