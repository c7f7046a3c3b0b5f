"""TaskMiddleware driven directly by a scripted server: when request tasks start, to the tick.

No sockets and no Hypercorn: each test calls the middleware with its own ``receive`` and
``send`` (plain async functions for a request, memory channels for the lifespan) under
pytest-trio's ``autojump_clock``, so every time below is exact. The scripted server notes the
state of the tasks it watches at the moment each message reaches it: that is how "before it
reaches the server" is seen. test_asgi_timing.py and test_asgi_lifespan.py check the same
points against a real Hypercorn.
"""

from __future__ import annotations

import logging
import math
from collections.abc import MutableMapping
from typing import Any

import pytest
import trio
import trio.testing

from tests.conftest import trio_bg_records
from trio_bg import TaskCancelled, TaskHandle, TaskManager, TaskState, Timing
from trio_bg.asgi import APP_TASKS_KEY, TaskMiddleware, app_tasks, request_tasks

Message = MutableMapping[str, Any]
Scope = MutableMapping[str, Any]

PENDING = TaskState.PENDING
RUNNING = TaskState.RUNNING
SUCCEEDED = TaskState.SUCCEEDED
CANCELLED = TaskState.CANCELLED


class Timeline:
    """What happened and at which (virtual) time; tasks, handlers and the server mark it."""

    def __init__(self) -> None:
        self.events: list[tuple[float, str]] = []

    def mark(self, what: str) -> None:
        self.events.append((trio.current_time(), what))

    def at(self, what: str) -> float:
        """The time of the one event ``what``."""
        [when] = [when for when, event in self.events if event == what]
        return when

    def happened(self, what: str) -> bool:
        return any(event == what for _, event in self.events)

    async def work(self, what: str, seconds: float = 0) -> str:
        """A task: marks ``<what> started``, works ``seconds``, marks ``<what> done`` (or
        ``<what> cancelled`` if it is cancelled first)."""
        self.mark(f"{what} started")
        try:
            await trio.sleep(seconds)
        except trio.Cancelled:
            self.mark(f"{what} cancelled")
            raise
        self.mark(f"{what} done")
        return what


class ScriptedServer:
    """The server's side of one http request.

    ``receive`` gives a request without a body, then waits (the client stays connected).
    ``send`` marks ``server got <message>`` on the timeline, notes the state of every handle in
    ``watched`` at that moment, and takes ``final_body_seconds`` to send the final body (a slow
    client), marking ``server sent final body`` when it returns.
    """

    def __init__(self, timeline: Timeline, *, final_body_seconds: float = 0) -> None:
        self.timeline = timeline
        self.final_body_seconds = final_body_seconds
        self.watched: dict[str, TaskHandle[Any]] = {}
        self.seen: dict[str, dict[str, TaskState]] = {}
        self.messages: list[Message] = []
        self._request_given = False

    async def receive(self) -> Message:
        if self._request_given:
            await trio.sleep_forever()
        self._request_given = True
        return {"type": "http.request", "body": b"", "more_body": False}

    def note(self, label: str) -> None:
        """Note the state of every watched handle now, as ``seen[label]``."""
        self.seen[label] = {name: handle.state for name, handle in self.watched.items()}

    async def send(self, message: Message) -> None:
        label = describe(message)
        self.note(label)
        self.messages.append(message)
        self.timeline.mark(f"server got {label}")
        if label == "final body":
            await trio.sleep(self.final_body_seconds)
            self.timeline.mark("server sent final body")


def describe(message: Message) -> str:
    if message["type"] == "http.response.start":
        return f"start {message['status']}"
    if message["type"] == "http.response.body":
        return "body part" if message.get("more_body", False) else "final body"
    return str(message["type"])


def http_scope(path: str = "/orders") -> Scope:
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "query_string": b"",
        "headers": [],
    }


START_200: Message = {"type": "http.response.start", "status": 200, "headers": []}
FINAL_BODY: Message = {"type": "http.response.body", "body": b"done"}


# -- requests ---------------------------------------------------------------------------------


async def test_immediate_tasks_start_while_the_handler_runs(
    autojump_clock: trio.testing.MockClock,
) -> None:
    timeline = Timeline()
    server = ScriptedServer(timeline)

    async def handler(scope: Scope, receive: Any, send: Any) -> None:
        tasks = request_tasks(scope)
        server.watched["audit"] = tasks.start_soon_named("audit", timeline.work, "audit", 0.5)
        await trio.sleep(1)
        await send(START_200)
        await send(FINAL_BODY)

    await TaskMiddleware(handler)(http_scope(), server.receive, server.send)

    audit = server.watched["audit"]
    assert audit.timing is Timing.IMMEDIATE
    assert timeline.events == [
        (0, "audit started"),
        (0.5, "audit done"),
        (1, "server got start 200"),
        (1, "server got final body"),
        (1, "server sent final body"),
    ]
    assert server.seen["start 200"] == {"audit": SUCCEEDED}
    assert trio.current_time() == 1


async def test_after_route_tasks_start_at_the_response_start_before_the_server_gets_it(
    autojump_clock: trio.testing.MockClock,
) -> None:
    timeline = Timeline()
    server = ScriptedServer(timeline)

    async def handler(scope: Scope, receive: Any, send: Any) -> None:
        tasks = request_tasks(scope)
        server.watched["cache"] = tasks.after_route.start_soon_named(
            "cache", timeline.work, "cache", 0.25
        )
        server.watched["email"] = tasks.after_response.start_soon_named(
            "email", timeline.work, "email"
        )
        await trio.sleep(1)  # every chance to start early: none is taken
        server.note("handler before start")
        await send(START_200)
        await trio.sleep(1)
        await send(FINAL_BODY)

    await TaskMiddleware(handler)(http_scope(), server.receive, server.send)

    assert server.seen == {
        "handler before start": {"cache": PENDING, "email": PENDING},
        "start 200": {"cache": RUNNING, "email": PENDING},  # started, then handed to the server
        "final body": {"cache": SUCCEEDED, "email": PENDING},
    }
    assert timeline.at("server got start 200") == 1
    assert timeline.at("cache started") == 1
    assert timeline.at("cache done") == 1.25
    assert timeline.at("email started") == 2
    assert server.watched["cache"].timing is Timing.AFTER_ROUTE


async def test_after_response_tasks_start_once_the_final_body_send_returned(
    autojump_clock: trio.testing.MockClock,
) -> None:
    timeline = Timeline()
    server = ScriptedServer(timeline)

    async def handler(scope: Scope, receive: Any, send: Any) -> None:
        server.watched["email"] = request_tasks(scope).after_response.start_soon_named(
            "email", timeline.work, "email"
        )
        await send(START_200)
        await send({"type": "http.response.body", "body": b"part", "more_body": True})
        await trio.sleep(1)
        await send(FINAL_BODY)
        timeline.mark("handler: final body sent")

    await TaskMiddleware(handler)(http_scope(), server.receive, server.send)

    assert server.seen == {
        "start 200": {"email": PENDING},
        "body part": {"email": PENDING},  # more_body: not the final body
        "final body": {"email": PENDING},  # being sent: not yet
    }
    assert timeline.at("server got final body") == 1
    assert timeline.at("email started") == 1
    assert server.watched["email"].state is SUCCEEDED
    assert [describe(m) for m in server.messages] == ["start 200", "body part", "final body"]


async def test_a_slow_final_send_delays_the_after_response_tasks_by_exactly_its_time(
    autojump_clock: trio.testing.MockClock,
) -> None:
    timeline = Timeline()
    server = ScriptedServer(timeline, final_body_seconds=2.5)

    async def handler(scope: Scope, receive: Any, send: Any) -> None:
        tasks = request_tasks(scope)
        server.watched["cache"] = tasks.after_route.start_soon_named(
            "cache", timeline.work, "cache"
        )
        server.watched["email"] = tasks.after_response.start_soon_named(
            "email", timeline.work, "email"
        )
        await trio.sleep(1)
        await send(START_200)
        await send(FINAL_BODY)
        timeline.mark("handler: final body sent")

    await TaskMiddleware(handler)(http_scope(), server.receive, server.send)

    assert timeline.at("cache started") == 1
    assert timeline.at("server got final body") == 1
    assert timeline.at("server sent final body") == 3.5
    assert timeline.at("handler: final body sent") == 3.5
    assert timeline.at("email started") == 3.5
    assert trio.current_time() == 3.5


async def test_a_handler_that_raises_gets_a_500_and_its_deferred_tasks_end_cancelled(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    timeline = Timeline()
    server = ScriptedServer(timeline)
    handles: dict[str, TaskHandle[str]] = {}

    async def handler(scope: Scope, receive: Any, send: Any) -> None:
        tasks = request_tasks(scope)
        handles["cache"] = tasks.after_route.start_soon_named("cache", timeline.work, "cache")
        handles["email"] = tasks.after_response.start_soon_named("email", timeline.work, "email")
        handles["route audit"] = tasks.after_route.start_soon_named(
            "route-audit", timeline.work, "route audit", always=True
        )
        handles["audit"] = tasks.after_response.start_soon_named(
            "audit", timeline.work, "audit", 1, always=True
        )
        await trio.sleep(1)
        raise ValueError("handler broke")

    with pytest.raises(ValueError, match=r"^handler broke$"):
        await TaskMiddleware(handler)(http_scope(), server.receive, server.send)

    assert [(m["type"], m.get("status"), m.get("body")) for m in server.messages] == [
        ("http.response.start", 500, None),
        ("http.response.body", None, b"Internal Server Error"),
    ]
    assert timeline.at("server got start 500") == 1
    # The always=True tasks ran from the moment the handler failed; the call waited for them.
    assert timeline.at("route audit started") == 1
    assert timeline.at("audit started") == 1
    assert timeline.at("audit done") == 2
    assert trio.current_time() == 2
    assert not timeline.happened("cache started")
    assert not timeline.happened("email started")
    assert {name: h.state for name, h in handles.items()} == {
        "cache": CANCELLED,
        "email": CANCELLED,
        "route audit": SUCCEEDED,
        "audit": SUCCEEDED,
    }
    with pytest.raises(TaskCancelled, match=rf"^task 'email' \({handles['email'].id}\) was"):
        await handles["email"].get()
    [warning] = trio_bg_records(caplog, logging.WARNING)
    assert warning.getMessage() == (
        "GET: 2 deferred task(s) not run, the response was not completed: "
        f"'cache' ({handles['cache'].id}), 'email' ({handles['email'].id})"
    )


async def test_a_handler_that_raises_after_the_response_start_keeps_its_after_route_tasks(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    timeline = Timeline()
    server = ScriptedServer(timeline)

    async def handler(scope: Scope, receive: Any, send: Any) -> None:
        tasks = request_tasks(scope)
        server.watched["cache"] = tasks.after_route.start_soon_named(
            "cache", timeline.work, "cache"
        )
        server.watched["email"] = tasks.after_response.start_soon_named(
            "email", timeline.work, "email"
        )
        await send(START_200)
        await trio.sleep(1)
        raise ValueError("broke mid-response")

    with pytest.raises(ValueError, match=r"^broke mid-response$"):
        await TaskMiddleware(handler)(http_scope(), server.receive, server.send)

    # No second start: the server already has a 200 and must end the response itself.
    assert [describe(m) for m in server.messages] == ["start 200"]
    assert timeline.at("cache started") == 0
    assert not timeline.happened("email started")
    assert server.watched["cache"].state is SUCCEEDED
    assert server.watched["email"].state is CANCELLED
    [warning] = trio_bg_records(caplog, logging.WARNING)
    assert warning.getMessage().endswith(f"'email' ({server.watched['email'].id})")


async def test_the_request_call_returns_only_when_its_tasks_are_done(
    autojump_clock: trio.testing.MockClock,
) -> None:
    timeline = Timeline()
    server = ScriptedServer(timeline)

    async def handler(scope: Scope, receive: Any, send: Any) -> None:
        tasks = request_tasks(scope)
        server.watched["audit"] = tasks.start_soon_named("audit", timeline.work, "audit", 3)
        server.watched["email"] = tasks.after_response.start_soon_named(
            "email", timeline.work, "email", 5
        )
        await trio.sleep(1)
        await send(START_200)
        await send(FINAL_BODY)
        timeline.mark("handler returns")

    await TaskMiddleware(handler)(http_scope(), server.receive, server.send)

    # The response was complete at 1; the call returned when the email was done, at 1 + 5.
    assert timeline.at("server sent final body") == 1
    assert timeline.at("handler returns") == 1
    assert timeline.at("audit done") == 3
    assert timeline.at("email done") == 6
    assert trio.current_time() == 6
    assert {name: h.state for name, h in server.watched.items()} == {
        "audit": SUCCEEDED,
        "email": SUCCEEDED,
    }


async def test_add_task_runs_after_the_response_with_its_keyword_arguments(
    autojump_clock: trio.testing.MockClock,
) -> None:
    timeline = Timeline()
    server = ScriptedServer(timeline, final_body_seconds=0.5)

    async def handler(scope: Scope, receive: Any, send: Any) -> None:
        server.watched["log"] = request_tasks(scope).add_task(timeline.work, "log", seconds=2)
        await trio.sleep(1)
        await send(START_200)
        await send(FINAL_BODY)

    await TaskMiddleware(handler)(http_scope(), server.receive, server.send)

    log = server.watched["log"]
    assert log.timing is Timing.AFTER_RESPONSE
    assert log.name == "Timeline.work"
    assert server.seen["start 200"] == {"log": PENDING}
    assert server.seen["final body"] == {"log": PENDING}
    assert timeline.at("log started") == 1.5  # once the final send returned
    assert timeline.at("log done") == 3.5  # seconds=2 reached the function
    assert await log.get() == "log"


# -- the lifespan -----------------------------------------------------------------------------


class ScriptedLifespan:
    """The server's side of the lifespan, over two memory channels: the app is called with
    ``receive`` and ``send``; ``say`` hands it one message and returns its reply."""

    def __init__(self) -> None:
        self._to_app, self._app_inbox = trio.open_memory_channel[Message](math.inf)
        self._app_outbox, self._from_app = trio.open_memory_channel[Message](math.inf)

    async def receive(self) -> Message:
        return await self._app_inbox.receive()

    async def send(self, message: Message) -> None:
        await self._app_outbox.send(message)

    async def say(self, message_type: str) -> Message:
        await self._to_app.send({"type": message_type})
        return await self._from_app.receive()


async def test_the_lifespan_opens_the_app_manager_and_closes_it_with_the_exact_grace(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    timeline = Timeline()
    inner_saw: dict[str, Any] = {}
    handles: dict[str, TaskHandle[Any]] = {}

    async def inner(scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            handles["reindex"] = app_tasks(scope).start_soon_named(
                "reindex", timeline.work, "reindex", 100
            )
            await send(START_200)
            await send(FINAL_BODY)
            return
        while True:
            message = await receive()
            timeline.mark(f"inner app got {message['type']}")
            manager = scope["state"][APP_TASKS_KEY]
            inner_saw[message["type"]] = (manager, manager.closed)
            await send({"type": f"{message['type']}.complete"})
            if message["type"] == "lifespan.shutdown":
                return

    middleware = TaskMiddleware(inner, grace_period=2, shield_timeout=5)
    lifespan = ScriptedLifespan()
    scope: Scope = {"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}
    assert middleware.app_manager is None
    async with trio.open_nursery() as nursery:
        nursery.start_soon(middleware, scope, lifespan.receive, lifespan.send)

        assert await lifespan.say("lifespan.startup") == {"type": "lifespan.startup.complete"}
        manager = middleware.app_manager
        assert isinstance(manager, TaskManager)
        assert app_tasks(scope) is manager
        assert inner_saw["lifespan.startup"] == (manager, False)  # open before the app's startup
        handles["quick"] = manager.start_soon_named("quick", timeline.work, "quick", 3)
        handles["stuck"] = manager.start_soon_named("stuck", timeline.work, "stuck", 100)
        handles["finishes"] = manager.start_soon_named(
            "finishes", timeline.work, "finishes", 6, shield=True
        )
        handles["shielded"] = manager.start_soon_named(
            "shielded", timeline.work, "shielded", 100, shield=True
        )

        await trio.sleep(1)  # a request, through the same middleware, starts an app task
        server = ScriptedServer(timeline)
        await middleware(http_scope(), server.receive, server.send)
        assert trio.current_time() == 1  # an app task does not hold the request
        assert handles["reindex"] in manager.active_tasks

        await trio.sleep(1)  # shut down at t=2
        assert await lifespan.say("lifespan.shutdown") == {"type": "lifespan.shutdown.complete"}
        # unshielded tasks: until 2 + grace_period; shielded ones: until 2 + shield_timeout
        assert trio.current_time() == 7

    assert timeline.at("inner app got lifespan.shutdown") == 7
    assert inner_saw["lifespan.shutdown"] == (manager, True)  # closed before the app's shutdown
    assert middleware.app_manager is None
    assert {name: h.state for name, h in handles.items()} == {
        "reindex": CANCELLED,
        "quick": SUCCEEDED,
        "stuck": CANCELLED,
        "finishes": SUCCEEDED,
        "shielded": CANCELLED,
    }
    assert timeline.at("quick done") == 3
    assert timeline.at("stuck cancelled") == 4  # 2 + grace_period
    assert timeline.at("reindex cancelled") == 4
    assert timeline.at("finishes done") == 6
    assert timeline.at("shielded cancelled") == 7  # 2 + shield_timeout
    report = manager.shutdown_report
    assert report is not None
    assert report.duration == 5
    assert report.cancelled == (handles["stuck"], handles["shielded"], handles["reindex"])
    [warning] = trio_bg_records(caplog, logging.WARNING)
    assert warning.getMessage() == str(report)


async def test_an_inner_app_without_lifespan_support_still_gets_an_app_manager(
    autojump_clock: trio.testing.MockClock,
) -> None:
    timeline = Timeline()

    async def inner(scope: Scope, receive: Any, send: Any) -> None:
        raise RuntimeError("no lifespan support")

    middleware = TaskMiddleware(inner, grace_period=10)
    lifespan = ScriptedLifespan()
    scope: Scope = {"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}
    async with trio.open_nursery() as nursery:
        nursery.start_soon(middleware, scope, lifespan.receive, lifespan.send)
        assert await lifespan.say("lifespan.startup") == {"type": "lifespan.startup.complete"}
        manager = app_tasks(scope)
        handle = manager.start_soon_named("warm-up", timeline.work, "warm-up", 4)
        await trio.sleep(1)
        assert await lifespan.say("lifespan.shutdown") == {"type": "lifespan.shutdown.complete"}
        assert trio.current_time() == 4  # the close waited for the task, within the grace

    assert handle.state is SUCCEEDED
    assert manager.closed
    assert manager.shutdown_report is not None
    assert manager.shutdown_report.cancelled == ()
