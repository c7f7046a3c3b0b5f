"""Groups: ``async with tm.open_group(name) as group``."""

from __future__ import annotations

import pytest
import trio
import trio.testing

import trio_bg
from tests.conftest import sleep_then_raise, sleep_then_return
from trio_bg import TaskState


async def test_wait_all_returns_results_in_start_order(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with trio_bg.open_task_manager() as tm:
        outside = tm.start_soon(trio.sleep, 10)
        async with tm.open_group("thumbnails") as group:
            # They finish in the order 1, 2, 0; the results come in start order.
            handles = [
                group.start_soon_named(f"thumb-{i}", sleep_then_return, seconds, f"img-{i}")
                for i, seconds in enumerate([3, 1, 2])
            ]
            assert group.name == "thumbnails"
            assert group.handles == tuple(handles)
            assert all(h.group == "thumbnails" for h in handles)
            assert tm.active_tasks == (outside, *handles)  # visible in the manager
            assert tm.active_count == 4
            assert await group.wait_all() == ["img-0", "img-1", "img-2"]
            assert trio.current_time() == 3
        assert outside.state is TaskState.RUNNING  # the group waits for its own tasks only
        outside.cancel()


async def test_wait_all_raises_an_exception_group_with_the_failure_after_all_tasks_are_done(
    autojump_clock: trio.testing.MockClock,
) -> None:
    error = ValueError("thumb-1 broke")
    async with trio_bg.open_task_manager() as tm, tm.open_group("thumbnails") as group:
        first = group.start_soon(sleep_then_return, 3, "a")
        broken = group.start_soon(sleep_then_raise, 1, error)
        last = group.start_soon(sleep_then_return, 2, "c")
        with pytest.RaisesGroup(
            pytest.RaisesExc(ValueError, match=r"^thumb-1 broke$"),
            match=r"^1 of 3 tasks in group 'thumbnails' failed$",
        ) as info:
            await group.wait_all()
        assert trio.current_time() == 3  # not at t=1: it waited for the others
        assert info.value.exceptions == (error,)  # exceptions compare by identity
        assert first.state is last.state is TaskState.SUCCEEDED
        assert broken.state is TaskState.FAILED


async def test_wait_all_reports_a_cancelled_task_as_task_cancelled(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with trio_bg.open_task_manager() as tm, tm.open_group("g") as group:
        group.start_soon(sleep_then_return, 1, "ok")
        doomed = group.start_soon_named("doomed", trio.sleep, 10)
        doomed.cancel()
        with pytest.RaisesGroup(
            pytest.RaisesExc(
                trio_bg.TaskCancelled, match=rf"^task 'doomed' \({doomed.id}\) was cancelled$"
            ),
            match=r"^1 of 2 tasks in group 'g' failed$",
        ):
            await group.wait_all()


async def test_leaving_the_group_block_waits_for_all_of_its_tasks(
    autojump_clock: trio.testing.MockClock,
) -> None:
    error = OSError("failure does not raise at the block exit")
    async with trio_bg.open_task_manager() as tm:
        async with tm.open_group("batch") as group:
            short = group.start_soon(trio.sleep, 2)
            long = group.start_soon(trio.sleep, 5)
            broken = group.start_soon(sleep_then_raise, 1, error)
            synced = group.add_task(sleep_then_return, 4, "added")
        assert trio.current_time() == 5
        assert short.done and long.done and synced.done
        assert broken.state is TaskState.FAILED
        assert tm.active_count == 0
        assert repr(group) == "<TaskGroup 'batch' tasks=4 unfinished=0>"


async def test_an_empty_group_exits_at_once(autojump_clock: trio.testing.MockClock) -> None:
    async with trio_bg.open_task_manager() as tm:
        async with tm.open_group("empty") as group:
            assert await group.wait_all() == []
        assert trio.current_time() == 0


async def test_group_tasks_obey_the_manager_cap(autojump_clock: trio.testing.MockClock) -> None:
    async with trio_bg.open_task_manager(max_running=1) as tm, tm.open_group("serial") as group:
        handles = [group.start_soon(sleep_then_return, 1, i) for i in range(3)]
        assert [h.state for h in handles] == [
            TaskState.RUNNING,
            TaskState.PENDING,
            TaskState.PENDING,
        ]
        assert await group.wait_all() == [0, 1, 2]
        assert trio.current_time() == 3


async def test_an_exception_in_the_group_block_cancels_its_unshielded_tasks(
    autojump_clock: trio.testing.MockClock,
) -> None:
    error = LookupError("group body failed")
    async with trio_bg.open_task_manager() as tm:
        with pytest.raises(LookupError, match=r"^group body failed$") as info:
            async with tm.open_group("g") as group:
                plain = group.start_soon(trio.sleep, 10)
                shielded = group.start_soon(sleep_then_return, 3, "kept", shield=True)
                outside = tm.start_soon(sleep_then_return, 2, "not in the group")
                await trio.sleep(1)
                raise error
        assert info.value is error
        await trio.testing.wait_all_tasks_blocked()
        assert plain.state is TaskState.CANCELLED
        assert shielded.state is TaskState.RUNNING
        assert await shielded.get() == "kept"
        assert await outside.get() == "not in the group"
        assert trio.current_time() == 3
