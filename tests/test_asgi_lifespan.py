"""TaskMiddleware under a real Hypercorn: the lifespan, the app manager, finding the managers."""

from __future__ import annotations

import logging
import re
from typing import Any

import pytest
import trio

from tests.asgi_server import HEADER_END, get_request, read_until, respond
from tests.conftest import http_only
from trio_bg import TaskHandle, TaskManager, TaskState
from trio_bg.asgi import APP_TASKS_KEY, TaskMiddleware, app_tasks, request_tasks
from trio_bg.testing import serve_app

WRAP_REQUEST = (
    r"request_tasks\(\) found no task manager in this scope: "
    r"wrap the ASGI app in trio_bg\.asgi\.TaskMiddleware"
)
WRAP_APP = (
    r"app_tasks\(\) found no task manager in this scope: "
    r"wrap the ASGI app in trio_bg\.asgi\.TaskMiddleware"
)
HTTP_ONLY = (
    r"request_tasks\(\) needs an http scope, got 'websocket': "
    r"use app_tasks\(scope\) for tasks that outlive this connection"
)
WEBSOCKET_UPGRADE = (
    "Upgrade: websocket\r\nConnection: Upgrade\r\n"
    "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
)


# -- finding the managers -----------------------------------------------------------------


async def test_lookups_without_the_middleware_say_to_wrap_the_app() -> None:
    errors: dict[str, BaseException] = {}

    async def bare(scope: Any, receive: Any, send: Any) -> None:
        http_only(scope)
        for name, lookup in (("request", request_tasks), ("app", app_tasks)):
            try:
                lookup(scope)
            except Exception as exc:
                errors[name] = exc
        await respond(send, b"served")

    async with serve_app(bare) as server:  # no TaskMiddleware
        response = await server.client.get("/")

    assert response.text == "served"
    assert type(errors["request"]) is RuntimeError
    assert re.fullmatch(WRAP_REQUEST, str(errors["request"]))
    assert type(errors["app"]) is RuntimeError
    assert re.fullmatch(WRAP_APP, str(errors["app"]))


def test_request_tasks_on_a_websocket_scope_dict_names_the_http_scope() -> None:
    with pytest.raises(RuntimeError, match=f"^{HTTP_ONLY}$"):
        request_tasks({"type": "websocket", "path": "/ws"})


async def test_websocket_gets_app_tasks_but_no_request_tasks() -> None:
    seen: dict[str, Any] = {}
    done = trio.Event()

    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "websocket":
            raise RuntimeError("no lifespan support")
        try:
            request_tasks(scope)
        except RuntimeError as exc:
            seen["request_tasks"] = exc
        seen["app_tasks"] = app_tasks(scope)
        assert (await receive())["type"] == "websocket.connect"
        await send({"type": "websocket.accept"})
        await send({"type": "websocket.close", "code": 1000})
        done.set()

    middleware = TaskMiddleware(app)
    async with serve_app(middleware) as server:
        app_manager = middleware.app_manager
        stream = await trio.open_tcp_stream(server.host, server.port)
        async with stream:
            request = get_request("/ws", server.host, server.port, extra=WEBSOCKET_UPGRADE)
            await stream.send_all(request)
            head = await read_until(stream, HEADER_END)
            with trio.fail_after(2):
                await done.wait()

    assert head.startswith(b"HTTP/1.1 101 ")
    assert re.fullmatch(HTTP_ONLY, str(seen["request_tasks"]))
    assert isinstance(app_manager, TaskManager)
    assert seen["app_tasks"] is app_manager


# -- the lifespan ------------------------------------------------------------------------


async def test_lifespan_is_forwarded_and_the_app_manager_is_in_the_state() -> None:
    lifecycle: list[str] = []
    seen: dict[str, Any] = {}

    async def warm_cache() -> str:
        return "warm"

    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    lifecycle.append("startup")
                    seen["state"] = scope["state"][APP_TASKS_KEY]
                    seen["warm"] = app_tasks(scope).start_soon_named("warm-cache", warm_cache)
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    lifecycle.append("shutdown")
                    # The app manager is closed before the inner app's own shutdown.
                    seen["closed_at_shutdown"] = seen["state"].closed
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        else:
            seen["http"] = app_tasks(scope)
            await respond(send, (await seen["warm"].get()).encode())

    middleware = TaskMiddleware(app)
    async with serve_app(middleware) as server:
        running_manager = middleware.app_manager
        response = await server.client.get("/")
        assert lifecycle == ["startup"]

    assert lifecycle == ["startup", "shutdown"]
    assert response.text == "warm"
    assert isinstance(running_manager, TaskManager)
    assert seen["state"] is running_manager
    assert seen["http"] is running_manager
    assert seen["closed_at_shutdown"] is True
    assert middleware.app_manager is None
    assert running_manager.closed


async def test_inner_app_without_lifespan_still_serves_with_app_tasks() -> None:
    lifespan_calls: list[str] = []

    async def reindex(n: int) -> int:
        await trio.lowlevel.checkpoint()
        return n * 2

    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            lifespan_calls.append(scope["type"])
            raise RuntimeError("this app does not speak lifespan")
        value = await app_tasks(scope).start_soon_named("reindex", reindex, 21).get()
        await respond(send, str(value).encode())

    async with serve_app(TaskMiddleware(app)) as server:
        first = await server.client.get("/")
        second = await server.client.get("/")

    assert lifespan_calls == ["lifespan"]
    assert [(r.status_code, r.text) for r in (first, second)] == [(200, "42"), (200, "42")]


async def test_shutdown_gives_app_tasks_the_grace_period_then_names_the_cancelled(
    caplog: pytest.LogCaptureFixture,
) -> None:
    handles: dict[str, TaskHandle[Any]] = {}
    quick_finished: list[float] = []

    async def quick() -> None:
        await trio.sleep(0.2)
        quick_finished.append(trio.current_time())

    async def app(scope: Any, receive: Any, send: Any) -> None:
        http_only(scope)
        tasks = app_tasks(scope)
        handles["quick"] = tasks.start_soon_named("quick", quick)
        handles["stuck"] = tasks.start_soon_named("stuck", trio.sleep_forever)
        await respond(send, b"started")

    middleware = TaskMiddleware(app, grace_period=0.5, shield_timeout=1.0)
    async with serve_app(middleware) as server:
        manager = middleware.app_manager
        assert manager is not None
        response = await server.client.get("/")
        shutdown_triggered = trio.current_time()
    shutdown_done = trio.current_time()

    assert response.text == "started"
    assert handles["quick"].state is TaskState.SUCCEEDED
    assert quick_finished[0] > shutdown_triggered  # it was still running when shutdown began
    assert handles["stuck"].state is TaskState.CANCELLED
    report = manager.shutdown_report
    assert report is not None
    assert report.cancelled == (handles["stuck"],)
    assert 0.5 <= report.duration < 1.0
    assert shutdown_done - shutdown_triggered < 1.5
    [warning] = [r for r in caplog.records if r.name == "trio_bg" and r.levelno == logging.WARNING]
    message = warning.getMessage()
    assert f"'stuck' ({handles['stuck'].id})" in message
    assert "1 task(s) cancelled by the shutdown" in message
    assert "quick" not in message


async def test_server_shutdown_cancels_request_tasks_after_graceful_timeout_shielded_later(
    caplog: pytest.LogCaptureFixture,
) -> None:
    handles: dict[str, TaskHandle[Any]] = {}
    ended: dict[str, float] = {}

    async def forever(name: str) -> None:
        try:
            await trio.sleep_forever()
        finally:
            ended[name] = trio.current_time()

    async def finishes_under_shield() -> str:
        await trio.sleep(0.6)  # past the request's cancellation, within the shield cap
        ended["short"] = trio.current_time()
        return "finished"

    async def app(scope: Any, receive: Any, send: Any) -> None:
        http_only(scope)
        tasks = request_tasks(scope)
        handles["plain"] = tasks.start_soon_named("plain", forever, "plain")
        handles["shielded"] = tasks.start_soon_named("shielded", forever, "shielded", shield=True)
        handles["short"] = tasks.start_soon_named("short", finishes_under_shield, shield=True)
        await respond(send, b"ok")

    middleware = TaskMiddleware(app, grace_period=0.1, shield_timeout=0.8)
    async with serve_app(middleware, graceful_timeout=0.3) as server:
        response = await server.client.get("/")
        shutdown_triggered = trio.current_time()
    shutdown_done = trio.current_time()

    assert response.text == "ok"
    assert handles["plain"].state is TaskState.CANCELLED
    assert handles["shielded"].state is TaskState.CANCELLED
    assert handles["short"].state is TaskState.SUCCEEDED
    # Hypercorn cancels the request call graceful_timeout after the shutdown began; the
    # shielded task gets shield_timeout more from there.
    plain_after = ended["plain"] - shutdown_triggered
    assert 0.3 <= plain_after < 0.6
    assert 0.75 <= ended["shielded"] - ended["plain"] < 1.0
    assert ended["plain"] < ended["short"] < ended["shielded"]
    assert shutdown_done - shutdown_triggered < 1.6
    [report] = [r for r in caplog.records if r.name == "trio_bg" and r.levelno == logging.WARNING]
    message = report.getMessage()
    assert "2 task(s) cancelled by the shutdown" in message
    assert f"'plain' ({handles['plain'].id})" in message
    assert f"'shielded' ({handles['shielded'].id})" in message
