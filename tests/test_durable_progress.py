"""``report_progress`` inside a durable job: stored by the worker (at most about once a second)
and read by the app's handle, with the worker in this process and in another process; the
journal file's schema before and after (version 1 files are migrated in place)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import trio

from tests import durable_jobs
from tests import journal_jobs as jobs
from tests.durable_helpers import workers as redis_workers
from tests.redis_server import RedisServer, redis_server
from tests.test_journal_workers import workers
from trio_bg import TaskState

__all__ = ["redis_server"]


def url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'jobs.db'}"


async def wait_for_progress(handle: object, fraction: float, seconds: float) -> None:
    with trio.fail_after(seconds):
        while True:
            progress = getattr(handle, "progress", None)
            if progress is not None and progress.fraction == fraction:
                return
            await trio.sleep(0.02)


async def test_a_job_in_this_process_reports_to_its_handle(tmp_path: Path) -> None:
    release = tmp_path / "release"
    queue = jobs.make_queue(url(tmp_path))
    async with queue.open_worker(concurrency=2, grace=1):
        handle = await queue.enqueue(jobs.reports, 4, str(release))
        await wait_for_progress(handle, 1.0, 5)
        assert handle.progress is not None and handle.progress.message == "step 4 of 4"
        assert handle.state is TaskState.RUNNING
        release.touch()
        with trio.fail_after(5):
            assert await handle.get() == 4
    assert handle.progress is not None and handle.progress.fraction == 1.0  # kept
    with sqlite3.connect(tmp_path / "jobs.db") as db:
        stored = db.execute("SELECT progress FROM jobs WHERE id = ?", (handle.id,)).fetchone()
    assert stored is not None and '"m": "step 4 of 4"' in stored[0]


async def test_a_job_on_another_process_reports_to_the_apps_handle(tmp_path: Path) -> None:
    db = tmp_path / "jobs.db"
    release = tmp_path / "release"
    effects = tmp_path / "effects.txt"
    with workers(db, effects, concurrency=2):
        queue = jobs.make_queue(f"sqlite:///{db}")
        async with queue:
            handle = await queue.enqueue(jobs.reports, 5, str(release))
            waiter_done = trio.Event()

            async def waits() -> None:
                await handle.wait()  # an awaited handle: read at each change of the file
                waiter_done.set()

            async with trio.open_nursery() as nursery:
                nursery.start_soon(waits)
                await wait_for_progress(handle, 1.0, 10)
                assert handle.progress is not None
                assert handle.progress.message == "step 5 of 5"
                assert handle.state is TaskState.RUNNING
                release.touch()
                with trio.fail_after(10):
                    await waiter_done.wait()
            assert await handle.get() == 5


async def test_a_job_on_a_redis_worker_process_reports_to_the_apps_handle(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    release = tmp_path / "release"
    with redis_workers(redis_server, concurrency=2):
        queue = durable_jobs.make_queue(redis_server.url, poll_interval=0.05)
        async with queue:
            handle = await queue.enqueue(durable_jobs.reports, 3, str(release))
            async with trio.open_nursery() as nursery:
                nursery.start_soon(handle.wait)  # awaited: asked about every round
                await wait_for_progress(handle, 1.0, 15)
                assert handle.progress is not None
                assert handle.progress.message == "step 3 of 3"
                assert handle.state is TaskState.RUNNING
                release.touch()
            assert await handle.get() == 3
            assert handle.progress is not None and handle.progress.fraction == 1.0


V1_SCHEMA = """
CREATE TABLE jobs (
    seq INTEGER PRIMARY KEY, id TEXT NOT NULL UNIQUE, queue TEXT NOT NULL,
    function TEXT NOT NULL, args TEXT NOT NULL, state TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0, max_attempts INTEGER NOT NULL, run_at REAL NOT NULL,
    key TEXT, lease_owner TEXT, lease_expires REAL,
    cancel_requested INTEGER NOT NULL DEFAULT 0, result TEXT, error TEXT,
    created_at REAL NOT NULL, started_at REAL, finished_at REAL
);
CREATE INDEX jobs_ready ON jobs (queue, run_at, seq) WHERE state = 'queued';
CREATE INDEX jobs_leased ON jobs (queue, lease_expires) WHERE state = 'running';
CREATE INDEX jobs_finished ON jobs (queue, finished_at)
    WHERE state IN ('succeeded', 'failed', 'cancelled');
CREATE TABLE outcomes (queue TEXT NOT NULL, outcome TEXT NOT NULL, count INTEGER NOT NULL,
    PRIMARY KEY (queue, outcome)) WITHOUT ROWID;
CREATE TABLE workers (id TEXT PRIMARY KEY, queue TEXT NOT NULL, seen_at REAL NOT NULL)
    WITHOUT ROWID;
INSERT INTO jobs (id, queue, function, args, state, max_attempts, run_at, created_at)
    VALUES ('job-00000000000000000000000000000001', 'tests', 'add', '[20,22]', 'queued', 4, 0, 1);
PRAGMA user_version = 1;
"""


async def test_a_version_1_journal_is_migrated_and_its_jobs_run(tmp_path: Path) -> None:
    db = tmp_path / "jobs.db"
    with sqlite3.connect(db) as connection:
        connection.executescript(V1_SCHEMA)
    queue = jobs.make_queue(f"sqlite:///{db}")
    async with queue.open_worker(concurrency=1, grace=1):
        handle = await queue.find_job("job-00000000000000000000000000000001")
        assert handle is not None
        with trio.fail_after(5):
            assert await handle.get() == 42
    with sqlite3.connect(db) as connection:
        assert connection.execute("PRAGMA user_version").fetchone() == (2,)
        columns = [row[1] for row in connection.execute("PRAGMA table_info(jobs)")]
        assert columns[-1] == "progress"
        tables = {row[0] for row in connection.execute("SELECT name FROM sqlite_schema")}
        assert "schedules" in tables


async def test_a_job_run_by_a_worker_inside_a_task_reports_for_the_job_not_the_task(
    tmp_path: Path,
) -> None:
    """The nearest owner wins: the worker runs as a trio_bg task of the app (as with
    ``TaskMiddleware(queue_concurrency=N)``), but the job's report goes to the job."""
    import trio_bg

    release = tmp_path / "release"
    queue = jobs.make_queue(url(tmp_path))

    async def serve_jobs(ready: trio.Event) -> None:
        async with queue.open_worker(concurrency=2, grace=1):
            ready.set()
            await trio.sleep_forever()

    async with trio_bg.open_task_manager() as tm:
        ready = trio.Event()
        worker_task = tm.start_soon_named("worker", serve_jobs, ready)
        await ready.wait()
        handle = await queue.enqueue(jobs.reports, 2, str(release))
        await wait_for_progress(handle, 1.0, 5)
        assert worker_task.progress is None
        release.touch()
        with trio.fail_after(5):
            assert await handle.get() == 2
        worker_task.cancel()
