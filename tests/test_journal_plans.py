"""The journal stays flat as it grows: every statement it runs on the job path finds its rows
through an index (SQLite's ``EXPLAIN QUERY PLAN``), never by reading the whole ``jobs`` table.

A real workload (enqueue, keys, delays, enqueue_many, claims, results, retries, cancel,
find_job, statistics, pruning) runs on a real file while SQLite's trace callback records every
statement the journal's thread sends (the connection is the real one; the callback only
listens). Each statement is then planned against the same file. Per-job figures at a million
queued jobs are in ``python -m benchmarks.journal --million``.
"""

from __future__ import annotations

import re
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests import journal_jobs as jobs
from trio_bg.durable import _journal_file, _journal_sql

SKIP = re.compile(r"^\s*(PRAGMA|BEGIN|COMMIT|ROLLBACK|CREATE|SAVEPOINT|RELEASE)\b", re.I)
FULL_SCAN = re.compile(r"\bSCAN (jobs|j)\b(?! USING)")


@pytest.fixture
def traced(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    statements: list[str] = []
    connect = sqlite3.connect

    def listening(*args: Any, **kwargs: Any) -> sqlite3.Connection:
        connection = connect(*args, **kwargs)
        connection.set_trace_callback(statements.append)
        return connection

    monkeypatch.setattr(_journal_file.sqlite3, "connect", listening)
    yield statements


async def test_every_statement_of_the_job_path_uses_an_index(
    tmp_path: Path, traced: list[str]
) -> None:
    db = tmp_path / "jobs.db"
    queue = jobs.make_queue(f"sqlite:///{db}", lease_timeout=1)
    async with queue.open_worker(concurrency=4, grace=1):
        handles = [await queue.enqueue(jobs.add, i, 1) for i in range(20)]
        keyed = await queue.enqueue(jobs.add, 1, 2, key="k")
        again = await queue.enqueue(jobs.add, 1, 2, key="k")
        later = await queue.enqueue(jobs.add, 2, 2, delay=0.05)
        many = await queue.enqueue_many([(jobs.add, (i, 2)) for i in range(50)])
        flaky = await queue.enqueue(jobs.fail, "boom")
        doomed = await queue.enqueue(jobs.add, 0, 0, delay=100)
        doomed.cancel()
        for handle in [*handles, keyed, again, later, *many]:
            await handle.get()
        await flaky.wait()
        assert await queue.find_job(keyed.id) is not None
        await queue.statistics()
    planned: dict[str, str] = {}
    with sqlite3.connect(db) as connection:
        # Pruning runs every few seconds in a live queue: run its statement here, traced too.
        connection.set_trace_callback(traced.append)
        _journal_sql.prune(connection, jobs.QUEUE_NAME, time.time() + 3600, 100)
        connection.set_trace_callback(None)
        for statement in dict.fromkeys(traced):
            if SKIP.match(statement) or "jobs" not in statement:
                continue
            plan = connection.execute(f"EXPLAIN QUERY PLAN {statement}").fetchall()
            planned[statement] = "\n".join(row[-1] for row in plan)
    assert planned, "the trace recorded no statement on jobs"
    scans = {sql[:200]: plan for sql, plan in planned.items() if FULL_SCAN.search(plan)}
    assert scans == {}
