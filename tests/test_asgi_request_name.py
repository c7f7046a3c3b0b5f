"""Requests you can tell apart: ``TaskMiddleware(request_name=...)`` names the requests a
framework leaves unrouted (raw ASGI, Quart), never by the raw path, and whatever the callable
does (raise, return no str, return hostile text) the request is still served and named safely.
Under a real Hypercorn with a real httpx client."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import pytest
import trio
from quart import request
from quart_trio import QuartTrio

from trio_bg.asgi import TaskMiddleware, request_tasks
from trio_bg.asgi._types import Receive, Scope, Send
from trio_bg.testing import serve_app

Namer = Callable[[Scope], Any]


def _recording_app(names: list[str]) -> Callable[[Scope, Receive, Send], Any]:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        tasks = request_tasks(scope)
        tasks.start_soon_named("audit", trio.lowlevel.checkpoint)
        names.append(tasks.name)  # named at the first start
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    return app


def _orders(scope: Scope) -> str | None:
    return "/orders/{id}" if scope["path"].startswith("/orders/") else None


def _raises(scope: Scope) -> str | None:
    raise LookupError("no name")


def _not_str(scope: Scope) -> Any:
    return 42


@pytest.mark.parametrize(
    ("namer", "path", "expected"),
    [
        (None, "/orders/1234", "GET"),
        (_orders, "/orders/1234", "GET /orders/{id}"),
        (_orders, "/other", "GET"),
        (lambda scope: "", "/x", "GET"),
        (lambda scope: "/\udcff", "/x", "GET /\\udcff"),
        (lambda scope: "/" + "x" * 5000, "/x", "GET /" + "x" * 198 + "\u2026"),
    ],
    ids=["none", "named", "none-for-path", "empty", "surrogate", "huge"],
)
async def test_request_name_names_unrouted_requests(
    namer: Namer | None, path: str, expected: str
) -> None:
    names: list[str] = []
    async with serve_app(TaskMiddleware(_recording_app(names), request_name=namer)) as served:
        response = await served.client.get(path)
        await served.wait_idle()
    assert response.status_code == 200
    assert names == [expected]
    assert "1234" not in names[0]  # never the raw path


@pytest.mark.parametrize(
    ("namer", "message"),
    [
        (_raises, "request_name raised; requests are named by their method"),
        (
            _not_str,
            "request_name returned int, not a str or None; requests are named by their method",
        ),
    ],
)
async def test_a_bad_request_name_is_logged_once_and_the_method_names_the_request(
    namer: Namer, message: str, caplog: pytest.LogCaptureFixture
) -> None:
    names: list[str] = []
    caplog.set_level(logging.WARNING, logger="trio_bg")
    async with serve_app(TaskMiddleware(_recording_app(names), request_name=namer)) as served:
        for _ in range(3):
            assert (await served.client.get("/orders/1")).status_code == 200
        await served.wait_idle()
    assert names == ["GET"] * 3
    assert [r.getMessage() for r in caplog.records if r.name == "trio_bg"] == [message]


def test_request_name_must_be_callable() -> None:
    with pytest.raises(
        TypeError, match=r"^request_name must be a callable \(scope\) -> str \| None, got str$"
    ):
        TaskMiddleware(_recording_app([]), request_name="/orders")  # type: ignore[arg-type]


async def test_quart_requests_are_named_by_their_url_rule() -> None:
    names: list[str] = []
    quart = QuartTrio(__name__)

    @quart.route("/orders/<order_id>", methods=["POST"])
    async def create_order(order_id: str) -> str:
        tasks = request_tasks(request.scope)
        tasks.start_soon_named("audit", trio.lowlevel.checkpoint)
        names.append(tasks.name)
        return "ok"

    def url_rule(scope: Scope) -> str | None:
        # Called inside the handler's first start, where Quart's request context is active.
        rule = request.url_rule
        return None if rule is None else rule.rule

    async with serve_app(TaskMiddleware(quart, request_name=url_rule)) as served:
        response = await served.client.post("/orders/secret-42")
        await served.wait_idle()
    assert response.status_code == 200
    assert names == ["POST /orders/<order_id>"]


def test_quarts_request_proxy_instead_of_its_scope_is_named_by_what_it_stands_for() -> None:
    quart = QuartTrio(__name__)

    async def check() -> None:
        async with quart.test_request_context("/"):
            with pytest.raises(TypeError, match=r"got TrioRequest$"):
                request_tasks(request)  # type: ignore[arg-type]

    trio.run(check)
