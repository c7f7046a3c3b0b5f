"""Under asyncio, every entry point of trio_bg says "trio_bg needs trio, not asyncio" before it
touches trio: a manager, the middleware's lifespan and requests, the dashboard (served alone or
not), ``serve``, the testing helpers and a durable queue; straight from ``asyncio.run`` and under
a real Hypercorn asyncio worker, whose startup then fails with that message."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, cast

import pytest

import trio_bg
from trio_bg.asgi import TaskMiddleware
from trio_bg.asgi._types import Message
from trio_bg.dashboard import Dashboard
from trio_bg.durable import DurableQueue, run_worker
from trio_bg.testing import run_lifespan, serve_app

MESSAGE = (
    "trio_bg needs trio, not asyncio: run Hypercorn with --worker-class trio "
    "(hypercorn --worker-class trio module:app), or python -m trio_bg serve module:app"
)
CORE_MESSAGE = "trio_bg needs trio, not asyncio: run it in a trio program (trio.run)"
"""What the core's own entries say: it knows no server."""


def exact(message: str) -> str:
    return "^" + re.escape(message) + "$"


async def plain_app(scope: Any, receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        while (await receive())["type"] != "lifespan.shutdown":
            await send({"type": "lifespan.startup.complete"})
        await send({"type": "lifespan.shutdown.complete"})
        return
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})


class Peer:
    """The server side of one ASGI call: what the app receives, and what it sent."""

    def __init__(self, *messages: dict[str, Any]) -> None:
        self._messages = list(messages)
        self.sent: list[Message] = []

    async def receive(self) -> Message:
        return self._messages.pop(0)

    async def send(self, message: Message) -> None:
        self.sent.append(message)


HTTP: dict[str, Any] = {
    "type": "http",
    "method": "GET",
    "path": "/",
    "headers": [],
    "query_string": b"",
}
STARTUP = {"type": "lifespan.startup"}
FAILED = {"type": "lifespan.startup.failed", "message": MESSAGE}


async def open_directly() -> None:
    async with trio_bg.open_task_manager():
        pass


async def middleware_request() -> None:
    peer = Peer({"type": "http.request", "body": b"", "more_body": False})
    try:
        await TaskMiddleware(plain_app)(dict(HTTP), peer.receive, peer.send)
    finally:
        assert peer.sent == []


async def middleware_lifespan() -> None:
    peer = Peer(STARTUP)
    try:
        await TaskMiddleware(plain_app)({"type": "lifespan", "state": {}}, peer.receive, peer.send)
    finally:
        assert peer.sent == [FAILED]


async def dashboard_request() -> None:
    peer = Peer({"type": "http.request", "body": b"", "more_body": False})
    dashboard = Dashboard(local_only=True)
    try:
        await dashboard(dict(HTTP), peer.receive, peer.send)
    finally:
        dashboard.close()
        assert peer.sent == []


async def dashboard_lifespan() -> None:
    peer = Peer(STARTUP)
    dashboard = Dashboard(local_only=True)
    try:
        await dashboard({"type": "lifespan"}, peer.receive, peer.send)
    finally:
        dashboard.close()
        assert peer.sent == [FAILED]


async def serve() -> None:
    await trio_bg.serve(plain_app, "127.0.0.1:0", handle_signals=False)


async def served_app() -> None:
    async with serve_app(plain_app):
        raise AssertionError("not reached")


async def lifespan_helper() -> None:
    async with run_lifespan(plain_app):
        raise AssertionError("not reached")


async def durable_queue() -> None:
    async with DurableQueue("redis://127.0.0.1:1"):
        raise AssertionError("not reached")


async def durable_worker() -> None:
    await run_worker(DurableQueue("redis://127.0.0.1:1"))


ENTRIES: list[tuple[Callable[[], Awaitable[None]], str]] = [
    (open_directly, CORE_MESSAGE), (middleware_request, MESSAGE), (middleware_lifespan, MESSAGE),
    (dashboard_request, MESSAGE), (dashboard_lifespan, MESSAGE), (serve, MESSAGE),
    (served_app, MESSAGE), (lifespan_helper, MESSAGE), (durable_queue, CORE_MESSAGE),
    (durable_worker, CORE_MESSAGE),
]  # fmt: skip


@pytest.mark.parametrize(("entry", "message"), ENTRIES, ids=lambda e: getattr(e, "__name__", ""))
def test_every_entry_point_under_asyncio_says_trio_bg_needs_trio(
    entry: Callable[[], Awaitable[None]], message: str
) -> None:
    with pytest.raises(RuntimeError, match=exact(message)):
        asyncio.run(entry())  # type: ignore[arg-type]


@pytest.mark.parametrize("kind", ["middleware", "dashboard"])
def test_a_hypercorn_asyncio_worker_fails_its_startup_with_the_message(kind: str) -> None:
    import hypercorn.asyncio
    from hypercorn.config import Config
    from hypercorn.utils import LifespanFailureError

    # Hypercorn's signature also admits WSGI apps, whose types are partly unknown to pyright.
    hypercorn_serve = cast(
        "Callable[..., Coroutine[Any, Any, None]]",
        hypercorn.asyncio.serve,  # pyright: ignore[reportUnknownMemberType]
    )
    config = Config()
    config.bind = ["127.0.0.1:0"]
    dashboard = Dashboard(local_only=True)
    app: Any = TaskMiddleware(plain_app) if kind == "middleware" else dashboard
    try:
        with pytest.raises(LifespanFailureError) as failure:
            # Bounded: a server that started anyway stops after 5 s, and the test fails.
            asyncio.run(hypercorn_serve(app, config, shutdown_trigger=lambda: asyncio.sleep(5)))
    finally:
        dashboard.close()
    assert str(failure.value) == f"Lifespan failure in startup. '{MESSAGE}'"
