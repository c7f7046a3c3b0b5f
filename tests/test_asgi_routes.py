"""Route-declared tasks under a real Hypercorn: a raw ASGI router, and Starlette on trio."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import trio
import trio.testing
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, StreamingResponse
from starlette.routing import Route

from tests.conftest import http_only, settle
from trio_bg import TaskManager, Timing
from trio_bg.asgi import (
    TaskMiddleware,
    request_tasks,
    route_task,
    route_task_with_scope,
    with_tasks,
)
from trio_bg.testing import serve_app


async def test_route_tasks_run_at_their_timing_for_their_route_only() -> None:
    events: list[str] = []
    managers: list[TaskManager] = []

    async def record(what: str) -> None:
        events.append(what)

    async def record_query(scope: Any, what: str) -> None:
        events.append(f"{what} {scope['query_string'].decode()}")

    @with_tasks(
        route_task(record, "x"),
        route_task(record, "x after route", timing=Timing.AFTER_ROUTE),
        route_task_with_scope(record_query, "x immediate", timing=Timing.IMMEDIATE),
    )
    async def orders(scope: Any, receive: Any, send: Any) -> None:
        await settle()  # every chance for a deferred task to start early (it must not)
        events.append("orders sends start")
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await settle()
        events.append("orders sends body")
        await send({"type": "http.response.body", "body": b"orders"})

    async def health(scope: Any, receive: Any, send: Any) -> None:
        events.append("health")
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"health"})

    routes = {"/orders": orders, "/health": health}

    async def router(scope: Any, receive: Any, send: Any) -> None:
        http_only(scope)
        managers.append(request_tasks(scope))
        await routes[scope["path"]](scope, receive, send)

    async with serve_app(TaskMiddleware(router)) as server:
        for path in ("/orders?n=1", "/health?n=2", "/orders?n=3"):
            response = await server.client.get(path)
            assert response.status_code == 200
            with trio.fail_after(2):
                await managers[-1].wait_idle()

    per_orders_request = [
        "x immediate n={n}",
        "orders sends start",
        "x after route",
        "orders sends body",
        "x",
    ]
    assert events == [
        *(e.format(n=1) for e in per_orders_request),
        "health",
        *(e.format(n=3) for e in per_orders_request),
    ]
    assert [m.statistics().succeeded for m in managers] == [3, 0, 3]


async def test_route_tasks_on_starlette_endpoints() -> None:
    events: list[str] = []
    managers: list[TaskManager] = []

    async def record(what: str) -> None:
        events.append(what)

    @with_tasks(
        route_task(record, "s after response"),
        route_task(record, "s after route", timing=Timing.AFTER_ROUTE),
    )
    async def with_route_tasks(request: Request) -> PlainTextResponse:
        events.append("s endpoint")
        managers.append(request_tasks(request))
        # A Starlette Request is a mapping over its scope: request_tasks(request) works.
        request_tasks(request).after_response.start_soon_named("inline", record, "s inline")
        return PlainTextResponse("s")

    @with_tasks(route_task(record, "sync after response"))
    def sync_endpoint(request: Request) -> PlainTextResponse:
        events.append("sync endpoint")
        managers.append(request_tasks(request))
        return PlainTextResponse("sync")

    async def plain(request: Request) -> PlainTextResponse:
        events.append("plain endpoint")
        managers.append(request_tasks(request))
        return PlainTextResponse("plain")

    starlette = Starlette(
        routes=[
            Route("/s", with_route_tasks),
            Route("/sync", sync_endpoint),
            Route("/plain", plain),
        ]
    )

    async with serve_app(TaskMiddleware(starlette)) as server:
        for path in ("/s", "/plain", "/sync", "/s"):
            response = await server.client.get(path)
            assert (response.status_code, response.text) == (200, path[1:])
            with trio.fail_after(2):
                await managers[-1].wait_idle()

    per_s_request = ["s endpoint", "s after route"]
    after_s_response = sorted(["s after response", "s inline"])  # started together
    assert events[:2] == per_s_request
    assert sorted(events[2:4]) == after_s_response
    assert events[4:7] == ["plain endpoint", "sync endpoint", "sync after response"]
    assert events[7:9] == per_s_request
    assert sorted(events[9:]) == after_s_response
    assert [m.statistics().succeeded for m in managers] == [3, 0, 1, 3]


async def test_after_response_task_of_a_starlette_streaming_response() -> None:
    # Under ASGI spec < 2.4 (Hypercorn says 2.1) Starlette streams while it listens for
    # http.disconnect, and cancels the stream once that comes: Hypercorn sends it as soon as the
    # final body is written, so the final send is cancelled after the body went out.
    managers: list[TaskManager] = []
    events: list[str] = []

    async def record(what: str) -> None:
        events.append(what)

    async def chunks() -> AsyncIterator[bytes]:
        for chunk in (b"a", b"b", b"c"):
            events.append(f"chunk {chunk.decode()}")
            yield chunk

    @with_tasks(route_task(record, "after response"))
    async def stream(request: Request) -> StreamingResponse:
        managers.append(request_tasks(request))
        return StreamingResponse(chunks(), media_type="text/plain")

    app = TaskMiddleware(Starlette(routes=[Route("/stream", stream)]))
    async with serve_app(app) as server:
        response = await server.client.get("/stream")
        with trio.fail_after(2):
            await managers[-1].wait_idle()

    assert response.text == "abc"
    assert events == ["chunk a", "chunk b", "chunk c", "after response"]
    assert managers[0].statistics().succeeded == 1
