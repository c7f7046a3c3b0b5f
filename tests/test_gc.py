"""Per-task and per-request objects are freed by reference counting: no reference cycles.

Thousands of in-flight tasks make every full garbage collection slower, and objects left in
cycles make collections come more often (see benchmarks P5). These tests disable the collector,
run work, and then ask it what it had to find: nothing of trio_bg's may be among it.
"""

from __future__ import annotations

import gc
import logging
from collections.abc import Iterator
from typing import Any

import pytest
import trio
import trio.lowlevel

import trio_bg
from tests.asgi_server import respond
from trio_bg.asgi import TaskMiddleware, request_tasks
from trio_bg.asgi._types import Receive, Scope, Send
from trio_bg.testing import serve_app


@pytest.fixture
def saved_garbage() -> Iterator[list[object]]:
    """Collect first, then keep every object the collector finds until the test looks.

    The process-wide history of finished tasks is emptied first: it may hold other tests' handles
    (in cycles of those tests' own making) that this test's tasks would push out mid-test.
    """
    trio_bg.set_recent_limit(trio_bg.set_recent_limit(0))
    gc.collect()
    gc.disable()
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        yield gc.garbage
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        gc.enable()


def _ours(garbage: list[object]) -> list[str]:
    gc.collect()
    return sorted(
        {type(o).__qualname__ for o in garbage if type(o).__module__.startswith("trio_bg")}
    )


async def _tiny() -> int:
    await trio.lowlevel.checkpoint()
    return 1


async def _fail() -> None:
    await trio.lowlevel.checkpoint()
    raise ValueError("boom")


def _sync() -> int:
    return 2


async def test_finished_tasks_leave_no_cycles(saved_garbage: list[object]) -> None:
    logging.getLogger("trio_bg").disabled = True
    try:
        async with trio_bg.open_task_manager(max_running=5, on_error=lambda h, e: None) as tm:
            handles: list[trio_bg.TaskHandle[Any]] = []
            for i in range(50):
                handles.append(tm.start_soon_named("tiny", _tiny, key=f"k{i % 7}"))
                handles.append(tm.start_soon(_fail, retry=trio_bg.Retry(attempts=2, backoff=0)))
                handles.append(tm.start_soon(_sync, timeout=5))
            tm.start_soon(trio.sleep, 100).cancel()
            async with tm.open_group("g") as group:
                for _ in range(10):
                    group.start_soon(_tiny)
            assert await group.wait_all() == [1] * 10
            await tm.wait_idle()
        assert all(h.done for h in handles)
        del handles, group
    finally:
        logging.getLogger("trio_bg").disabled = False
    assert _ours(saved_garbage) == []


async def _app(scope: Scope, receive: Receive, send: Send) -> None:
    tasks = request_tasks(scope)
    tasks.start_soon_named("now", _tiny)
    tasks.after_route.start_soon_named("route", _tiny)
    tasks.after_response.start_soon_named("response", _fail)
    tasks.add_task(_sync)
    if scope["path"] == "/raise":
        raise RuntimeError("handler failed")
    await respond(send, b"ok")


async def test_requests_leave_no_cycles(saved_garbage: list[object]) -> None:
    logging.getLogger("trio_bg").disabled = True
    try:
        async with serve_app(TaskMiddleware(_app)) as server:
            for _ in range(30):
                assert (await server.client.get("/")).status_code == 200
                assert (await server.client.get("/raise")).status_code == 500
    finally:
        logging.getLogger("trio_bg").disabled = False
    assert _ours(saved_garbage) == []


def test_tuned_gc_freezes_and_sets_the_threshold_then_restores_both() -> None:
    from trio_bg._core._gc import tuned_gc

    before = gc.get_threshold()
    assert gc.get_freeze_count() == 0
    with tuned_gc(freeze=True, threshold=(5000, 20, 100)):
        assert gc.get_threshold() == (5000, 20, 100)
        assert gc.get_freeze_count() > 0
    assert gc.get_threshold() == before
    assert gc.get_freeze_count() == 0
