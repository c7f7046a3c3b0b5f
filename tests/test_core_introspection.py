"""Looking at a manager and its handles: active tasks, lookup by id, cancelling, waiting for idle,
statistics, the recent list, timestamps, and ``handle.cancel()`` in every state."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta

import pytest
import trio
import trio.testing

import trio_bg
from tests.conftest import Recorder, sleep_then_return
from trio_bg import TaskCancelled, TaskState, TaskStatistics, Timing


async def test_active_tasks_oldest_first_active_count_and_get_by_id(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with trio_bg.open_task_manager(max_running=2) as tm:
        assert tm.active_tasks == ()
        assert tm.active_count == 0
        a = tm.start_soon_named("a", trio.sleep, 3)
        b = tm.start_soon_named("b", trio.sleep, 1)
        c = tm.start_soon_named("c", trio.sleep, 1)  # PENDING: active too
        assert tm.active_tasks == (a, b, c)
        assert tm.active_count == 3
        assert [h.state for h in tm.active_tasks] == [
            TaskState.RUNNING,
            TaskState.RUNNING,
            TaskState.PENDING,
        ]
        assert tm.get(a.id) is a
        assert tm.get(c.id) is c
        assert len({a.id, b.id, c.id}) == 3

        await b.wait()
        assert trio.current_time() == 1
        assert tm.active_tasks == (a, c)
        assert tm.active_count == 2
        assert tm.get(b.id) is b  # recently finished

        assert tm.get("task-0") is None
        assert tm.get("task-x") is None
        assert tm.get("nonsense") is None
        assert tm.get(42) is None  # type: ignore[arg-type]


async def test_cancel_by_id_returns_whether_an_active_task_was_cancelled(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with trio_bg.open_task_manager() as tm:
        running = tm.start_soon(trio.sleep, 10)
        done = tm.start_soon(trio.sleep, 0)
        await done.wait()
        assert tm.cancel(running.id) is True
        await running.wait()
        assert trio.current_time() == 0
        assert running.state is TaskState.CANCELLED
        assert tm.cancel(running.id) is False  # already done
        assert tm.cancel(done.id) is False
        assert tm.cancel("task-999999999") is False
        assert tm.cancel("not-an-id") is False
    assert tm.shutdown_report is not None
    assert tm.shutdown_report.cancelled == ()  # explicit cancels are not the shutdown's


async def test_cancel_all_cancels_unshielded_tasks_returns_the_count_and_leaves_shielded_ones(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with trio_bg.open_task_manager(max_running=3) as tm:
        first = tm.start_soon_named("first", trio.sleep, 10)
        shielded = tm.start_soon_named("shielded", sleep_then_return, 10, "kept", shield=True)
        second = tm.start_soon_named("second", trio.sleep, 10)
        queued = tm.start_soon_named("queued", trio.sleep, 10)
        assert queued.state is TaskState.PENDING

        assert tm.cancel_all() == 3
        assert queued.state is TaskState.CANCELLED  # a PENDING task ends at once
        await trio.testing.wait_all_tasks_blocked()
        assert first.state is second.state is TaskState.CANCELLED
        assert shielded.state is TaskState.RUNNING
        assert tm.active_tasks == (shielded,)
        assert trio.current_time() == 0

        assert tm.cancel_all() == 0
        assert await shielded.get() == "kept"
        assert trio.current_time() == 10


async def test_wait_idle_returns_when_no_task_is_active(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with trio_bg.open_task_manager(max_running=1) as tm:
        await tm.wait_idle()  # nothing active: returns at once
        assert trio.current_time() == 0
        handles = [tm.start_soon(trio.sleep, s) for s in (1, 2, 4)]
        await tm.wait_idle()
        assert trio.current_time() == 7  # one at a time
        assert tm.active_count == 0
        assert all(h.state is TaskState.SUCCEEDED for h in handles)

        async def waiter() -> None:
            await tm.wait_idle()
            woke.append(trio.current_time())

        woke: list[float] = []
        tm.start_soon(trio.sleep, 2)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(waiter)
            nursery.start_soon(waiter)
        assert woke == [9, 9]


async def test_statistics_count_every_outcome_and_are_frozen(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async def fail() -> None:
        raise ValueError("x")

    async with trio_bg.open_task_manager(max_running=2, max_pending=1) as tm:
        assert tm.statistics() == TaskStatistics(0, 0, 0, 0, 0, 0, 0)
        ok = tm.start_soon(trio.sleep, 1)
        bad = tm.start_soon(fail)
        waiting = tm.start_soon(trio.sleep, 5)
        with pytest.raises(trio_bg.TaskRejected, match=r"^task manager 'app' has 1 pending"):
            tm.start_soon(trio.sleep, 1)
        assert tm.statistics() == TaskStatistics(
            started=3, pending=1, running=2, succeeded=0, failed=0, cancelled=0, rejected=1
        )
        await bad.wait()
        await ok.wait()
        assert waiting.state is TaskState.RUNNING  # took the freed slot
        assert waiting.cancel() is True
        await waiting.wait()
        stats = tm.statistics()
    assert stats == TaskStatistics(
        started=3, pending=0, running=0, succeeded=1, failed=1, cancelled=1, rejected=1
    )
    with pytest.raises(dataclasses.FrozenInstanceError, match=r"^cannot assign to field"):
        stats.started = 0  # type: ignore[misc]


async def test_recent_is_bounded_and_newest_last(autojump_clock: trio.testing.MockClock) -> None:
    async with trio_bg.open_task_manager(recent_limit=3) as tm:
        handles = [tm.start_soon_named(f"t{i}", trio.sleep, i + 1) for i in range(5)]
        assert list(tm.recent) == []
        await handles[0].wait()
        assert list(tm.recent) == [handles[0]]
        await tm.wait_idle()
        assert list(tm.recent) == handles[2:]  # finished at t=3, 4, 5
        assert tm.get(handles[0].id) is None  # fell out of the recent list
        assert tm.get(handles[4].id) is handles[4]


async def test_closed_is_set_once_the_close_begins(
    autojump_clock: trio.testing.MockClock,
) -> None:
    seen: list[bool] = []
    async with trio_bg.open_task_manager() as tm:

        async def watch() -> None:
            seen.append(tm.closed)
            await trio.sleep(1)  # still running when the body exits
            seen.append(tm.closed)

        tm.start_soon(watch)
        await trio.testing.wait_all_tasks_blocked()
        assert not tm.closed
    assert tm.closed
    assert seen == [False, True]


async def test_handle_fields_and_utc_timestamps(autojump_clock: trio.testing.MockClock) -> None:
    window = timedelta(seconds=60)  # wall-clock timestamps; the mock clock does not move them
    now = datetime.now(UTC)
    async with trio_bg.open_task_manager(max_running=1) as tm:
        running = tm.start_soon_named("running", sleep_then_return, 1, 7, shield=True, key="k")
        pending = tm.start_soon_named("pending", trio.sleep, 1)
        assert running.name == "running"
        assert running.shielded is True
        assert pending.shielded is False
        assert running.key == "k"
        assert running.group is None
        assert running.timing is Timing.IMMEDIATE
        assert running.id.startswith("task-")
        assert repr(pending) == f"<TaskHandle {pending.id} 'pending' pending>"

        assert pending.created_at.tzinfo is UTC
        assert abs(pending.created_at - now) < window
        assert pending.started_at is None
        assert pending.finished_at is None
        assert not pending.done
        assert pending.outcome is None
        assert pending.attempts == 0
        assert pending.cancel() is True
        assert pending.finished_at is not None
        assert pending.created_at <= pending.finished_at
        assert pending.started_at is None  # never ran

        assert await running.get() == 7
        assert running.attempts == 1
        assert running.done
        started, finished = running.started_at, running.finished_at
        assert started is not None and finished is not None
        assert started.tzinfo is UTC and finished.tzinfo is UTC
        assert running.created_at <= started <= finished
        assert abs(finished - now) < window
        assert getattr(running.outcome, "value", None) == 7


async def test_handle_cancel_on_a_pending_task_ends_it_without_running(
    autojump_clock: trio.testing.MockClock, recorder: Recorder
) -> None:
    async with trio_bg.open_task_manager(max_running=1) as tm:
        blocker = tm.start_soon(recorder.job, "blocker")
        pending = tm.start_soon_named("pending", recorder.job, "pending")
        after = tm.start_soon(recorder.job, "after")
        assert pending.state is TaskState.PENDING
        assert pending.cancel() is True
        assert pending.state is TaskState.CANCELLED
        assert tm.active_tasks == (blocker, after)
        message = rf"^task 'pending' \({pending.id}\) was cancelled$"
        with pytest.raises(TaskCancelled, match=message):
            await pending.get()
        assert await blocker.get() == "blocker"
        assert await after.get() == "after"
        assert trio.current_time() == 2

    assert recorder.calls == ["blocker", "after"]
    assert pending.attempts == 0


async def test_handle_cancel_on_a_shielded_running_task_cancels_it_at_once(
    autojump_clock: trio.testing.MockClock,
) -> None:
    ended: list[float] = []

    async def shielded_job() -> None:
        try:
            await trio.sleep(100)
        finally:
            ended.append(trio.current_time())

    async with trio_bg.open_task_manager() as tm:
        handle = tm.start_soon(shielded_job, shield=True)
        await trio.sleep(2)
        assert handle.cancel() is True
        await handle.wait()
        assert trio.current_time() == 2
    assert ended == [2]
    assert handle.state is TaskState.CANCELLED
    assert tm.shutdown_report is not None
    assert tm.shutdown_report.cancelled == ()


async def test_a_task_cancelled_before_its_first_step_never_runs() -> None:
    # Launched (RUNNING) but not yet scheduled by trio: its scope does not exist yet, so the
    # cancel makes one already cancelled, and the task never calls its function.
    calls: list[str] = []

    async def record() -> None:
        calls.append("ran")

    async with trio_bg.open_task_manager() as tm:
        first = tm.start_soon_named("first", record)
        second = tm.start_soon_named("second", record)
        assert (first.state, second.state) == (TaskState.RUNNING, TaskState.RUNNING)
        assert tm.cancel(first.id) is True
        assert second.cancel() is True
        await tm.wait_idle()
    assert calls == []
    for handle in (first, second):
        assert handle.state is TaskState.CANCELLED
        assert handle.started_at is None
        assert handle.attempts == 0
    assert tm.statistics() == TaskStatistics(
        started=2, pending=0, running=0, succeeded=0, failed=0, cancelled=2, rejected=0
    )
    with pytest.raises(TaskCancelled, match=r"^task 'first' \(task-\d+\) was cancelled$"):
        await first.get()


async def test_handle_cancel_returns_false_once_the_task_is_done(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async def fail() -> None:
        raise ValueError("done already")

    async with trio_bg.open_task_manager() as tm:
        succeeded = tm.start_soon(trio.sleep, 1)
        failed = tm.start_soon(fail)
        cancelled = tm.start_soon(trio.sleep, 1)
        assert cancelled.cancel() is True
        await tm.wait_idle()
        assert succeeded.cancel() is False
        assert failed.cancel() is False
        assert cancelled.cancel() is False
        assert (succeeded.state, failed.state, cancelled.state) == (
            TaskState.SUCCEEDED,
            TaskState.FAILED,
            TaskState.CANCELLED,
        )
    assert succeeded.cancel() is False  # also after the manager has closed


async def test_ids_are_unique_across_managers() -> None:
    async with (
        trio_bg.open_task_manager(name="one") as one,
        trio_bg.open_task_manager(name="two") as two,
    ):
        ids = {one.start_soon(trio.sleep, 0).id for _ in range(3)}
        ids |= {two.start_soon(trio.sleep, 0).id for _ in range(3)}
        assert repr(two).startswith("<TaskManager 'two' running=3 pending=0 closed=False")
    assert len(ids) == 6


async def test_handle_number_and_float_timestamps_match_the_id_and_datetimes(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with trio_bg.open_task_manager(max_running=1) as tm:
        first = tm.start_soon_named("first", trio.sleep, 2)
        second = tm.start_soon_named("second", trio.sleep, 1)  # PENDING behind the first
        assert first.id == f"task-{first.number}"
        assert second.number == first.number + 1
        assert second.started_time is None and second.finished_time is None
        assert second.created_at == datetime.fromtimestamp(second.created_time, UTC)
        await second.wait()
    for handle in (first, second):
        assert handle.started_time is not None and handle.finished_time is not None
        assert handle.started_at == datetime.fromtimestamp(handle.started_time, UTC)
        assert handle.finished_at == datetime.fromtimestamp(handle.finished_time, UTC)
        assert handle.created_time <= handle.started_time <= handle.finished_time
    assert second.started_time >= first.finished_time  # it waited for the running slot


async def test_close_deadlines_are_none_while_open_then_the_grace_and_the_cap(
    autojump_clock: trio.testing.MockClock,
) -> None:
    seen: list[trio_bg.CloseDeadlines | None] = []
    async with trio_bg.open_task_manager(grace_period=1, shield_timeout=5) as tm:
        tm.start_soon_named("plain", trio.sleep, 10)
        tm.start_soon_named("kept", trio.sleep, 10, shield=True)
        seen.append(tm.close_deadlines())

        async def watch() -> None:
            await trio.sleep(0.5)  # in the grace period
            seen.append(tm.close_deadlines())
            await trio.sleep(1)  # the grace period is over; the shielded task runs on
            seen.append(tm.close_deadlines())

        tm.start_soon_named("watch", watch, shield=True)
    assert seen[0] is None
    assert seen[1] == trio_bg.CloseDeadlines(started=0.0, grace=1.0, cap=5.0)
    assert seen[2] == trio_bg.CloseDeadlines(started=0.0, grace=1.5, cap=5.0)
    assert tm.close_deadlines() == trio_bg.CloseDeadlines(
        started=0.0, grace=trio.current_time(), cap=5.0
    )


async def test_pending_call_is_the_function_and_arguments_until_the_first_step(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with trio_bg.open_task_manager(max_running=1) as tm:
        first = tm.start_soon_named("first", trio.sleep, 1)
        queued = tm.start_soon_named("queued", sleep_then_return, 1, "done")
        assert first.pending_call == (trio.sleep, (1,))  # launched, not yet run
        assert queued.pending_call == (sleep_then_return, (1, "done"))
        await trio.testing.wait_all_tasks_blocked()
        assert first.pending_call is None  # running: let go
        assert queued.pending_call == (sleep_then_return, (1, "done"))  # still queued
        assert await queued.get() == "done"
        assert queued.pending_call is None
        blocker = tm.start_soon_named("blocker", trio.sleep, 1)
        cancelled = tm.start_soon_named("cancelled", trio.sleep, 1)  # queued behind blocker
        cancelled.cancel()
        assert cancelled.state is TaskState.CANCELLED
        assert cancelled.pending_call is None  # ended before it ran: let go too
        await blocker.wait()
