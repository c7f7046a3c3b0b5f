"""What a task can be: async functions, sync functions (in worker threads), partials, async
callable objects, ``add_task`` with keyword arguments; and the context tasks run in.

The thread tests use no mock clock: an autojump clock would jump while a worker thread runs.
"""

from __future__ import annotations

import contextvars
import functools
import logging
import threading
from typing import Any

import pytest
import trio
import trio.testing

import trio_bg
from trio_bg import TaskHandle, TaskState

request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="unset")


async def async_ident(tag: str, *, suffix: str = "") -> tuple[int, str]:
    await trio.sleep(1)  # only possible in trio's thread
    return threading.get_ident(), tag + suffix


def sync_ident(tag: str, *, suffix: str = "") -> tuple[int, str]:
    return threading.get_ident(), tag + suffix


class AsyncGreeter:
    async def __call__(self, name: str) -> tuple[int, str]:
        await trio.sleep(1)
        return threading.get_ident(), f"hello {name}"


async def test_a_sync_function_runs_in_a_worker_thread() -> None:
    async with trio_bg.open_task_manager() as tm:
        handle = tm.start_soon(sync_ident, "sync")
        ident, tag = await handle.get()
    assert ident != threading.get_ident()
    assert tag == "sync"
    assert handle.name == "sync_ident"
    assert handle.state is TaskState.SUCCEEDED


async def test_a_sync_failure_is_captured_like_an_async_one(
    caplog: pytest.LogCaptureFixture,
) -> None:
    error = ValueError("sync boom")
    threads: list[int] = []
    calls: list[tuple[TaskHandle[Any], BaseException]] = []

    def fails() -> None:
        threads.append(threading.get_ident())
        raise error

    async with trio_bg.open_task_manager(on_error=lambda h, e: calls.append((h, e))) as tm:
        handle = tm.start_soon_named("sync-fails", fails)
        sibling = tm.start_soon(sync_ident, "sibling")
        with pytest.raises(ValueError, match=r"^sync boom$") as info:
            await handle.get()
        assert (await sibling.get())[1] == "sibling"

    assert info.value is error
    [worker] = threads
    assert worker != threading.get_ident()
    assert handle.state is TaskState.FAILED
    assert calls == [(handle, error)]
    assert tm.statistics().failed == 1
    [record] = [r for r in caplog.records if r.name == "trio_bg" and r.levelno == logging.ERROR]
    assert record.getMessage() == f"task 'sync-fails' ({handle.id}) failed"


async def test_max_threads_bounds_how_many_worker_threads_run_at_once() -> None:
    lock = threading.Lock()
    two_inside = threading.Event()
    gate = threading.Event()
    counts = {"now": 0, "peak": 0}

    def work() -> int:
        with lock:
            counts["now"] += 1
            counts["peak"] = max(counts["peak"], counts["now"])
            if counts["now"] == 2:
                two_inside.set()
        try:
            # Every thread let in piles up here until the gate opens; the timeout only guards
            # against a hang.
            assert gate.wait(timeout=10)
        finally:
            with lock:
                counts["now"] -= 1
        return threading.get_ident()

    async with trio_bg.open_task_manager(max_threads=2) as tm:
        handles = [tm.start_soon(work) for _ in range(6)]
        # All six are RUNNING as far as the manager is concerned; the limiter holds four back.
        assert tm.statistics().running == 6
        await trio.testing.wait_all_tasks_blocked()  # every thread that may start has been asked
        assert await trio.to_thread.run_sync(two_inside.wait, 10)  # (trio's default limiter)
        await trio.to_thread.run_sync(lambda: None)  # one more round trip for any straggler
        with lock:
            assert counts["now"] == 2
        gate.set()
        idents = [await handle.get() for handle in handles]

    assert counts == {"now": 0, "peak": 2}
    assert threading.get_ident() not in idents


async def test_an_async_callable_object_runs_as_async(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with trio_bg.open_task_manager() as tm:
        handle = tm.start_soon(AsyncGreeter(), "ada")
        ident, text = await handle.get()
    assert ident == threading.get_ident()
    assert text == "hello ada"
    assert trio.current_time() == 1
    assert handle.name == "AsyncGreeter"


async def test_a_partial_of_an_async_function_runs_as_async(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with trio_bg.open_task_manager() as tm:
        handle = tm.start_soon(functools.partial(async_ident, suffix="!"), "partial")
        assert await handle.get() == (threading.get_ident(), "partial!")
    assert trio.current_time() == 1
    assert handle.name == "async_ident"


async def test_a_partial_of_an_async_callable_object_runs_as_async(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with trio_bg.open_task_manager() as tm:
        ident, text = await tm.start_soon(functools.partial(AsyncGreeter(), "bob")).get()
    assert (ident, text) == (threading.get_ident(), "hello bob")
    assert trio.current_time() == 1


async def test_a_partial_of_a_sync_function_runs_in_a_thread() -> None:
    async with trio_bg.open_task_manager() as tm:
        ident, tag = await tm.start_soon(functools.partial(sync_ident, suffix="?"), "p").get()
    assert ident != threading.get_ident()
    assert tag == "p?"


async def test_add_task_passes_keyword_arguments_to_async_and_sync_functions() -> None:
    async def notify(user_id: int, channel: str = "email") -> tuple[int, str]:
        await trio.lowlevel.checkpoint()
        return user_id, channel

    async with trio_bg.open_task_manager() as tm:
        handle = tm.add_task(notify, 7, channel="sms")
        assert handle.name == notify.__qualname__
        assert await handle.get() == (7, "sms")
        assert await tm.add_task(notify, 8).get() == (8, "email")
        sync_handle = tm.add_task(sync_ident, "kw", suffix="-sync")

    ident, tag = await sync_handle.get()
    assert tag == "kw-sync"
    assert ident != threading.get_ident()


async def test_context_variables_set_before_the_start_are_seen_by_immediate_and_queued_tasks(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async def read(seconds: float) -> str:
        await trio.sleep(seconds)
        return request_id.get()

    async with trio_bg.open_task_manager(max_running=1) as tm:
        token = request_id.set("r-1")
        try:
            immediate = tm.start_soon(read, 1)
            request_id.set("r-2")
            queued = tm.start_soon(read, 1)
            assert queued.state is TaskState.PENDING
            request_id.set("r-3")
            assert await immediate.get() == "r-1"
            assert await queued.get() == "r-2"
        finally:
            request_id.reset(token)
    assert trio.current_time() == 2


async def test_context_variables_reach_sync_tasks_in_threads() -> None:
    def read() -> str:
        return request_id.get()

    async with trio_bg.open_task_manager() as tm:
        token = request_id.set("r-thread")
        try:
            handle = tm.start_soon(read)
        finally:
            request_id.reset(token)
        assert await handle.get() == "r-thread"
