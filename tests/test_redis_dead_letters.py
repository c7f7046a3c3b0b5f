"""No message can stop a Redis worker: hostile entries written straight into Redis, with three real
worker processes running; every worker stays up, every good job around them completes, each bad
one is acked, logged and kept as a dead letter (counted, listed, deletable)."""

from __future__ import annotations

import json
import logging
import pickle
import re

import pytest
import trio

from tests import durable_jobs as jobs
from tests.durable_helpers import workers
from tests.redis_server import RedisServer, redis_server

__all__ = ["redis_server"]

pytestmark = pytest.mark.slow

GOOD = {"f": "add", "a": [40, 2], "k": {}, "t": 1}
# Well-formed ids: find_job gives their handles.
UNKNOWN = "job-" + "e" * 32
BAD_TIME = "job-" + "b" * 32  # good task data behind a bad stream entry

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
    "job-no-a": (json.dumps({"f": "add", "k": {}, "t": 1}), "task data has no arguments ('a')"),
    "job-chained": (
        json.dumps({"f": "add", "a": [1, 2], "k": {}, "t": 1, "A": "job-other"}),
        "task data uses streaq's task chaining ('A'), which trio_bg never writes",
    ),
    "job-like-a-result": (json.dumps({"s": True, "r": 1}), "task data has no function name ('f')"),
    "job-pickle": (pickle.dumps({"f": "add"}), "task data is not JSON"),
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
            # Good task data behind a bad entry; an entry whose task data is gone.
            await redis.set(worker.task_key + BAD_TIME, json.dumps(GOOD))
            bad_time = await redis.xadd(stream, {"task_id": BAD_TIME, "enqueue_time": "x"})
            await redis.xadd(stream, {"task_id": "job-no-data", "enqueue_time": "0"})
            after = [await queue.enqueue(jobs.add, i, 2) for i in range(10)]
            with trio.fail_after(20):
                results = [await h.get() for h in before + after]
            assert results == [i + 1 for i in range(10)] + [i + 2 for i in range(10)]

            expected = len(HOSTILE_DATA) + 3
            with trio.fail_after(10):
                # Other processes write them: nothing to wait on but the hash itself.
                while len(letters := await queue.dead_letters()) < expected:  # noqa: ASYNC110
                    await trio.sleep(0.05)
            assert all(p.poll() is None for p in processes), "a worker died"
            by_job = {letter.job: letter for letter in letters if letter.job is not None}
            assert {job: letter.reason for job, letter in by_job.items()} == {
                **{job: reason for job, (_, reason) in HOSTILE_DATA.items()},
                BAD_TIME: "stream entry's enqueue time is not a whole number ('enqueue_time')",
                "job-no-data": "task data is missing",
            }
            assert by_job[BAD_TIME].id == bad_time  # the entry's id: its job never ran
            assert by_job["job-no-data"].id == "job-no-data"
            assert by_job["job-a-list"].raw == "[1, 2, 3]"
            [no_id] = [letter for letter in letters if letter.job is None]
            assert no_id.reason == "stream entry names no job ('task_id')"
            assert "no task id" in no_id.raw
            stats = await queue.statistics()
            assert stats.dead == expected
            assert stats.depth == 0  # every entry was acked: none is waiting or stuck
            with pytest.raises(ValueError, match=r"^dead letter '.+' names no job: discard it$"):
                await queue.requeue_dead(no_id.id)
            assert await queue.discard_dead(no_id.id) is True
            assert await queue.discard_dead(no_id.id) is False
            assert (await queue.statistics()).dead == expected - 1
            # A handle to a dead-lettered job ends FAILED (streaq stored the failure).
            found = await queue.find_job(UNKNOWN)
            assert found is not None
            with trio.fail_after(10):
                await found.wait()
            assert found.state.value == "failed"

            # Requeued: good data runs; bad data comes back as a dead letter, counted once.
            assert await queue.requeue_dead(by_job[BAD_TIME].id) is True
            assert await queue.requeue_dead(by_job[BAD_TIME].id) is False
            assert await queue.requeue_dead("job-no-f") is True
            requeued = await queue.find_job(BAD_TIME)
            assert requeued is not None
            with trio.fail_after(10):
                assert await requeued.get() == 42
            with trio.fail_after(10):
                while "job-no-f" not in {x.id for x in await queue.dead_letters()}:  # noqa: ASYNC110
                    await trio.sleep(0.05)
            assert (await queue.statistics()).dead == expected - 2
            assert all(p.poll() is None for p in processes), "a worker died"


async def test_each_bad_message_is_one_warning_line_and_no_traceback(
    redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    queue = jobs.make_queue(redis_server.url, poll_interval=0.05)
    async with queue.open_worker(concurrency=2, grace=1):
        worker = queue.streaq_worker()
        stream = worker.stream_key + worker.priorities[-1]
        entry = await queue.redis.xadd(stream, {"what": "no task id"})
        await queue.redis.set(worker.task_key + UNKNOWN, "[1, 2, 3]")
        await queue.redis.xadd(stream, {"task_id": UNKNOWN, "enqueue_time": "0"})
        handle = await queue.enqueue(jobs.add, 1, 2)
        with trio.fail_after(10):
            assert await handle.get() == 3
            while len(await queue.dead_letters()) < 2:  # noqa: ASYNC110
                await trio.sleep(0.05)
    lines = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(lines) == 2, [r.getMessage() for r in lines]  # nothing from streaq besides
    assert lines[0].getMessage().split(": ", 1)[1] == (
        f"dead letter ({entry}): stream entry names no job ('task_id'); "
        f"kept in streaq:{jobs.QUEUE_NAME}:trio_bg:dead"
    )
    second = lines[1].getMessage()
    assert re.fullmatch(
        rf"worker \S+: dead letter \(\d+-\d+, job {UNKNOWN}\): task data is a JSON list, not "
        rf"an object; kept in streaq:{jobs.QUEUE_NAME}:trio_bg:dead",
        second,
    ), second
    assert all(r.exc_info is None for r in caplog.records)
