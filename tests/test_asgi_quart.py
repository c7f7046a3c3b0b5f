"""TaskMiddleware around a Quart-Trio app under a real Hypercorn."""

from __future__ import annotations

from typing import Any

import pytest
import trio
from quart import request
from quart_trio import QuartTrio

from trio_bg import TaskHandle, TaskState, Timing
from trio_bg.asgi import TaskMiddleware, app_tasks, request_tasks
from trio_bg.testing import serve_app


async def test_quart_trio_handler_uses_request_and_app_tasks(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Quart-Trio cancels its own final send once Hypercorn reports the stream closed (after the
    # body was written): the after_response task must still run, with no "not run" warning.
    events: list[str] = []
    handles: list[TaskHandle[Any]] = []
    lifecycle: list[str] = []

    async def record(what: str) -> str:
        events.append(what)
        return what

    quart = QuartTrio(__name__)

    @quart.before_serving
    async def startup() -> None:
        lifecycle.append("startup")

    @quart.after_serving
    async def shutdown() -> None:
        lifecycle.append("shutdown")

    @quart.route("/orders")
    async def orders() -> str:
        tasks = request_tasks(request.scope)
        handles.append(tasks.start_soon_named("audit", record, "immediate"))
        handles.append(tasks.after_route.start_soon_named("cache", record, "after route"))
        handles.append(tasks.after_response.start_soon_named("email", record, "after response"))
        handles.append(app_tasks(request.scope).start_soon_named("reindex", record, "app"))
        return "created"

    # Quart types its __call__ with TypedDict scopes, which trio_bg.asgi.ASGIApp does not accept.
    app = TaskMiddleware(quart)
    async with serve_app(app) as server:
        response = await server.client.get("/orders")
        with trio.fail_after(2):
            for handle in handles:
                await handle.wait()

    assert (response.status_code, response.text) == (200, "created")
    assert lifecycle == ["startup", "shutdown"]
    assert sorted(events) == sorted(["immediate", "after route", "after response", "app"])
    assert [h.state for h in handles] == [TaskState.SUCCEEDED] * 4
    assert [h.timing for h in handles[:3]] == list(Timing)
    assert [r for r in caplog.records if r.name == "trio_bg"] == []
