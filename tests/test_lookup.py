"""Lookup across managers (``trio_bg.find_task``, ``trio_bg.set_recent_limit``) and the read-only
handle surface (``trio_bg.TaskHandleLike``, ``get()``'s cause, ``wait_all(of=...)``).

The process-wide history is one bound for the whole process: every test that changes it puts the
old limit back in a ``finally``. One test runs a real Hypercorn (``tests.asgi_server.running``), so
that two different requests of one server look at the same task.
"""

from __future__ import annotations

import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

import trio_bg
from tests.asgi_server import respond, running
from tests.conftest import http_only, sleep_then_return
from tests.test_asgi_timing_scripted import (
    FINAL_BODY,
    START_200,
    Scope,
    ScriptedServer,
    Timeline,
    http_scope,
)
from trio_bg import TaskCancelled, TaskHandle, TaskHandleLike, TaskState
from trio_bg.asgi import TaskMiddleware, request_tasks

PACKAGE_DIR = Path(trio_bg.__file__).parent
DEFAULT_RECENT_LIMIT = 1000


@pytest.fixture
def recent_limit() -> Iterator[None]:
    """Lets the test change the process-wide history bound; puts the default back after it."""
    try:
        yield
    finally:
        trio_bg.set_recent_limit(DEFAULT_RECENT_LIMIT)


async def request_with_a_task() -> TaskHandle[Any]:
    """Serve one scripted request whose handler starts one short task; return its handle once
    the request call (and so the task) has ended."""
    handles: list[TaskHandle[Any]] = []

    async def handler(scope: Scope, receive: Any, send: Any) -> None:
        handles.append(request_tasks(scope).start_soon_named("audit", trio.sleep, 0))
        await send(START_200)
        await send(FINAL_BODY)

    server = ScriptedServer(Timeline())
    await TaskMiddleware(handler)(http_scope(), server.receive, server.send)
    [handle] = handles
    assert handle.state is TaskState.SUCCEEDED
    return handle


# -- find_task --------------------------------------------------------------------------------


async def test_find_task_finds_the_active_tasks_of_every_open_manager(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with (
        trio_bg.open_task_manager("first") as first,
        trio_bg.open_task_manager("second", max_running=1) as second,
    ):
        running = first.start_soon_named("running", sleep_then_return, 1, "running")
        busy = second.start_soon_named("busy", sleep_then_return, 1, "busy")
        queued = second.start_soon_named("queued", sleep_then_return, 1, "queued")
        assert queued.state is TaskState.PENDING
        assert trio_bg.find_task(running.id) is running
        assert trio_bg.find_task(busy.id) is busy
        assert trio_bg.find_task(queued.id) is queued


async def test_find_task_finds_a_finished_task_while_its_manager_is_open_and_after_it_closed(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with trio_bg.open_task_manager() as tm:
        handle = tm.start_soon_named("report", sleep_then_return, 1, "done")
        await handle.wait()
        assert tm.recent[-1] is handle
        assert trio_bg.find_task(handle.id) is handle

    assert trio_bg.find_task(handle.id) is handle
    assert handle.state is TaskState.SUCCEEDED


async def test_find_task_returns_none_for_an_id_no_task_has() -> None:
    async with trio_bg.open_task_manager() as tm:
        handle = tm.start_soon_named("job", trio.sleep, 0)
        assert trio_bg.find_task(f"task-{int(handle.id[5:]) + 1000000}") is None


@pytest.mark.parametrize(
    "task_id", ["task-x", "task-²", "", 5, None, "task-", "task--1", "task-1.0", " task-1", "1"]
)
async def test_find_task_returns_none_for_a_malformed_id(task_id: Any) -> None:
    async with trio_bg.open_task_manager() as tm:
        tm.start_soon_named("job", trio.sleep, 0)  # some task, so that there is one to find
        assert trio_bg.find_task(task_id) is None


async def test_find_task_does_not_read_an_id_with_a_leading_zero_as_another_task(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # "task-07" is no task's id: the handle it would return says "task-7".
    async with trio_bg.open_task_manager() as tm:
        handle = tm.start_soon_named("job", sleep_then_return, 1, "done")
        number = handle.id.removeprefix("task-")
        assert trio_bg.find_task(f"task-0{number}") is None
        assert tm.get(f"task-0{number}") is None


# -- set_recent_limit -------------------------------------------------------------------------


async def test_set_recent_limit_bounds_the_history_of_finished_request_tasks(
    recent_limit: None,
) -> None:
    assert trio_bg.set_recent_limit(2) == DEFAULT_RECENT_LIMIT
    first = await request_with_a_task()
    second = await request_with_a_task()
    third = await request_with_a_task()

    # Request managers keep no recent of their own: only the newest two are still known.
    assert trio_bg.find_task(first.id) is None
    assert trio_bg.find_task(second.id) is second
    assert trio_bg.find_task(third.id) is third

    # Shrinking keeps the newest; 0 keeps none.
    assert trio_bg.set_recent_limit(1) == 2
    assert [trio_bg.find_task(h.id) for h in (second, third)] == [None, third]
    assert trio_bg.set_recent_limit(0) == 1
    assert trio_bg.find_task(third.id) is None
    fourth = await request_with_a_task()
    assert trio_bg.find_task(fourth.id) is None
    assert trio_bg.set_recent_limit(DEFAULT_RECENT_LIMIT) == 0


@pytest.mark.parametrize(
    ("limit", "error", "message"),
    [
        (-1, ValueError, "limit must be >= 0, got -1"),
        ("5", TypeError, "limit must be an int, got str"),
        (2.0, TypeError, "limit must be an int, got float"),
        (True, TypeError, "limit must be an int, got bool"),
        (None, TypeError, "limit must be an int, got NoneType"),
    ],
)
def test_set_recent_limit_refuses_anything_but_an_int_of_at_least_0(
    recent_limit: None, limit: Any, error: type[Exception], message: str
) -> None:
    # None is refused too, so no message may offer it.
    assert trio_bg.set_recent_limit(7) == DEFAULT_RECENT_LIMIT
    with pytest.raises(error, match=f"^{message}$"):
        trio_bg.set_recent_limit(limit)
    assert trio_bg.set_recent_limit(DEFAULT_RECENT_LIMIT) == 7  # unchanged by the refusal


# -- across requests, on a real server --------------------------------------------------------


async def test_a_request_finds_the_task_another_request_started_while_it_runs_and_once_done(
    recent_limit: None,
) -> None:
    release = trio.Event()
    email_started = trio.Event()
    handles: list[TaskHandle[str]] = []

    async def send_email() -> str:
        email_started.set()
        await release.wait()
        return "sent"

    async def app(scope: Any, receive: Any, send: Any) -> None:
        http_only(scope)
        if scope["path"] == "/orders":
            handles.append(request_tasks(scope).start_soon_named("send-email", send_email))
            await respond(send, handles[-1].id.encode())
            return
        task_id = scope["query_string"].decode().removeprefix("id=")
        found = trio_bg.find_task(task_id)
        await respond(send, b"unknown" if found is None else f"{found.name} {found.state}".encode())

    async with running(TaskMiddleware(app)) as server:
        with trio.fail_after(5):
            started = await server.client.post("/orders")
            task_id = started.text
            await email_started.wait()
            while_running = await server.client.get("/tasks", params={"id": task_id})
            release.set()
            [email] = handles
            await email.wait()
            once_done = await server.client.get("/tasks", params={"id": task_id})
            unknown = await server.client.get("/tasks", params={"id": "task-x"})

    assert task_id == email.id
    assert (while_running.status_code, while_running.text) == (200, "send-email running")
    assert (once_done.status_code, once_done.text) == (200, "send-email succeeded")
    assert unknown.text == "unknown"
    assert await email.get() == "sent"


# -- TaskHandleLike and get() -----------------------------------------------------------------


async def test_a_task_handle_is_a_task_handle_like() -> None:
    async with trio_bg.open_task_manager() as tm:
        handle = tm.start_soon_named("job", sleep_then_return, 0, 1)
        like: TaskHandleLike[int] = handle
        assert isinstance(handle, TaskHandleLike)
        assert await like.get() == 1
    assert not isinstance(object(), TaskHandleLike)
    assert not isinstance(tm, TaskHandleLike)


async def wait_forever() -> None:
    await trio.sleep_forever()


@pytest.mark.parametrize("how", ["handle.cancel", "cancel_all"])
async def test_get_of_a_task_cancelled_while_running_raises_from_the_cancelled_that_stopped_it(
    autojump_clock: trio.testing.MockClock, how: str
) -> None:
    async with trio_bg.open_task_manager() as tm:
        handle = tm.start_soon_named("waiter", wait_forever)
        await trio.sleep(1)
        assert handle.state is TaskState.RUNNING
        if how == "handle.cancel":
            assert handle.cancel() is True
        else:
            assert tm.cancel_all() == 1
        with pytest.raises(
            TaskCancelled, match=rf"^task 'waiter' \({handle.id}\) was cancelled$"
        ) as caught:
            await handle.get()

    cause = caught.value.__cause__
    assert isinstance(cause, trio.Cancelled)
    # Its traceback starts in the task's own function, where it waited; no trio_bg frame in it.
    frames = traceback.extract_tb(cause.__traceback__)
    assert frames[0].name == "wait_forever"
    assert frames[0].filename == __file__
    assert [f.filename for f in frames if Path(f.filename).is_relative_to(PACKAGE_DIR)] == []


async def test_get_of_a_task_cancelled_while_pending_raises_from_nothing(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with trio_bg.open_task_manager(max_running=1) as tm:
        busy = tm.start_soon_named("busy", sleep_then_return, 1, "busy")
        queued = tm.start_soon_named("queued", sleep_then_return, 1, "queued")
        assert queued.cancel() is True
        with pytest.raises(
            TaskCancelled, match=rf"^task 'queued' \({queued.id}\) was cancelled$"
        ) as caught:
            await queued.get()
        assert await busy.get() == "busy"

    assert caught.value.__cause__ is None
    assert queued.started_at is None


# -- wait_all(of=...) -------------------------------------------------------------------------


async def test_wait_all_of_a_class_returns_the_values_checked_against_it() -> None:
    async with trio_bg.open_task_manager() as tm, tm.open_group("numbers") as group:
        one = group.start_soon_named("one", sleep_then_return, 0, 1)
        group.start_soon_named("two", sleep_then_return, 0, 2)

    values: list[int] = await group.wait_all(int)
    assert values == [1, 2]
    assert await group.wait_all() == [1, 2]
    with pytest.raises(
        TypeError, match=rf"^task 'one' \({one.id}\) of group 'numbers' returned int, not str$"
    ):
        await group.wait_all(str)
    with pytest.raises(TypeError, match=r"^wait_all\(\) takes a class, got int$"):
        await group.wait_all(5)  # type: ignore[call-overload]
