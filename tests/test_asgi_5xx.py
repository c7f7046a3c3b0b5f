"""The 5xx rule: a response that starts with a 5xx status counts as a failed handler.

Its deferred tasks (``after_route``, ``after_response``, ``add_task``) are not run unless started
with ``always=True``: each ends CANCELLED when the handler ends, and one warning names them, by
the request's manager name (method and route template, never the raw path), with the status.
Frameworks turn a handler's exception into a 500 before re-raising it (Starlette's
``ServerErrorMiddleware``, outside TaskMiddleware) or instead of raising it (Quart), so these
tests cover every placement under a real Hypercorn, plus scripted ones to the tick.
"""

from __future__ import annotations

import logging
from http import HTTPStatus
from typing import Any

import pytest
import trio
import trio.testing
from quart import request
from quart_trio import QuartTrio
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from tests.asgi_server import respond
from tests.conftest import http_only, trio_bg_records
from tests.test_asgi_timing_scripted import FINAL_BODY, ScriptedServer, Timeline, http_scope
from trio_bg import TaskHandle, TaskState, TaskStatistics
from trio_bg.asgi import RequestTaskManager, TaskMiddleware, request_tasks
from trio_bg.testing import check_accounting, serve_app

PENDING = TaskState.PENDING
RUNNING = TaskState.RUNNING
SUCCEEDED = TaskState.SUCCEEDED
CANCELLED = TaskState.CANCELLED

SECRET_PATH = "/orders/4242-secret-token"  # a raw path a log line must never carry


async def note(ran: list[str], what: str) -> str:
    """A task: notes ``what`` in ``ran`` and returns it."""
    ran.append(what)
    await trio.lowlevel.checkpoint()
    return what


class Deferred:
    """One request's tasks: one of each start kind, and an ``always=True`` one per point."""

    def __init__(self) -> None:
        self.ran: list[str] = []
        self.handles: dict[str, TaskHandle[str]] = {}
        self.manager: RequestTaskManager | None = None

    def start(self, tasks: RequestTaskManager) -> None:
        self.manager = tasks
        ran = self.ran
        h = self.handles
        h["audit"] = tasks.start_soon_named("audit", note, ran, "audit")  # IMMEDIATE
        h["cache"] = tasks.after_route.start_soon_named("cache", note, ran, "cache")
        h["email"] = tasks.after_response.start_soon_named("email", note, ran, "email")
        h["note"] = tasks.add_task(note, ran, "note")  # after_response, named after the function
        h["route-cleanup"] = tasks.after_route.start_soon_named(
            "route-cleanup", note, ran, "route-cleanup", always=True
        )
        h["release-lock"] = tasks.after_response.start_soon_named(
            "release-lock", note, ran, "release-lock", always=True
        )

    def states(self) -> dict[str, TaskState]:
        return {name: handle.state for name, handle in self.handles.items()}

    def statistics(self) -> TaskStatistics:
        assert self.manager is not None
        stats = self.manager.statistics()
        check_accounting(stats)
        return stats

    def assert_only_always_ran(
        self, caplog: pytest.LogCaptureFixture, *, name: str, reason: str
    ) -> None:
        """The failed-request outcome: immediate and always=True tasks ran, the rest ended
        CANCELLED, named in one warning (by ``name``, for ``reason``), and nothing was logged as
        an error by trio_bg."""
        assert self.states() == {
            "audit": SUCCEEDED,
            "cache": CANCELLED,
            "email": CANCELLED,
            "note": CANCELLED,
            "route-cleanup": SUCCEEDED,
            "release-lock": SUCCEEDED,
        }
        assert sorted(self.ran) == ["audit", "release-lock", "route-cleanup"]
        assert self.statistics() == TaskStatistics(
            started=6, pending=0, running=0, succeeded=3, failed=0, cancelled=3, rejected=0
        )
        h = self.handles
        [warning] = trio_bg_records(caplog, logging.WARNING)
        assert warning.getMessage() == (
            f"{name}: 3 deferred task(s) not run, {reason}: "
            f"'cache' ({h['cache'].id}), 'email' ({h['email'].id}), 'note' ({h['note'].id})"
        )
        assert "secret" not in warning.getMessage()
        assert trio_bg_records(caplog, logging.ERROR) == []

    def assert_all_ran(self, caplog: pytest.LogCaptureFixture) -> None:
        assert set(self.states().values()) == {SUCCEEDED}
        assert sorted(self.ran) == sorted(self.handles)
        assert self.statistics() == TaskStatistics(
            started=6, pending=0, running=0, succeeded=6, failed=0, cancelled=0, rejected=0
        )
        assert [r for r in caplog.records if r.name == "trio_bg"] == []


def framework_errors(caplog: pytest.LogCaptureFixture) -> list[BaseException | None]:
    """The exceptions Hypercorn logged as raised by the app."""
    return [r.exc_info[1] for r in caplog.records if r.name == "hypercorn.error" and r.exc_info]


# -- raw ASGI ---------------------------------------------------------------------------------


@pytest.mark.parametrize("status", [500, 503])
async def test_a_raw_app_sending_a_5xx_runs_only_its_always_deferred_tasks(
    status: int, caplog: pytest.LogCaptureFixture
) -> None:
    deferred = Deferred()

    async def app(scope: Any, receive: Any, send: Any) -> None:
        http_only(scope)
        deferred.start(request_tasks(scope))
        await respond(send, b"unavailable", status=status)

    async with serve_app(TaskMiddleware(app)) as server:
        response = await server.client.get(SECRET_PATH)
        await server.wait_idle()

    assert (response.status_code, response.text) == (status, "unavailable")
    # A raw app has no route template: the request is named by its method alone.
    deferred.assert_only_always_ran(caplog, name="GET", reason=f"the response status was {status}")
    assert framework_errors(caplog) == []


async def test_a_raw_app_sending_a_4xx_runs_every_deferred_task(
    caplog: pytest.LogCaptureFixture,
) -> None:
    deferred = Deferred()

    async def app(scope: Any, receive: Any, send: Any) -> None:
        http_only(scope)
        deferred.start(request_tasks(scope))
        await respond(send, b"no such order", status=404)

    async with serve_app(TaskMiddleware(app)) as server:
        response = await server.client.get(SECRET_PATH)
        await server.wait_idle()

    assert (response.status_code, response.text) == (404, "no such order")
    deferred.assert_all_ran(caplog)


# -- Starlette --------------------------------------------------------------------------------


def starlette_app(deferred: Deferred, *, outcome: str, inside: bool) -> Any:
    """A Starlette app whose ``/orders/{order_id}`` endpoint starts ``deferred``'s tasks, then
    raises (``outcome="raise"``) or returns an explicit 500 (``outcome="500"``). TaskMiddleware
    wraps the Starlette app (``inside=False``) or sits in its middleware list."""

    async def create_order(request: Request) -> PlainTextResponse:
        deferred.start(request_tasks(request))
        if outcome == "raise":
            raise KeyError("unknown product")
        return PlainTextResponse("could not save", status_code=500)

    async def on_error(request: Request, exc: Exception) -> PlainTextResponse:
        return PlainTextResponse(f"sorry: {exc!r}", status_code=500)

    routes = [Route("/orders/{order_id}", create_order)]
    errors = {Exception: on_error}
    if inside:
        return Starlette(
            routes=routes, exception_handlers=errors, middleware=[Middleware(TaskMiddleware)]
        )
    return TaskMiddleware(Starlette(routes=routes, exception_handlers=errors))


@pytest.mark.parametrize(
    ("inside", "text", "reason"),
    [
        # ServerErrorMiddleware (inside TaskMiddleware) sends the app's own 500, then re-raises.
        (False, "sorry: KeyError('unknown product')", "the response status was 500"),
        # The exception passes through TaskMiddleware before any response exists: it answers.
        (True, "Internal Server Error", "the response was not completed"),
    ],
    ids=["outside", "inside"],
)
async def test_a_raising_starlette_endpoint_gets_a_500_and_no_deferred_tasks(
    caplog: pytest.LogCaptureFixture, inside: bool, text: str, reason: str
) -> None:
    deferred = Deferred()
    app = starlette_app(deferred, outcome="raise", inside=inside)

    async with serve_app(app) as server:
        response = await server.client.get(SECRET_PATH)
        await server.wait_idle()

    assert (response.status_code, response.text) == (500, text)
    deferred.assert_only_always_ran(caplog, name="GET /orders/{order_id}", reason=reason)
    [error] = framework_errors(caplog)
    assert isinstance(error, KeyError)


@pytest.mark.parametrize("inside", [False, True], ids=["outside", "inside"])
async def test_a_starlette_endpoint_returning_a_500_runs_no_deferred_tasks(
    inside: bool, caplog: pytest.LogCaptureFixture
) -> None:
    deferred = Deferred()
    app = starlette_app(deferred, outcome="500", inside=inside)

    async with serve_app(app) as server:
        response = await server.client.get(SECRET_PATH)
        await server.wait_idle()

    assert (response.status_code, response.text) == (500, "could not save")
    deferred.assert_only_always_ran(
        caplog, name="GET /orders/{order_id}", reason="the response status was 500"
    )
    assert framework_errors(caplog) == []


# -- Quart-Trio -------------------------------------------------------------------------------


@pytest.mark.parametrize("outcome", ["raise", "503"])
async def test_quart_trio_a_failing_view_runs_no_deferred_tasks(
    outcome: str, caplog: pytest.LogCaptureFixture
) -> None:
    # Quart answers an unhandled exception with its own 500 and does not raise it on.
    deferred = Deferred()
    quart = QuartTrio(__name__)

    @quart.route("/orders/<order_id>")
    async def create_order(order_id: str) -> tuple[str, int]:
        deferred.start(request_tasks(request.scope))
        if outcome == "raise":
            raise KeyError(order_id)
        return "busy", 503

    async with serve_app(TaskMiddleware(quart)) as server:
        response = await server.client.get(SECRET_PATH)
        await server.wait_idle()

    status = 500 if outcome == "raise" else 503
    assert response.status_code == status
    # Quart exposes no route template in the scope: the method alone names the request.
    deferred.assert_only_always_ran(caplog, name="GET", reason=f"the response status was {status}")
    assert framework_errors(caplog) == []


# -- scripted, to the tick --------------------------------------------------------------------


async def test_after_a_5xx_start_only_always_tasks_run_each_at_its_point(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    timeline = Timeline()
    server = ScriptedServer(timeline)
    watched = server.watched
    seen_stats: list[TaskStatistics] = []

    async def handler(scope: Any, receive: Any, send: Any) -> None:
        tasks = request_tasks(scope)
        watched["audit"] = tasks.start_soon_named("audit", timeline.work, "audit", 5)
        watched["cache"] = tasks.after_route.start_soon_named("cache", timeline.work, "cache")
        watched["email"] = tasks.after_response.start_soon_named("email", timeline.work, "email")
        watched["work"] = tasks.add_task(timeline.work, "note")
        watched["route-cleanup"] = tasks.after_route.start_soon_named(
            "route-cleanup", timeline.work, "route cleanup", always=True
        )
        watched["release-lock"] = tasks.after_response.start_soon_named(
            "release-lock", timeline.work, "release lock", always=True
        )
        await trio.sleep(1)
        await send({"type": "http.response.start", "status": 503, "headers": []})
        # Past the point, a start at it runs at once only with always=True.
        watched["late-cache"] = tasks.after_route.start_soon_named(
            "late-cache", timeline.work, "late cache"
        )
        watched["late-cleanup"] = tasks.after_route.start_soon_named(
            "late-cleanup", timeline.work, "late cleanup", always=True
        )
        await trio.sleep(1)
        await send(FINAL_BODY)
        watched["late-email"] = tasks.after_response.start_soon_named(
            "late-email", timeline.work, "late email"
        )
        await trio.sleep(1)
        seen_stats.append(tasks.statistics())
        server.note("handler end")

    await TaskMiddleware(handler)(http_scope(SECRET_PATH), server.receive, server.send)

    not_run = ("cache", "email", "work", "late-cache", "late-email")
    assert server.seen["start 503"] == {
        "audit": RUNNING,
        "cache": PENDING,
        "email": PENDING,
        "work": PENDING,
        "route-cleanup": RUNNING,  # started before the server got the start
        "release-lock": PENDING,
    }
    assert server.seen["final body"]["release-lock"] is PENDING  # being sent: not yet
    # Held until the handler ends, then cancelled.
    assert {name: server.seen["handler end"][name] for name in not_run} == dict.fromkeys(
        not_run, PENDING
    )
    assert {name: h.state for name, h in watched.items()} == {
        **dict.fromkeys(not_run, CANCELLED),
        "audit": SUCCEEDED,
        "route-cleanup": SUCCEEDED,
        "late-cleanup": SUCCEEDED,
        "release-lock": SUCCEEDED,
    }
    # (trio runs the tasks woken in one tick in no fixed order: compare them sorted)
    assert sorted(event for event in timeline.events if event[1].endswith("started")) == [
        (0, "audit started"),
        (1, "late cleanup started"),
        (1, "route cleanup started"),
        (2, "release lock started"),
    ]
    assert trio.current_time() == 5  # the call waited for audit, not for the dropped tasks
    [during] = seen_stats
    assert during == TaskStatistics(
        started=9, pending=5, running=1, succeeded=3, failed=0, cancelled=0, rejected=0
    )
    check_accounting(during)
    [warning] = trio_bg_records(caplog, logging.WARNING)
    assert warning.getMessage() == (
        "GET: 5 deferred task(s) not run, the response status was 503: "
        + ", ".join(f"{watched[name].name!r} ({watched[name].id})" for name in not_run)
    )


@pytest.mark.parametrize(
    ("status", "runs"),
    [
        (200, True),
        (404, True),
        (499, True),
        (500, False),
        (503, False),
        (599, False),
        (HTTPStatus.SERVICE_UNAVAILABLE, False),  # an IntEnum counts by its value
    ],
    ids=["200", "404", "499", "500", "503", "599", "HTTPStatus.SERVICE_UNAVAILABLE"],
)
async def test_the_status_decides_whether_deferred_tasks_run(
    status: int,
    runs: bool,
    autojump_clock: trio.testing.MockClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    server = ScriptedServer(Timeline())
    handles: list[TaskHandle[None]] = []

    async def handler(scope: Any, receive: Any, send: Any) -> None:
        tasks = request_tasks(scope)
        handles.append(tasks.after_route.start_soon_named("cache", trio.sleep, 1))
        handles.append(tasks.add_task(trio.sleep, 1))
        await send({"type": "http.response.start", "status": status, "headers": []})
        await send(FINAL_BODY)

    await TaskMiddleware(handler)(http_scope(), server.receive, server.send)

    assert [h.state for h in handles] == [SUCCEEDED if runs else CANCELLED] * 2
    assert trio.current_time() == (1 if runs else 0)
    warnings = [r.getMessage() for r in trio_bg_records(caplog, logging.WARNING)]
    if runs:
        assert warnings == []
    else:
        assert warnings == [
            f"GET: 2 deferred task(s) not run, the response status was {int(status)}: "
            f"'cache' ({handles[0].id}), 'sleep' ({handles[1].id})"
        ]
