"""Property test: random schedules of tasks keep the accounting exact, before and after close.

Hypothesis and pytest-trio do not mix, so each example is its own ``trio.run`` with an
autojumping mock clock.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any

import trio
import trio.testing
from hypothesis import event, given, settings
from hypothesis import strategies as st

import trio_bg
from tests.workload import Step, start_step, steps
from trio_bg import TaskHandle, TaskManager, TaskRejected, TaskState
from trio_bg.testing import check_accounting as adds_up

KINDS = ("succeed", "fail", "sleep", "cancel", "timeout", "shield", "retry")


@dataclass(frozen=True)
class Schedule:
    steps: list[Step]
    max_running: int | None
    max_pending: int | None
    grace_period: int
    shield_extra: int
    close_at: float
    async_handler: bool


schedules = st.builds(
    Schedule,
    steps=st.lists(steps(KINDS, most_n=20), max_size=20),
    max_running=st.sampled_from([None, 1, 2, 3]),
    max_pending=st.sampled_from([None, 0, 1, 2]),
    grace_period=st.integers(0, 3),
    shield_extra=st.integers(0, 4),
    close_at=st.integers(0, 16).map(lambda t: t + 0.5),
    async_handler=st.booleans(),
)


def check_accounting(tm: TaskManager, handles: list[TaskHandle[Any]], rejected: int) -> None:
    stats = tm.statistics()
    adds_up(stats)
    assert stats.started == len(handles)
    assert stats.rejected == rejected
    states = Counter(h.state for h in handles)
    assert states[TaskState.PENDING] == stats.pending
    assert states[TaskState.RUNNING] == stats.running
    assert states[TaskState.SUCCEEDED] == stats.succeeded
    assert states[TaskState.FAILED] == stats.failed
    assert states[TaskState.CANCELLED] == stats.cancelled
    assert tm.active_count == stats.pending + stats.running
    if tm.active_count:
        assert tm.active_tasks == tuple(h for h in handles if not h.done)


async def run_schedule(schedule: Schedule) -> None:
    handles: list[TaskHandle[Any]] = []
    handled: list[TaskHandle[Any]] = []
    rejected = 0
    checked_at: list[float] = []

    def sync_handler(handle: TaskHandle[Any], exc: BaseException) -> None:
        handled.append(handle)

    async def async_handler(handle: TaskHandle[Any], exc: BaseException) -> None:
        # Counted on entry: the handler runs in the task's scope, so the close may cancel it.
        handled.append(handle)
        await trio.sleep(1)

    async def monitor(tm: TaskManager) -> None:
        while True:  # also checks during the close, until it is cancelled after it
            check_accounting(tm, handles, rejected)
            checked_at.append(trio.current_time())
            await trio.sleep(0.25)

    shield_timeout = schedule.grace_period + schedule.shield_extra
    async with trio.open_nursery() as outside:
        async with trio_bg.open_task_manager(
            max_running=schedule.max_running,
            max_pending=schedule.max_pending,
            grace_period=schedule.grace_period,
            shield_timeout=shield_timeout,
            on_error=async_handler if schedule.async_handler else sync_handler,
        ) as tm:
            outside.start_soon(monitor, tm)
            with trio.move_on_after(schedule.close_at):
                for step in schedule.steps:
                    await trio.sleep(step.gap)
                    check_accounting(tm, handles, rejected)
                    try:
                        if step.kind == "cancel":
                            if handles:
                                handles[step.n % len(handles)].cancel()
                        else:
                            handles.append(start_step(tm, step))
                    except TaskRejected:
                        rejected += 1
                    check_accounting(tm, handles, rejected)
            close_started = trio.current_time()
        await trio.testing.wait_all_tasks_blocked()  # the monitor has looked after the close too
        outside.cancel_scope.cancel()

    # After the close: nothing active, every handle done, every failure handled exactly once.
    check_accounting(tm, handles, rejected)
    stats = tm.statistics()
    assert stats.pending == stats.running == 0
    assert stats.started == stats.succeeded + stats.failed + stats.cancelled
    assert all(h.done for h in handles)
    failed = [h for h in handles if h.state is TaskState.FAILED]
    assert len(handled) == stats.failed == len(failed)
    assert Counter(id(h) for h in handled) == Counter(id(h) for h in failed)
    for handle in failed:
        assert isinstance(getattr(handle.outcome, "error", None), Exception)
    # The close is bounded by the shield timeout, and reports only tasks that were cancelled.
    report = tm.shutdown_report
    assert report is not None
    assert report.duration <= shield_timeout
    assert trio.current_time() == close_started + report.duration
    assert all(h.state is TaskState.CANCELLED for h in report.cancelled)
    # The monitor checked every quarter second from the start to the end of the close.
    assert checked_at == [i / 4 for i in range(len(checked_at))]
    assert checked_at[-1] == close_started + report.duration
    event(f"shutdown cancelled tasks: {bool(report.cancelled)}")
    event(f"rejections: {bool(rejected)}")
    event(f"failures: {bool(failed)}")
    event(f"pending at close: {any(h.started_at is None for h in report.cancelled)}")


@settings(max_examples=60, deadline=None)
@given(schedules)
def test_random_schedules_keep_the_accounting_exact(schedule: Schedule) -> None:
    trio.run(run_schedule, schedule, clock=trio.testing.MockClock(autojump_threshold=0))
