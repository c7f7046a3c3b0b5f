"""TaskMiddleware under a real Hypercorn: when request tasks start, and what never delays them.

Every test serves its app with Hypercorn's trio worker on 127.0.0.1 and talks to it over real
sockets (httpx, or a raw trio stream where the client must misbehave). The exact times of the
same points, with a scripted server and a mock clock, are in test_asgi_timing_scripted.py.
"""

from __future__ import annotations

from typing import Any

import trio
import trio.testing

from tests.asgi_server import HEADER_END, get_request, read_until, respond
from tests.conftest import http_only, settle
from trio_bg import TaskHandle, TaskState, Timing
from trio_bg.asgi import TaskMiddleware, request_tasks
from trio_bg.testing import serve_app

SUCCEEDED = TaskState.SUCCEEDED


async def test_each_timing_starts_at_its_point() -> None:
    events: list[tuple[str, float]] = []
    handles: list[TaskHandle[Any]] = []
    immediate_started = trio.Event()

    def mark(what: str) -> None:
        events.append((what, trio.current_time()))

    async def immediate() -> None:
        mark("immediate task")
        immediate_started.set()

    async def deferred(what: str) -> None:
        mark(what)

    async def log_event(kind: str, *, order_id: int) -> None:
        mark(f"add_task {kind} {order_id}")

    async def handler(scope: Any, receive: Any, send: Any) -> None:
        http_only(scope)
        tasks = request_tasks(scope)
        handles.append(tasks.start_soon_named("audit", immediate))
        handles.append(tasks.after_route.start_soon_named("cache", deferred, "after_route task"))
        handles.append(
            tasks.after_response.start_soon_named("email", deferred, "after_response task")
        )
        handles.append(tasks.add_task(log_event, "created", order_id=7))
        with trio.fail_after(2):
            await immediate_started.wait()
        await settle()  # every chance for a deferred task to start early (it must not)
        mark("handler sends http.response.start")
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await settle()
        mark("handler sends final body")
        await send({"type": "http.response.body", "body": b"done"})
        mark("handler: final body sent")
        await settle()
        mark("handler returns")

    async with serve_app(TaskMiddleware(handler)) as server:
        response = await server.client.get("/orders")
        assert response.status_code == 200
        assert response.text == "done"
        with trio.fail_after(2):
            for handle in handles:
                await handle.wait()

    order = [what for what, _ in events]
    assert order[:5] == [
        "immediate task",
        "handler sends http.response.start",
        "after_route task",
        "handler sends final body",
        "handler: final body sent",
    ]
    # The two after_response tasks start together; trio picks their order.
    assert sorted(order[5:7]) == ["add_task created 7", "after_response task"]
    assert order[7:] == ["handler returns"]
    assert [h.timing for h in handles] == [
        Timing.IMMEDIATE,
        Timing.AFTER_ROUTE,
        Timing.AFTER_RESPONSE,
        Timing.AFTER_RESPONSE,  # add_task is Starlette-style: after the response
    ]
    assert [h.state for h in handles] == [SUCCEEDED] * 4
    # add_task names the task after the function (its qualified name).
    assert [h.name for h in handles] == ["audit", "cache", "email", log_event.__qualname__]


async def test_slow_after_response_task_delays_neither_response_nor_next_request() -> None:
    # The task runs until the test releases it, after both responses: were either response
    # waiting for it, the request would hang into the fail_after.
    release = trio.Event()
    handles: list[TaskHandle[str]] = []
    peers: list[tuple[str, int]] = []

    async def slow_email() -> str:
        await release.wait()
        return "sent"

    async def handler(scope: Any, receive: Any, send: Any) -> None:
        http_only(scope)
        peers.append(tuple(scope["client"]))
        if scope["path"] == "/slow":
            tasks = request_tasks(scope)
            handles.append(tasks.after_response.start_soon_named("slow-email", slow_email))
        await respond(send, scope["path"].encode())

    async with serve_app(TaskMiddleware(handler)) as server:
        with trio.fail_after(2):
            first = await server.client.get("/slow")
            second = await server.client.get("/next")
        [email] = handles
        assert email.state is TaskState.RUNNING  # started after the response, still going
        release.set()
        with trio.fail_after(2):
            assert await email.get() == "sent"

    assert (first.status_code, first.text) == (200, "/slow")
    assert (second.status_code, second.text) == (200, "/next")
    assert peers[0] == peers[1], "both requests must use the same keep-alive connection"


async def test_client_gone_after_headers_cancels_no_request_task() -> None:
    disconnected = trio.Event()
    handles: list[TaskHandle[Any]] = []
    final_send_error: list[BaseException] = []

    async def outlives_client() -> str:
        await disconnected.wait()
        await trio.sleep(0.05)  # well past the disconnect
        return "immediate done"

    async def after_response() -> str:
        assert disconnected.is_set()
        await trio.sleep(0.05)
        return "after_response done"

    async def handler(scope: Any, receive: Any, send: Any) -> None:
        http_only(scope)
        tasks = request_tasks(scope)
        handles.append(tasks.start_soon_named("immediate", outlives_client))
        handles.append(tasks.after_response.start_soon_named("after-response", after_response))
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"first part", "more_body": True})
        with trio.fail_after(2):
            while (await receive())["type"] != "http.disconnect":
                pass
        disconnected.set()
        try:
            await send({"type": "http.response.body", "body": b"last part"})
        except Exception as exc:  # the server may refuse a send to a gone client
            final_send_error.append(exc)

    async with serve_app(TaskMiddleware(handler)) as server:
        stream = await trio.open_tcp_stream(server.host, server.port)
        async with stream:
            await stream.send_all(get_request("/gone", server.host, server.port))
            head = await read_until(stream, HEADER_END)
        assert head.startswith(b"HTTP/1.1 200 ")
        with trio.fail_after(2):
            for handle in handles:
                await handle.wait()

    assert [h.state for h in handles] == [SUCCEEDED, SUCCEEDED]
    assert [await h.get() for h in handles] == ["immediate done", "after_response done"]
    assert final_send_error == []
