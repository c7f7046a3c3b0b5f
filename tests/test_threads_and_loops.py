"""Threads (DESIGN.md): a start from a thread trio started runs in the manager, any other thread
is refused before anything is counted, a sync Starlette endpoint works. Event loops: under
asyncio every entry point says trio_bg needs trio (tests/test_asyncio.py, one case per entry)."""

from __future__ import annotations

import re

import pytest
import trio
import trio.testing

import trio_bg
from trio_bg.asgi import TaskMiddleware, app_tasks, request_tasks


def exact(message: str) -> str:
    return f"^{re.escape(message)}$"


async def _app(scope: object, receive: object, send: object) -> None:
    del scope, receive, send


async def _double(x: int) -> int:
    await trio.lowlevel.checkpoint()
    return 2 * x


async def test_a_start_from_a_thread_trio_started_runs_in_the_manager() -> None:
    async with trio_bg.open_task_manager() as tm:

        def from_worker_thread() -> trio_bg.TaskHandle[int]:
            return tm.start_soon_named("double", _double, 21)

        handle = await trio.to_thread.run_sync(from_worker_thread)
        assert await handle.get() == 42
        # a refusal made in the trio thread comes back to the thread as it is
        tm_group = tm.open_group("g")
        with pytest.raises(
            RuntimeError, match=exact("enter group 'g' with 'async with' before starting tasks")
        ):
            await trio.to_thread.run_sync(lambda: tm_group.start_soon(_double, 1))
    stats = tm.statistics()
    assert (stats.started, stats.succeeded, stats.rejected) == (1, 1, 0)


FOREIGN_THREAD = (
    "start_soon_named() was called from a thread that trio did not start (or after its trio run "
    "ended): call it in the trio thread, or in a function that trio.to_thread.run_sync runs"
)


async def test_a_start_from_any_other_thread_is_refused_before_anything_is_counted() -> None:
    import threading

    errors: list[BaseException] = []
    async with trio_bg.open_task_manager() as tm:

        def foreign() -> None:
            try:
                tm.start_soon_named("double", _double, 1)
            except BaseException as exc:
                errors.append(exc)

        thread = threading.Thread(target=foreign)
        thread.start()
        await trio.to_thread.run_sync(thread.join)
        assert tm.statistics() == trio_bg.TaskStatistics(0, 0, 0, 0, 0, 0, 0)
        assert tm.active_count == 0
    assert len(errors) == 1 and isinstance(errors[0], RuntimeError)
    assert str(errors[0]) == FOREIGN_THREAD


async def test_a_sync_starlette_endpoint_starts_request_and_app_tasks() -> None:
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route

    from tests.asgi_server import running

    seen: list[str] = []

    async def note(what: str) -> None:
        seen.append(what)

    def endpoint(request: Request) -> PlainTextResponse:  # run in a worker thread by Starlette
        request_tasks(request).after_response.start_soon_named("after", note, "after")
        handle = app_tasks(request).start_soon_named("app", note, "app")
        return PlainTextResponse(handle.id)

    app = TaskMiddleware(Starlette(routes=[Route("/", endpoint)]))
    async with running(app) as server:
        response = await server.client.get("/")
        assert response.status_code == 200
        await server.wait_idle()
        assert trio_bg.find_task(response.text) is not None
    assert sorted(seen) == ["after", "app"]


async def test_a_request_start_from_a_foreign_thread_names_the_usual_source() -> None:
    """The core's message knows no framework; a request manager (the ASGI layer) adds where such
    a start usually belongs: a plain ``def`` endpoint."""
    import threading

    from tests.asgi_server import running

    errors: list[BaseException] = []

    async def app(scope: dict[str, object], receive: object, send: object) -> None:
        if scope["type"] != "http":
            return
        tasks = request_tasks(scope)

        def foreign() -> None:
            try:
                tasks.start_soon_named("double", _double, 1)
            except BaseException as exc:
                errors.append(exc)

        thread = threading.Thread(target=foreign)
        thread.start()
        await trio.to_thread.run_sync(thread.join)
        assert tasks.statistics().started == 0
        await send({"type": "http.response.start", "status": 204, "headers": []})  # type: ignore[operator]
        await send({"type": "http.response.body", "body": b""})  # type: ignore[operator]

    async with running(TaskMiddleware(app)) as server:
        assert (await server.client.get("/")).status_code == 204
    assert [str(e) for e in errors] == [
        FOREIGN_THREAD + ", such as a plain 'def' Starlette or FastAPI endpoint"
    ]
