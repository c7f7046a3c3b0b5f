"""Closing: grace period, shield timeout, the shutdown report, outer cancellation and exceptions
raised in the ``async with`` body."""

from __future__ import annotations

import logging
import math

import outcome
import pytest
import trio
import trio.testing

import trio_bg
from tests.conftest import Recorder
from trio_bg import TaskRejected, TaskState


class Ends:
    """Records, per task name, the (virtual) time at which the task's function ended."""

    def __init__(self) -> None:
        self.at: dict[str, float] = {}

    async def sleep(self, name: str, seconds: float) -> str:
        try:
            await trio.sleep(seconds)
        finally:
            self.at[name] = trio.current_time()
        return name


def shutdown_records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "trio_bg" and "closed in" in r.getMessage()]


async def test_close_waits_the_grace_period_then_the_shield_timeout_and_reports_once(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    ends = Ends()
    async with trio_bg.open_task_manager(grace_period=1, shield_timeout=5) as tm:
        unshielded = tm.start_soon_named("unshielded-10s", ends.sleep, "unshielded-10s", 10)
        short = tm.start_soon_named("shielded-3s", ends.sleep, "shielded-3s", 3, shield=True)
        long = tm.start_soon_named("shielded-100s", ends.sleep, "shielded-100s", 100, shield=True)
        assert not tm.closed
    assert tm.closed
    assert trio.current_time() == 5  # the close returns at the shield timeout

    assert ends.at == {"unshielded-10s": 1, "shielded-3s": 3, "shielded-100s": 5}
    assert unshielded.state is TaskState.CANCELLED
    assert short.state is TaskState.SUCCEEDED
    assert await short.get() == "shielded-3s"
    assert long.state is TaskState.CANCELLED

    report = tm.shutdown_report
    assert report is not None
    assert report.manager == "app"
    assert report.duration == 5
    assert report.cancelled == (unshielded, long)
    [record] = shutdown_records(caplog)
    assert record.levelno == logging.WARNING
    assert (
        record.getMessage()
        == str(report)
        == (
            "task manager 'app' closed in 5.000 s; 2 task(s) cancelled by the shutdown: "
            f"'unshielded-10s' ({unshielded.id}), 'shielded-100s' ({long.id})"
        )
    )


async def test_close_returns_as_soon_as_the_tasks_are_done_within_the_grace_period(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    async with trio_bg.open_task_manager(grace_period=5) as tm:
        handle = tm.start_soon(trio.sleep, 2)
    assert trio.current_time() == 2
    assert handle.state is TaskState.SUCCEEDED
    assert tm.shutdown_report is not None
    assert tm.shutdown_report.cancelled == ()
    assert str(tm.shutdown_report) == "task manager 'app' closed in 2.000 s; no task dropped"
    assert [r for r in caplog.records if r.levelno >= logging.WARNING] == []


async def test_the_close_refuses_new_tasks_and_cancels_queued_ones_that_never_ran(
    autojump_clock: trio.testing.MockClock,
) -> None:
    seen: list[tuple[float, bool]] = []
    rejected: list[str] = []

    async with trio_bg.open_task_manager(name="jobs", max_running=1, grace_period=2) as tm:

        async def busy() -> None:
            try:
                await trio.sleep(10)
            finally:
                seen.append((trio.current_time(), tm.closed))
                with pytest.raises(TaskRejected, match=r"^task manager 'jobs' is closed") as info:
                    tm.start_soon(trio.sleep, 1)
                rejected.append(str(info.value))

        running = tm.start_soon_named("busy", busy)
        queued = tm.start_soon_named("queued", trio.sleep, 1)
        assert queued.state is TaskState.PENDING

    assert seen == [(2, True)]
    assert rejected == ["task manager 'jobs' is closed to new tasks"]
    assert running.state is TaskState.CANCELLED
    assert queued.state is TaskState.CANCELLED
    assert queued.started_at is None
    assert queued.attempts == 0
    assert tm.shutdown_report is not None
    assert tm.shutdown_report.cancelled == (running, queued)
    stats = tm.statistics()
    assert (stats.started, stats.cancelled, stats.rejected) == (2, 2, 1)


async def test_an_outer_cancellation_stops_unshielded_tasks_at_once_shielded_ones_at_the_timeout(
    autojump_clock: trio.testing.MockClock,
) -> None:
    ends = Ends()
    with trio.CancelScope() as outer:
        async with trio_bg.open_task_manager(grace_period=1, shield_timeout=5) as tm:
            unshielded = tm.start_soon_named("u", ends.sleep, "u", 100)
            finishes = tm.start_soon_named("s-3", ends.sleep, "s-3", 4, shield=True)
            shielded = tm.start_soon_named("s-100", ends.sleep, "s-100", 100, shield=True)
            await trio.sleep(2)
            outer.cancel()
            await trio.sleep_forever()

    assert outer.cancelled_caught
    # The cancellation reached the manager at t=2: shielded tasks get until 2 + 5.
    assert ends.at == {"u": 2, "s-3": 4, "s-100": 7}
    assert trio.current_time() == 7
    assert unshielded.state is TaskState.CANCELLED
    assert finishes.state is TaskState.SUCCEEDED
    assert shielded.state is TaskState.CANCELLED
    assert tm.shutdown_report is not None
    assert tm.shutdown_report.cancelled == (unshielded, shielded)


async def test_an_outer_deadline_reaching_the_close_during_the_grace_period(
    autojump_clock: trio.testing.MockClock,
) -> None:
    ends = Ends()
    with trio.move_on_after(3) as outer:
        async with trio_bg.open_task_manager(grace_period=10, shield_timeout=20) as tm:
            unshielded = tm.start_soon_named("u", ends.sleep, "u", 100)
            shielded = tm.start_soon_named("s", ends.sleep, "s", 100, shield=True)
            await trio.sleep(1)
        # the body ended at t=1: the grace period runs until the outer deadline at t=3

    assert outer.cancelled_caught
    # Unshielded: cancelled by the outer deadline. Shielded: 20 s from the start of the close.
    assert ends.at == {"u": 3, "s": 21}
    assert trio.current_time() == 21
    assert unshielded.state is shielded.state is TaskState.CANCELLED


async def test_a_body_exception_propagates_unwrapped_after_unshielded_tasks_were_cancelled(
    autojump_clock: trio.testing.MockClock,
) -> None:
    ends = Ends()
    error = ValueError("body failed")
    with pytest.raises(ValueError, match=r"^body failed$") as info:
        async with trio_bg.open_task_manager(grace_period=10, shield_timeout=20) as tm:
            unshielded = tm.start_soon_named("u", ends.sleep, "u", 100)
            shielded = tm.start_soon_named("s", ends.sleep, "s", 3, shield=True)
            await trio.sleep(1)
            raise error

    assert info.value is error  # the very object, not an ExceptionGroup around it
    # No grace period after a body exception: unshielded tasks were cancelled at t=1.
    assert ends.at == {"u": 1, "s": 3}
    assert trio.current_time() == 3
    assert unshielded.state is TaskState.CANCELLED
    assert shielded.state is TaskState.SUCCEEDED
    assert tm.closed


async def test_an_outer_cancelled_propagates_unwrapped_to_the_outer_scope(
    autojump_clock: trio.testing.MockClock,
) -> None:
    ends = Ends()
    in_body: list[BaseException] = []
    outside: list[BaseException] = []
    with trio.CancelScope() as outer:
        try:
            async with trio_bg.open_task_manager() as tm:
                for i in range(3):
                    tm.start_soon_named(f"u{i}", ends.sleep, f"u{i}", 100)
                await trio.sleep(1)
                outer.cancel()
                try:
                    await trio.sleep_forever()
                except BaseException as exc:
                    in_body.append(exc)
                    raise
        except BaseException as exc:
            outside.append(exc)
            raise

    assert outer.cancelled_caught
    assert [type(exc) for exc in in_body] == [trio.Cancelled]
    # The body's own Cancelled comes out, not an ExceptionGroup of the tasks' Cancelled.
    assert len(outside) == 1
    assert outside[0] is in_body[0]
    assert ends.at == {"u0": 1, "u1": 1, "u2": 1}
    assert trio.current_time() == 1


async def test_start_after_close_is_rejected_and_counted(
    autojump_clock: trio.testing.MockClock, recorder: Recorder
) -> None:
    async with trio_bg.open_task_manager(name="closing") as tm:
        tm.start_soon(recorder.job, "before the close")
    before = tm.statistics()
    with pytest.raises(TaskRejected, match=r"^task manager 'closing' is closed to new tasks$"):
        tm.start_soon(recorder.job, "start_soon after the close")
    with pytest.raises(TaskRejected, match=r"^task manager 'closing' is closed to new tasks$"):
        tm.add_task(recorder.job, "add_task after the close")
    assert tm.statistics().rejected == before.rejected + 2
    assert tm.statistics().started == before.started == 1
    await trio.testing.wait_all_tasks_blocked()
    assert recorder.calls == ["before the close"]


async def test_the_close_caps_error_handlers_like_their_tasks(
    autojump_clock: trio.testing.MockClock,
) -> None:
    handler_ends: dict[str, float] = {}

    async def slow_handler(handle: trio_bg.TaskHandle[object], exc: BaseException) -> None:
        try:
            await trio.sleep(100)
        finally:
            handler_ends[handle.name] = trio.current_time()

    async def fail() -> None:
        raise ValueError("boom")

    async with trio_bg.open_task_manager(
        grace_period=1, shield_timeout=5, on_error=slow_handler
    ) as tm:
        plain = tm.start_soon_named("plain", fail)
        shielded = tm.start_soon_named("shielded", fail, shield=True)
        await trio.testing.wait_all_tasks_blocked()
        assert plain.state is TaskState.RUNNING  # its handler is still running
    assert trio.current_time() == 5
    assert handler_ends == {"plain": 1, "shielded": 5}
    for handle in (plain, shielded):
        assert handle.state is TaskState.FAILED
        assert isinstance(handle.outcome, outcome.Error)
        assert isinstance(handle.outcome.error, ValueError)
    assert tm.statistics().failed == 2


async def test_an_infinite_grace_manager_without_shielded_tasks_is_cancelled_from_outside(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    # The request managers' case: the close waits in the nursery's exit; a cancellation from
    # outside stops the tasks there, the close reports them, and the Cancelled comes out alone.
    caught_here = False
    with trio.move_on_after(2) as outer:
        try:
            async with trio_bg.open_task_manager(grace_period=math.inf) as tm:
                slow = tm.start_soon_named("slow", trio.sleep, 10)
                quick = tm.start_soon_named("quick", trio.sleep, 1)
        except trio.Cancelled:
            caught_here = True
            raise
    assert caught_here
    assert outer.cancelled_caught
    assert trio.current_time() == 2
    assert quick.state is TaskState.SUCCEEDED
    assert slow.state is TaskState.CANCELLED
    report = tm.shutdown_report
    assert report is not None
    assert report.cancelled == (slow,)
    assert report.duration == 2
    assert [
        r.getMessage() for r in caplog.records if "cancelled by the shutdown" in r.getMessage()
    ] == [
        f"task manager 'app' closed in 2.000 s; 1 task(s) cancelled by the shutdown: "
        f"'slow' ({slow.id})"
    ]
