"""Caps and de-duplication: ``max_running`` (FIFO), ``max_pending`` and ``key=``."""

from __future__ import annotations

import dataclasses
import gc
import warnings

import pytest
import trio
import trio.testing

import trio_bg
from tests.conftest import Recorder
from trio_bg import TaskHandle, TaskManager, TaskRejected, TaskState
from trio_bg.testing import check_accounting


def running_names(handles: list[TaskHandle[None]]) -> set[str]:
    return {h.name for h in handles if h.state is TaskState.RUNNING}


def check_counters(tm: TaskManager, handles: list[TaskHandle[None]]) -> None:
    stats = tm.statistics()
    by_state = [h.state for h in handles]
    assert stats.running == by_state.count(TaskState.RUNNING)
    assert stats.pending == by_state.count(TaskState.PENDING)
    check_accounting(stats)


async def test_max_running_caps_running_tasks_and_starts_waiting_ones_in_fifo_order(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # job-0 ends at 1 and frees a slot for job-2 (the oldest waiting, not the newest);
    # job-2 ends at 3 -> job-3; job-1 ends at 4 -> job-4.
    durations = [1, 4, 2, 3, 1]
    starts: dict[str, float] = {}
    timeline: list[tuple[float, set[str]]] = []
    handles: list[TaskHandle[None]] = []

    async with trio_bg.open_task_manager(max_running=2) as tm:

        async def job(seconds: float) -> None:
            name = trio.lowlevel.current_task().name
            starts[name] = trio.current_time()
            # checked again at every start, from inside the task
            assert len(running_names(handles)) <= 2
            check_counters(tm, handles)
            await trio.sleep(seconds)

        for i, seconds in enumerate(durations):
            handles.append(tm.start_soon_named(f"job-{i}", job, seconds))
            check_counters(tm, handles)
        assert running_names(handles) == {"job-0", "job-1"}
        assert [h.state for h in handles[2:]] == [TaskState.PENDING] * 3

        step = 0
        while tm.active_count:
            await trio.sleep_until(step + 0.5)  # half-way between two events
            step += 1
            running = running_names(handles)
            assert len(running) <= 2
            check_counters(tm, handles)
            timeline.append((trio.current_time(), running))

    assert starts == {"job-0": 0, "job-1": 0, "job-2": 1, "job-3": 3, "job-4": 4}
    assert timeline == [
        (0.5, {"job-0", "job-1"}),
        (1.5, {"job-1", "job-2"}),
        (2.5, {"job-1", "job-2"}),
        (3.5, {"job-1", "job-3"}),
        (4.5, {"job-3", "job-4"}),
        (5.5, {"job-3"}),
        (6.5, set()),
    ]
    assert [h.state for h in handles] == [TaskState.SUCCEEDED] * 5


async def test_a_start_past_max_pending_is_rejected_without_calling_the_function(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture, recorder: Recorder
) -> None:
    async with trio_bg.open_task_manager(max_running=1, max_pending=2) as tm:
        handles = [tm.start_soon(recorder.job, i) for i in range(3)]  # 1 running + 2 pending
        before = tm.statistics()
        assert (before.running, before.pending, before.rejected) == (1, 2, 0)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            with pytest.raises(
                TaskRejected, match=r"^task manager 'app' has 2 pending tasks \(max_pending=2\)$"
            ):
                tm.start_soon(recorder.job, 99)
            gc.collect()
        assert caught == []
        assert [r for r in caplog.records if r.levelno >= 30] == []  # no warning logged either
        assert tm.statistics() == dataclasses.replace(before, rejected=1)
        assert tm.active_tasks == tuple(handles)
        await tm.wait_idle()
        assert trio.current_time() == 3
        # The queue has room again.
        assert tm.start_soon(recorder.job, 3).state is TaskState.RUNNING

    assert recorder.calls == [0, 1, 2, 3]
    stats = tm.statistics()
    assert (stats.started, stats.succeeded, stats.rejected) == (4, 4, 1)


async def test_max_pending_zero_allows_only_running_tasks(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with trio_bg.open_task_manager(max_running=2, max_pending=0) as tm:
        tm.start_soon(trio.sleep, 1)
        tm.start_soon(trio.sleep, 1)
        with pytest.raises(TaskRejected, match=r"^task manager 'app' has 0 pending tasks"):
            tm.start_soon(trio.sleep, 1)
        assert tm.statistics().rejected == 1
        assert tm.active_count == 2


async def test_a_second_start_with_an_active_key_returns_the_same_handle(
    autojump_clock: trio.testing.MockClock, recorder: Recorder
) -> None:
    async with trio_bg.open_task_manager() as tm:
        first = tm.start_soon(recorder.job, "first", key="order-42")
        again = tm.start_soon_named("other-name", recorder.job, "second", key="order-42")
        other_key = tm.start_soon(recorder.job, "other", key="order-43")
        assert again is first
        assert other_key is not first
        assert first.key == "order-42"
        assert tm.statistics().started == 2
        assert await again.get() == "first"
        await tm.wait_idle()
        assert sorted(recorder.calls) == ["first", "other"]  # trio runs a batch in random order

        # Once the keyed task has finished, the key starts a new task.
        third = tm.start_soon(recorder.job, "third", key="order-42")
        assert third is not first
        assert await third.get() == "third"

    assert sorted(recorder.calls[:2]) == ["first", "other"]
    assert recorder.calls[2:] == ["third"]
    assert tm.statistics().started == 3


async def test_a_key_also_matches_a_pending_task(autojump_clock: trio.testing.MockClock) -> None:
    async with trio_bg.open_task_manager(max_running=1) as tm:
        tm.start_soon(trio.sleep, 1)
        queued = tm.start_soon(trio.sleep, 1, key="k")
        assert queued.state is TaskState.PENDING
        assert tm.start_soon(trio.sleep, 5, key="k") is queued
        assert tm.statistics().pending == 1
        # A cancelled pending task releases its key at once.
        assert queued.cancel() is True
        fresh = tm.start_soon(trio.sleep, 1, key="k")
        assert fresh is not queued
        assert fresh.state is TaskState.PENDING
