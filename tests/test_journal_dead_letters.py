"""The journal's dead letters: rows that no trio_bg enqueue wrote (arguments that are no JSON
array, a function registered in no worker) never stall the claims of the others; each is kept in
state 'dead', logged in one line, counted in ``statistics().dead``, listed, requeued or
discarded through the same API as Redis's."""

from __future__ import annotations

import logging
import sqlite3
from pathlib import Path

import pytest
import trio

from trio_bg.durable import DeadLetter, DurableQueue, JobFailed

_INSERT = (
    "INSERT INTO jobs (id, queue, function, args, state, max_attempts, run_at, created_at) "
    "VALUES (?, 'dead', ?, ?, 'queued', 3, 0, 0)"
)
HOSTILE = {
    "job-" + "a" * 32: ("add", "{not json", "arguments ('args') are not a JSON array"),
    "job-" + "b" * 32: ("add", '{"x": 1}', "arguments ('args') are not a JSON array"),
    "job-" + "c" * 32: ("nope", "[]", "no job named 'nope' is registered in this worker"),
}


async def add(a: int, b: int) -> int:
    return a + b


async def test_bad_rows_are_dead_lettered_and_the_rest_runs(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    path = tmp_path / "jobs.db"
    queue = DurableQueue(f"sqlite:///{path}", name="dead", poll_interval=0.01)
    queue.task(add)
    async with queue:  # creates the file
        pass
    with sqlite3.connect(path) as connection:
        for job_id, (function, args, _) in HOSTILE.items():
            connection.execute(_INSERT, (job_id, function, args))
    connection.close()
    async with queue, queue.open_worker(concurrency=4, grace=1):
        handles = [await queue.enqueue(add, i, 1) for i in range(5)]
        with trio.fail_after(10):
            assert [await h.get() for h in handles] == [1, 2, 3, 4, 5]
            while (await queue.statistics()).dead < len(HOSTILE):  # noqa: ASYNC110
                await trio.sleep(0.01)  # the worker claims them beside the good ones
        stats = await queue.statistics()
        assert (stats.dead, stats.depth, stats.in_flight, stats.failed) == (3, 0, 0, 0)
        letters = await queue.dead_letters()
        assert all(isinstance(letter, DeadLetter) for letter in letters)
        assert {x.id: (x.job, x.reason) for x in letters} == {
            job_id: (job_id, reason) for job_id, (_, _, reason) in HOSTILE.items()
        }
        by_id = {x.id: x for x in letters}
        assert '"{not json"' in by_id["job-" + "a" * 32].raw
        # A handle to a dead job sees it failed, with the reason.
        found = await queue.find_job("job-" + "c" * 32)
        assert found is not None
        with pytest.raises(JobFailed, match="registered in this worker"):
            await found.get()
        # Requeued, a job still bad comes back once; discarded, it is gone.
        assert await queue.requeue_dead("job-" + "c" * 32) is True
        assert await queue.requeue_dead("job-" + "c" * 32) is False
        with trio.fail_after(10):
            while len(await queue.dead_letters()) < len(HOSTILE):  # noqa: ASYNC110
                await trio.sleep(0.01)
        assert (await queue.statistics()).dead == 3
        assert await queue.discard_dead("job-" + "a" * 32) is True
        assert await queue.discard_dead("job-" + "a" * 32) is False
        assert (await queue.statistics()).dead == 2
        assert await queue.find_job("job-" + "a" * 32) is None
    dead_lines = [r for r in caplog.records if "dead letter" in r.getMessage()]
    assert len(dead_lines) == 4  # one per bad row, and one for the requeued one
    assert all(r.levelno == logging.WARNING and r.exc_info is None for r in dead_lines)
