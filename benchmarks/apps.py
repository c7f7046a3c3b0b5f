"""The ASGI apps of the HTTP benchmark; each answers every request with a tiny ``200 OK``.

- ``raw``: raw ASGI, no background work (case a);
- ``raw_tiny``: raw ASGI in :class:`~trio_bg.asgi.TaskMiddleware`, one tiny ``after_response``
  task per request (case b);
- ``starlette_tiny``: Starlette on trio, one tiny ``BackgroundTask`` per request (case c);
- ``raw_sleep``: like ``raw_tiny`` with a 2 s ``after_response`` task (case d): at 2,500 req/s,
  ~5,000 tasks are in flight at any moment;
- ``raw_sleep_inline``: raw ASGI that sleeps 2 s after sending the final body, in the same call
  (case e, no trio_bg): the same work as (d) done by hand, the floor for (d);
- ``raw_nursery_tiny``: raw ASGI that opens a trio nursery per request and, after sending the
  final body, starts the tiny task in it; the call returns once the task is done (case f, no
  trio_bg): the floor for (b);
- ``raw_nursery_scoped_tiny``: the same, the task run inside its own ``trio.CancelScope`` (case
  g): the stricter floor for (b), since every trio_bg task can be cancelled on its own;
- ``raw_nursery_scoped_sleep``: (g) with the 2 s task (case i, no trio_bg): the floor for (d),
  a second trio task per request, in a nursery per request, in its own cancel scope.

The tiny task is the same coroutine function everywhere: one ``trio.lowlevel.checkpoint()``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any, TypeAlias

import trio
from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from trio_bg.asgi import TaskMiddleware, request_tasks

Scope: TypeAlias = MutableMapping[str, Any]
Message: TypeAlias = MutableMapping[str, Any]
Receive: TypeAlias = Callable[[], Awaitable[Message]]
Send: TypeAlias = Callable[[Message], Awaitable[None]]
ASGIApp: TypeAlias = Callable[[Scope, Receive, Send], Awaitable[None]]

BODY = b"OK"
_START: Message = {
    "type": "http.response.start",
    "status": 200,
    "headers": [(b"content-type", b"text/plain; charset=utf-8"), (b"content-length", b"2")],
}
_BODY: Message = {"type": "http.response.body", "body": BODY}
LONG_TASK_SECONDS = 2.0


async def tiny() -> None:
    await trio.lowlevel.checkpoint()


async def long_task() -> None:
    await trio.sleep(LONG_TASK_SECONDS)


async def _respond(send: Send) -> None:
    await send(dict(_START))
    await send(dict(_BODY))


async def _lifespan(receive: Receive, send: Send) -> None:
    """A lifespan that agrees to everything (an app that just returns breaks Hypercorn's
    startup)."""
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


async def raw(scope: Scope, receive: Receive, send: Send) -> None:
    """(a) Raw ASGI, no background work."""
    if scope["type"] == "http":
        await _respond(send)
    elif scope["type"] == "lifespan":
        await _lifespan(receive, send)


async def _raw_with_tiny(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] == "http":
        request_tasks(scope).after_response.start_soon_named("tiny", tiny)
        await _respond(send)
    elif scope["type"] == "lifespan":
        await _lifespan(receive, send)


async def _raw_with_long(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] == "http":
        request_tasks(scope).after_response.start_soon_named("long", long_task)
        await _respond(send)
    elif scope["type"] == "lifespan":
        await _lifespan(receive, send)


raw_tiny = TaskMiddleware(_raw_with_tiny)
"""(b) Raw ASGI + TaskMiddleware, one tiny after_response task per request."""

raw_sleep = TaskMiddleware(_raw_with_long)
"""(d) Raw ASGI + TaskMiddleware, one 2 s after_response task per request."""


async def raw_sleep_inline(scope: Scope, receive: Receive, send: Send) -> None:
    """(e) Raw ASGI, a 2 s sleep after the final body in the same call (no trio_bg)."""
    if scope["type"] == "http":
        await _respond(send)
        await long_task()
    elif scope["type"] == "lifespan":
        await _lifespan(receive, send)


async def _scoped_tiny() -> None:
    # Like P1's floor: a task that can be cancelled on its own needs a scope of its own.
    with trio.CancelScope():
        await tiny()


async def raw_nursery_tiny(scope: Scope, receive: Receive, send: Send) -> None:
    """(f) Raw ASGI, a nursery per request, one tiny task started after the final body."""
    if scope["type"] == "http":
        async with trio.open_nursery() as nursery:
            await _respond(send)
            nursery.start_soon(tiny)
    elif scope["type"] == "lifespan":
        await _lifespan(receive, send)


async def raw_nursery_scoped_tiny(scope: Scope, receive: Receive, send: Send) -> None:
    """(g) Like (f), the task inside its own ``trio.CancelScope``."""
    if scope["type"] == "http":
        async with trio.open_nursery() as nursery:
            await _respond(send)
            nursery.start_soon(_scoped_tiny)
    elif scope["type"] == "lifespan":
        await _lifespan(receive, send)


async def _scoped_long() -> None:
    with trio.CancelScope():
        await long_task()


async def raw_nursery_scoped_sleep(scope: Scope, receive: Receive, send: Send) -> None:
    """(i) Like (g), with the 2 s task: the floor for (d)."""
    if scope["type"] == "http":
        async with trio.open_nursery() as nursery:
            await _respond(send)
            nursery.start_soon(_scoped_long)
    elif scope["type"] == "lifespan":
        await _lifespan(receive, send)


async def _starlette_endpoint(request: Request) -> Response:
    return PlainTextResponse("OK", background=BackgroundTask(tiny))


starlette_tiny = Starlette(routes=[Route("/", _starlette_endpoint)])
"""(c) Starlette on trio (through anyio), one tiny BackgroundTask per request."""


def _seen_app() -> ASGIApp:
    """(h) Like (b), with everything for seeing it: the dashboard mounted at ``/dashboard``
    (local-only, its recorder instrument installed), and a Prometheus and an OpenTelemetry
    instrument on TaskMiddleware. The OpenTelemetry SDK is configured with a batch processor
    whose exporter drops the spans: every span is made, ended and handed on, as in production,
    without a collector to send it to."""
    from collections.abc import Sequence

    from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
    from opentelemetry.sdk.trace.export import (
        BatchSpanProcessor,
        SpanExporter,
        SpanExportResult,
    )

    from trio_bg.dashboard import Dashboard
    from trio_bg.metrics import PrometheusInstrument
    from trio_bg.otel import OpenTelemetryInstrument

    class Dropping(SpanExporter):
        def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
            return SpanExportResult.SUCCESS

    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(Dropping()))
    dashboard = Dashboard(local_only=True)
    tasks = TaskMiddleware(
        _raw_with_tiny,
        instruments=[PrometheusInstrument(), OpenTelemetryInstrument(tracer_provider=provider)],
    )

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"].startswith("/dashboard"):
            await dashboard(scope, receive, send)
        else:
            await tasks(scope, receive, send)

    return app


def __getattr__(name: str) -> object:
    # (h) is built only where it is served: a Dashboard installs its recorder instrument
    # process-wide, which would otherwise be in every process that imports this module (the
    # micro benchmarks' and every other case's server).
    if name == "raw_tiny_seen":
        app = _seen_app()
        globals()[name] = app
        return app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


CASES: dict[str, tuple[str, str]] = {
    "a": ("benchmarks.apps:raw", "raw ASGI, no tasks"),
    "b": ("benchmarks.apps:raw_tiny", "raw ASGI + TaskMiddleware, 1 tiny after_response task"),
    "c": ("benchmarks.apps:starlette_tiny", "Starlette + BackgroundTask (tiny)"),
    "d": ("benchmarks.apps:raw_sleep", "raw ASGI + TaskMiddleware, 1 x 2 s after_response task"),
    "e": ("benchmarks.apps:raw_sleep_inline", "raw ASGI, 2 s sleep after the body (no trio_bg)"),
    "f": ("benchmarks.apps:raw_nursery_tiny", "raw ASGI, nursery per request + 1 tiny task"),
    "g": ("benchmarks.apps:raw_nursery_scoped_tiny", "as (f), the task in its own CancelScope"),
    "h": ("benchmarks.apps:raw_tiny_seen", "as (b), + dashboard, Prometheus and OTel instruments"),
    "i": ("benchmarks.apps:raw_nursery_scoped_sleep", "as (g), the 2 s task: the floor of (d)"),
}
"""Case letter -> (``module:attribute`` of the app, description)."""
