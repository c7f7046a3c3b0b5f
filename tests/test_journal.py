"""The embedded journal (``DurableQueue("sqlite:///…")``) end to end, with in-process workers.

Real SQLite files under ``tmp_path``; real threads. Times are short real waits where the
journal's thread is involved (trio's autojump clock would jump while a statement runs).
"""

from __future__ import annotations

import logging
import os
import sqlite3
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio
import trio.testing

import trio_bg
from tests import journal_jobs as jobs
from trio_bg import TaskCancelled, TaskState
from trio_bg.durable import DurableQueue, JobFailed, QueueStatistics, QueueUnavailable


@pytest.fixture
def effects(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "effects.txt"
    monkeypatch.setenv("TRIO_BG_TEST_EFFECTS", str(path))
    return path


def url(tmp_path: Path, name: str = "jobs.db") -> str:
    return f"sqlite:///{tmp_path / name}"


async def test_enqueue_get_and_the_file(tmp_path: Path) -> None:
    queue = jobs.make_queue(url(tmp_path))
    async with queue.open_worker(concurrency=4, grace=1):
        handle = await queue.enqueue(jobs.add, 2, 3)
        with trio.fail_after(5):
            assert await handle.get() == 5
        assert handle.state is TaskState.SUCCEEDED
        assert handle.attempts == 1
    assert not queue.is_open  # open_worker opened it, and closed it
    with sqlite3.connect(tmp_path / "jobs.db") as db:
        assert db.execute("PRAGMA user_version").fetchone() == (2,)
        assert db.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        row = db.execute(
            "SELECT queue, function, args, state, attempts, result FROM jobs WHERE id = ?",
            (handle.id,),
        ).fetchone()
        assert row == ("tests", "add", "[2,3]", "succeeded", 1, "5")


async def test_relative_and_absolute_urls(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    queue = jobs.make_queue("sqlite:///rel/jobs.db")  # a missing parent directory is created
    async with queue:
        await queue.enqueue(jobs.add, 1, 1)
    assert (tmp_path / "rel" / "jobs.db").exists()
    absolute = jobs.make_queue(f"sqlite:///{tmp_path}/abs.db")  # four slashes: absolute
    assert f"sqlite:///{tmp_path}".startswith("sqlite:////")
    async with absolute:
        pass
    assert (tmp_path / "abs.db").exists()


async def test_a_failure_a_retry_and_a_timeout(tmp_path: Path, effects: Path) -> None:
    queue = jobs.make_queue(url(tmp_path))
    async with queue.open_worker(concurrency=4, grace=1):
        failed = await queue.enqueue(jobs.fail, "no such order")
        flaky = await queue.enqueue(jobs.flaky, "f", 2)
        slow = await queue.enqueue(jobs.sleepy, 5.0)
        with trio.fail_after(10):
            with pytest.raises(JobFailed, match=r"^fail raised ValueError: no such order$"):
                await failed.get()
            assert await flaky.get() == 3  # two failures, retried after 0.1 and 0.2 s
            with pytest.raises(
                JobFailed, match=r"^sleepy raised TimeoutError: durable job 'sleepy' timed out"
            ):
                await slow.get()
    assert flaky.attempts == 3
    assert failed.state is TaskState.FAILED
    assert jobs.effects(effects) == {"f": 3}


async def test_delay_and_key(tmp_path: Path, effects: Path) -> None:
    queue = jobs.make_queue(url(tmp_path))
    async with queue.open_worker(concurrency=4, grace=1):
        start = trio.current_time()
        delayed = await queue.enqueue(jobs.record, "later", delay=0.5)
        first = await queue.enqueue(jobs.record, "once", key="k", delay=0.3)
        again = await queue.enqueue(jobs.record, "twice", key="k")
        assert again.id == first.id
        with trio.fail_after(5):
            assert await delayed.get() == "later"
            assert trio.current_time() - start >= 0.5
            assert await first.get() == "once"
            assert await again.get() == "once"
        # The key's job is finished: the key may be used again.
        third = await queue.enqueue(jobs.record, "third", key="k")
        with trio.fail_after(5):
            assert await third.get() == "third"
    assert jobs.effects(effects) == {"later": 1, "once": 1, "third": 1}


async def test_cancel_a_queued_and_a_running_job(tmp_path: Path, effects: Path) -> None:
    queue = jobs.make_queue(url(tmp_path))
    async with queue.open_worker(concurrency=2, grace=1):
        queued = await queue.enqueue(jobs.record, "never", delay=30)
        running = await queue.enqueue(jobs.slow, "s", 30.0)
        with trio.fail_after(5):
            while "started:s" not in jobs.effects(effects):  # noqa: ASYNC110 - another thread
                await trio.sleep(0.01)
            assert queued.cancel()
            assert running.cancel()
            with pytest.raises(TaskCancelled):
                await queued.get()
            with pytest.raises(TaskCancelled):
                await running.get()
        stats = await queue.statistics()
        assert (stats.cancelled, stats.delayed, stats.in_flight) == (2, 0, 0)
    assert jobs.effects(effects) == {"started:s": 1}


async def test_enqueue_many_and_statistics(tmp_path: Path) -> None:
    queue = jobs.make_queue(url(tmp_path))
    async with queue:
        handles = await queue.enqueue_many([(jobs.add, (i, 1)) for i in range(100)])
        await queue.enqueue(jobs.add, 0, 0, delay=60)
        assert await queue.statistics() == QueueStatistics(
            depth=100, delayed=1, in_flight=0, succeeded=0, failed=0, cancelled=0, workers=0
        )
        async with queue.open_worker(concurrency=8, grace=1):
            with trio.fail_after(10):
                assert [await h.get() for h in handles] == [i + 1 for i in range(100)]
            stats = await queue.statistics()
            assert (stats.depth, stats.delayed, stats.succeeded, stats.workers) == (0, 1, 100, 1)
        with pytest.raises(TypeError, match=r"^enqueue_many\(\) takes \(fn, args\) pairs"):
            await queue.enqueue_many([jobs.add])  # type: ignore[list-item]
        assert (await queue.statistics()).depth == 0  # nothing was enqueued


async def test_find_job_after_reopening(tmp_path: Path) -> None:
    queue = jobs.make_queue(url(tmp_path))
    async with queue.open_worker(concurrency=2, grace=1):
        done = await queue.enqueue(jobs.add, 20, 22)
        with trio.fail_after(5):
            await done.get()
    async with queue:
        waiting = await queue.enqueue(jobs.add, 1, 2, delay=0.3)
    reopened = jobs.make_queue(url(tmp_path))
    async with reopened:
        found = await reopened.find_job(done.id)
        assert found is not None
        assert (found.name, found.state, found.attempts) == ("add", TaskState.SUCCEEDED, 1)
        assert await found.get() == 42
        later = await reopened.find_job(waiting.id)
        assert later is not None and later.state is TaskState.PENDING
        async with reopened.open_worker(concurrency=1, grace=1):
            with trio.fail_after(5):
                assert await later.get() == 3
        for odd in ["job-" + "0" * 32, "x" * 5000, "9" * 5000, "job-\0", "\ud800", "", 42]:
            with trio.fail_after(1):
                assert await reopened.find_job(odd) is None  # type: ignore[arg-type]


async def test_results_pruned_after_result_ttl(tmp_path: Path) -> None:
    queue = jobs.make_queue(url(tmp_path), result_ttl=1)
    async with queue.open_worker(concurrency=2, grace=1):
        handle = await queue.enqueue(jobs.add, 1, 1)
        with trio.fail_after(5):
            await handle.get()
        with trio.fail_after(5):
            while await queue.find_job(handle.id) is not None:  # noqa: ASYNC110 - the pruner
                await trio.sleep(0.1)


async def test_a_second_queue_object_sees_results_of_another_connection(tmp_path: Path) -> None:
    """Two queues on one file: the results come through the file (data_version)."""
    worker_side = jobs.make_queue(url(tmp_path))
    app_side = jobs.make_queue(url(tmp_path))
    async with app_side, worker_side.open_worker(concurrency=2, grace=1):
        handle = await app_side.enqueue(jobs.add, 3, 4)
        with trio.fail_after(5):
            assert await handle.get() == 7


def test_bad_urls_and_options() -> None:
    with pytest.raises(ValueError, match=r"^url must be a redis:// or sqlite:/// URL, got 'x'$"):
        DurableQueue("x")
    with pytest.raises(ValueError, match=r"^sqlite URL must name a file \(sqlite:///jobs.db\)"):
        DurableQueue("sqlite:///")
    with pytest.raises(ValueError, match=r"^durability must be 'normal' or 'full', got 'fast'$"):
        DurableQueue("sqlite:///j.db", durability="fast")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"^lease_timeout must be > 0, got 0$"):
        DurableQueue("sqlite:///j.db", lease_timeout=0)


async def test_a_path_that_cannot_be_created(tmp_path: Path) -> None:
    (tmp_path / "a-file").write_text("")
    queue = jobs.make_queue(f"sqlite:///{tmp_path}/a-file/jobs.db")
    with pytest.raises(
        QueueUnavailable,
        match=r"^durable queue 'tests': cannot open: journal .*/a-file/jobs.db cannot be "
        r"opened or created \(",
    ):
        async with queue:
            pass
    assert not queue.is_open


async def test_a_corrupted_file(tmp_path: Path) -> None:
    (tmp_path / "jobs.db").write_bytes(b"not a database, " * 512)
    queue = jobs.make_queue(url(tmp_path))
    with pytest.raises(
        QueueUnavailable,
        match=r"^durable queue 'tests': cannot open: journal .*jobs.db is corrupted",
    ):
        async with queue:
            pass


async def test_a_file_locked_by_another_program(tmp_path: Path) -> None:
    queue = jobs.make_queue(url(tmp_path), enqueue_timeout=0.3)
    async with queue:
        pass
    other = sqlite3.connect(tmp_path / "jobs.db", isolation_level=None)
    try:
        other.execute("PRAGMA locking_mode=EXCLUSIVE")
        other.execute("BEGIN EXCLUSIVE")
        start = trio.current_time()
        with pytest.raises(
            QueueUnavailable,
            match=r"^durable queue 'tests': cannot open: journal .*jobs.db is locked by "
            r"another program \(database is locked\)$",
        ):
            async with queue:
                pass
        assert trio.current_time() - start < 3
    finally:
        other.close()
    async with queue:  # released: it opens again
        assert await queue.find_job("job-" + "0" * 32) is None


async def test_an_enqueue_on_a_locked_file(tmp_path: Path) -> None:
    queue = jobs.make_queue(url(tmp_path), enqueue_timeout=0.3)
    async with queue:
        other = sqlite3.connect(tmp_path / "jobs.db", isolation_level=None)
        try:
            other.execute("BEGIN IMMEDIATE")
            with pytest.raises(
                QueueUnavailable,
                match=r"^durable queue 'tests': cannot enqueue: journal .* is locked by another",
            ):
                await queue.enqueue(jobs.add, 1, 1)
        finally:
            other.close()
        assert (await queue.statistics()).depth == 0  # nothing half-written
        handle = await queue.enqueue(jobs.add, 1, 1)
        assert handle.state is TaskState.PENDING


async def test_the_reclaim_of_an_expired_lease_is_logged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A job leased to a worker that no longer exists (its lease expired) runs again."""
    queue = jobs.make_queue(url(tmp_path), lease_timeout=0.3)
    async with queue:
        handle = await queue.enqueue(jobs.add, 1, 2)
    with sqlite3.connect(tmp_path / "jobs.db") as db:
        db.execute(
            "UPDATE jobs SET state = 'running', attempts = 1, lease_owner = 'gone-1', "
            "lease_expires = 0, started_at = created_at WHERE id = ?",
            (handle.id,),
        )
    caplog.set_level(logging.WARNING, "trio_bg.durable")
    async with queue.open_worker(concurrency=1, grace=1):
        found = await queue.find_job(handle.id)
        assert found is not None
        with trio.fail_after(5):
            assert await found.get() == 3
        assert found.attempts == 2
    [message] = [r.getMessage() for r in caplog.records if "reclaimed" in r.getMessage()]
    assert message.startswith(f"reclaimed job add ({handle.id}) from worker gone-1, which held it ")
    assert message.endswith(" s (lease expired): queued again")


@pytest.fixture
def tiny_disk(tmp_path: Path) -> Iterator[Path]:
    """A 256 KiB tmpfs (root only, where mounting is allowed; skipped elsewhere)."""
    mount = tmp_path / "tiny"
    mount.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a tiny tmpfs needs root")
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mount)],
        capture_output=True,
        check=False,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


async def test_a_full_disk(tiny_disk: Path) -> None:
    queue = jobs.make_queue(f"sqlite:///{tiny_disk}/jobs.db")
    async with queue:
        with pytest.raises(
            QueueUnavailable,
            match=r"^durable queue 'tests': cannot enqueue: journal .*jobs.db is on a full disk "
            r"\(database or disk is full\)$",
        ):
            for index in range(100_000):
                await queue.enqueue(jobs.record, f"{index:08d}" * 50)
        written = (await queue.statistics()).depth
        assert written > 0
        # The app goes on: what was written is readable, and nothing half-written is there.
        with sqlite3.connect(tiny_disk / "jobs.db") as db:
            assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
            assert db.execute("SELECT count(*) FROM jobs").fetchone() == (written,)


async def test_a_read_only_file(tiny_disk: Path) -> None:
    queue = jobs.make_queue(f"sqlite:///{tiny_disk}/jobs.db")
    async with queue:
        await queue.enqueue(jobs.add, 1, 1)
    remount = ["mount", "-o", "remount,ro", str(tiny_disk)]
    await trio.run_process(remount)
    with pytest.raises(
        QueueUnavailable,
        match=r"^durable queue 'tests': cannot open: journal .*jobs.db is read-only \(unable to "
        r"open database file\)$",
    ):
        async with queue:
            pass


async def test_a_long_delay_on_the_autojump_clock(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    """The journal's clock is trio's (plus the wall time at open): a delay is logic."""
    queue = jobs.make_queue(url(tmp_path))
    async with queue.open_worker(concurrency=1, grace=1):
        start = trio.current_time()
        handle = await queue.enqueue(jobs.add, 1, 2, delay=600)
        assert await handle.get() == 3
        # Not before its time. No upper bound: while the journal's thread answers, every task
        # waits, so the autojump clock runs on from timer to timer (heartbeats, the pruner).
        assert trio.current_time() - start >= 600


async def test_enqueue_soon_through_a_task_manager(tmp_path: Path) -> None:
    queue = jobs.make_queue(url(tmp_path))
    async with queue.open_worker(concurrency=2, grace=1):
        async with trio_bg.open_task_manager() as manager:
            handle = queue.enqueue_soon(manager, jobs.add, 5, 6)
            assert handle.state is TaskState.PENDING
            with trio.fail_after(5):
                assert await handle.get() == 11
            never = queue.enqueue_soon(manager, jobs.add, 1, 1)
            assert never.cancel()  # before its enqueue ran: never enqueued
            assert never.state is TaskState.CANCELLED
            await manager.wait_idle()
            assert await queue.find_job(never.id) is None
        assert (await queue.statistics()).succeeded == 1
