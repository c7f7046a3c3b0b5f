"""``RequestTaskManager.request_info``: what dashboards and instruments read of a request, and
that reading it changes nothing."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from trio_bg.asgi import RequestInfo, RequestTaskManager, TaskMiddleware, request_tasks


async def test_request_info_reads_the_route_without_renaming_the_manager() -> None:
    seen: dict[str, Any] = {}

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        manager = request_tasks(scope)
        assert isinstance(manager, RequestTaskManager)
        seen["before"] = manager.request_info
        seen["name before"] = manager.name
        scope["route"] = SimpleNamespace(path="/items/{id}")  # as Starlette's router sets it
        seen["routed"] = manager.request_info
        seen["name routed"] = manager.name  # reading request_info renamed nothing
        await send({"type": "http.response.start", "status": 201, "headers": []})
        seen["started"] = manager.request_info
        seen["name started"] = manager.name
        await send({"type": "http.response.body", "body": b""})

    async def receive() -> dict[str, object]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def ignore(message: dict[str, object]) -> None:
        return None

    scope = {"type": "http", "method": "POST", "path": "/items/7", "headers": []}
    await TaskMiddleware(app)(scope, receive, ignore)
    before, routed, started = seen["before"], seen["routed"], seen["started"]
    assert isinstance(before, RequestInfo)
    assert (before.method, before.route, before.status) == ("POST", None, None)
    assert (routed.method, routed.route, routed.status) == ("POST", "/items/{id}", None)
    assert (started.method, started.route, started.status) == ("POST", "/items/{id}", 201)
    assert before.opened_time == routed.opened_time == started.opened_time > 0
    assert seen["name before"] == seen["name routed"] == "POST"
    assert seen["name started"] == "POST /items/{id}"  # named when the response started
