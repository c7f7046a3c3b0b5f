"""TaskMiddleware: one task manager per app (the lifespan) and one per http request.

Data flows one way: an ASGI event reaches the middleware, which gives the request its own
manager (owned by a nursery that lives for the request's ASGI call), watches the ``send`` stream
for the timing points, and starts the deferred tasks when their point comes.
"""

from __future__ import annotations

import math
from collections.abc import AsyncGenerator, Callable, Iterable
from contextlib import AsyncExitStack, asynccontextmanager
from typing import TYPE_CHECKING, Any, final

import trio

from .._core._checks import check_cap, check_count, check_handler, check_name, check_seconds
from .._core._closing import TaskManagerContext
from .._core._handle import ErrorHandler
from .._core._instruments import Instrument
from .._core._log import logger
from .._core._manager import TaskManager, check_instruments, create_manager
from .._core._state import Timing
from .._core._trio_only import not_trio
from .._shutdown_notice import announce_shutdown, clear_shutdown_notice
from ._advice import SERVE_UNDER_TRIO
from ._lifespan import InnerLifespan
from ._naming import RequestNamer
from ._request import RequestTaskManager
from ._types import APP_TASKS_KEY, REQUEST_TASKS_KEY, Message, Receive, Scope, Send, WrappedApp

if TYPE_CHECKING:
    from ..durable import DurableQueue

_AFTER_RESPONSE = Timing.AFTER_RESPONSE
_ERROR_BODY = b"Internal Server Error"
_ERROR_START: Message = {
    "type": "http.response.start",
    "status": 500,
    "headers": [
        (b"content-type", b"text/plain; charset=utf-8"),
        (b"content-length", str(len(_ERROR_BODY)).encode()),
    ],
}


@final
class TaskMiddleware:
    """Wrap an ASGI app so that it gets an app task manager and one task manager per request.

    - lifespan: the app manager is opened at ``lifespan.startup`` (before the inner app's
      startup, and put in ``scope["state"]``) and closed at ``lifespan.shutdown`` (before the
      inner app's shutdown, so tasks can still use what the app tears down) with the core close
      rules: ``grace_period``, then ``shield_timeout`` for shielded tasks. An inner app without
      lifespan support still works.
    - http: each request's manager lives in a nursery of that request's ASGI call, which returns
      once the request's tasks are done; the response is never delayed by them. The request
      manager waits for its tasks without limit (``grace_period=math.inf``); when the server
      cancels the call (Hypercorn does at its ``graceful_timeout`` on shutdown), unshielded
      request tasks stop at once and shielded ones get ``shield_timeout``. A client disconnect
      cancels nothing. Deferred tasks are not run (unless ``always=True``) if the handler raised,
      left its response incomplete, or started it with a 5xx status: they end CANCELLED and one
      warning names them.
    - websocket and other scopes pass through untouched (``app_tasks(scope)`` works there
      through ``scope["state"]``; there is no per-connection manager).

    Args:
        app: the ASGI app to wrap.
        grace_period: app manager: seconds to let unshielded app tasks finish at shutdown.
        shield_timeout: app and request managers: the cap for shielded tasks once shutdown (or
            the server's cancellation of a request) has begun.
        max_tasks_per_request: a request's cap; the next start raises TaskRejected.
        on_error: ``handler(handle, exc)`` for failed app and request tasks.
        max_running: app manager: how many app tasks run at once (None: no cap).
        max_pending: app manager: how many app tasks may wait for a slot.
        name: the app manager's name in logs.
        instruments: :class:`trio_bg.Instrument` objects for the app manager and every request
            manager (after the process-wide ones).
        recent_limit: how many finished app tasks the app manager keeps in ``recent`` (and so
            :func:`trio_bg.find_task` finds, beyond the process-wide history).
        queues: :class:`trio_bg.durable.DurableQueue` objects opened at startup (before the
            app manager) and closed at shutdown (after it). One that cannot be opened is logged
            and the app serves without it (its enqueues raise QueueUnavailable naming why).
        queue_concurrency: with N > 0, each queue also runs its jobs in this process: a worker
            of N jobs at once, an app task named ``durable worker <queue>``; at shutdown it
            stops taking jobs and its running jobs get ``grace_period``.
        request_name: ``(scope) -> str | None``, a name for requests the framework has not
            routed (raw ASGI apps, Quart): the request's manager is named ``"<method> <name>"``
            in logs, reports and the dashboard. Return a route template, never the raw path
            (it can hold ids and personal data). It is called when the first task starts, at
            the response start and when the handler ends, until it gives a name; a Starlette
            route wins. One that raises or returns no str is logged once; None keeps the
            method alone.
    """

    __slots__ = (
        "_app",
        "_app_manager",
        "_grace",
        "_instruments",
        "_max_pending",
        "_max_per_request",
        "_max_running",
        "_name",
        "_on_error",
        "_queue_concurrency",
        "_queues",
        "_recent_limit",
        "_request_namer",
        "_shield_timeout",
    )

    def __init__(
        self,
        app: WrappedApp,
        *,
        grace_period: float = 5.0,
        shield_timeout: float = 30.0,
        max_tasks_per_request: int | None = 100,
        on_error: ErrorHandler | None = None,
        max_running: int | None = None,
        max_pending: int | None = None,
        name: str = "app",
        instruments: Iterable[Instrument] = (),
        recent_limit: int = 100,
        queues: Iterable[DurableQueue] = (),
        queue_concurrency: int = 0,
        request_name: Callable[[Scope], str | None] | None = None,
    ) -> None:
        if not callable(app):
            raise TypeError(f"TaskMiddleware() takes an ASGI app, got {type(app).__name__!r}")
        self._app = app
        self._grace = check_seconds("grace_period", grace_period, allow_inf=True)
        self._shield_timeout = check_seconds("shield_timeout", shield_timeout, allow_inf=True)
        if math.isfinite(self._grace) and self._shield_timeout < self._grace:
            raise ValueError(
                f"shield_timeout ({self._shield_timeout!r}) must be >= grace_period "
                f"({self._grace!r}): shielded tasks get at least the grace period"
            )
        self._max_per_request = check_cap("max_tasks_per_request", max_tasks_per_request, 1)
        check_handler("on_error", on_error)
        self._on_error = on_error
        self._max_running = check_cap("max_running", max_running, 1)
        self._max_pending = check_cap("max_pending", max_pending, 0)
        self._name = check_name("task manager name", name)
        self._recent_limit = check_count("recent_limit", recent_limit, 0)
        self._instruments = check_instruments(instruments)
        self._request_namer = None if request_name is None else RequestNamer(request_name)
        self._app_manager: TaskManager | None = None
        self._queue_concurrency = check_count("queue_concurrency", queue_concurrency, 0)
        self._queues: tuple[DurableQueue, ...] = ()
        if not (isinstance(queues, tuple | list) and not queues):
            from ..durable._app import check_queues  # only with queues: an optional extra

            self._queues = check_queues(queues)

    @property
    def app_manager(self) -> TaskManager | None:
        """The app task manager while the lifespan is running, else None."""
        return self._app_manager

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # http is handled right here rather than in a method of its own: one coroutine frame
        # fewer for every request in flight (and for the garbage collector to walk).
        kind = scope["type"]
        if kind != "http":
            if kind == "lifespan":
                await self._lifespan(scope, receive, send)
            else:
                await self._app(scope, receive, send)
            return
        manager = RequestTaskManager.open_request(
            scope=scope,
            max_tasks=self._max_per_request,
            shield_timeout=self._shield_timeout,
            on_error=self._on_error,
            instruments=self._instruments,
            namer=self._request_namer,
        )
        scope[REQUEST_TASKS_KEY] = manager
        if self._app_manager is not None:
            scope[APP_TASKS_KEY] = self._app_manager
        response = _ResponseWatch(manager, send)
        failure: BaseException | None = None
        async with TaskManagerContext(manager):
            try:
                await self._app(scope, receive, response.send)
            except Exception as exc:
                failure = exc
            finally:
                manager.handler_ended()  # names it, lets go of the scope, settles held tasks
            if failure is not None and not response.started:
                # Answer now: the call only returns once the request's tasks are done.
                await response.send_error()
            # The response is over: let go of its watch (and the server's send it holds) while
            # the request's tasks run on, one object fewer per in-flight request for the
            # collector to walk (benchmarks/tracked.py).
            del response
        if failure is not None:
            try:
                raise failure
            finally:
                failure = None

    # -- lifespan --------------------------------------------------------------------------

    async def _lifespan(self, scope: Scope, receive: Receive, send: Send) -> None:
        message = await receive()
        if message["type"] != "lifespan.startup":
            raise RuntimeError(f"expected lifespan.startup, got {message['type']!r}")
        refusal = not_trio(SERVE_UNDER_TRIO)
        if refusal is not None:  # before any trio call: fail the startup, so the server stops
            await send({"type": "lifespan.startup.failed", "message": refusal})
            raise RuntimeError(refusal)
        clear_shutdown_notice()  # an app that stopped earlier in this run announced its stop
        inner = InnerLifespan(self._app, scope)
        stop_workers = trio.Event()
        async with _queues_then_nursery(self._queues) as nursery:
            nursery.start_soon(inner.run)
            manager = create_manager(
                name=self._name,
                max_running=self._max_running,
                max_pending=self._max_pending,
                grace_period=self._grace,
                shield_timeout=self._shield_timeout,
                on_error=self._on_error,
                recent_limit=self._recent_limit,
                instruments=self._instruments,
            )
            async with TaskManagerContext(manager):
                if self._queue_concurrency:
                    from ..durable._app import start_workers

                    start_workers(
                        manager, self._queues, self._queue_concurrency, self._grace, stop_workers
                    )
                state: Any = scope.get("state")
                if isinstance(state, dict):
                    state[APP_TASKS_KEY] = manager
                self._app_manager = manager
                try:
                    reply = await inner.exchange(message)
                    if reply is not None and reply["type"] == "lifespan.startup.failed":
                        await send(reply)
                        nursery.cancel_scope.cancel()
                        return
                    await send({"type": "lifespan.startup.complete"})
                    message = await receive()
                    if message["type"] == "lifespan.shutdown":  # first, for servers not ours
                        announce_shutdown("lifespan.shutdown")
                finally:
                    stop_workers.set()
                    self._app_manager = None
            # The app manager is closed: its tasks are done or cancelled and reported.
            reply = await inner.exchange(message)
            await send(reply if reply is not None else {"type": "lifespan.shutdown.complete"})
            nursery.cancel_scope.cancel()


@asynccontextmanager
async def _queues_then_nursery(
    queues: tuple[DurableQueue, ...],
) -> AsyncGenerator[trio.Nursery, None]:
    """Open the durable queues (closed last), then the lifespan's nursery."""
    async with AsyncExitStack() as stack:
        if queues:
            from ..durable._app import open_queues

            await open_queues(stack, queues)
        async with trio.open_nursery() as nursery:
            yield nursery


@final
class _ResponseWatch:
    """The request's ``send``, watched for the timing points of its deferred tasks."""

    __slots__ = ("_manager", "_send", "started")

    def __init__(self, manager: RequestTaskManager, send: Send) -> None:
        self._manager = manager
        self._send = send
        self.started = False

    async def send(self, message: Message) -> None:
        kind = message["type"]
        if kind == "http.response.body":
            if message.get("more_body", False):
                await self._send(message)
                return
            # A cancellation already due refuses the message: raise it here, before the server
            # sees the body. One that arrives during the send came after the server took it
            # (Quart-Trio cancels its own send once Hypercorn, having written the body, reports
            # the stream closed), and an error means the client had gone: the body was handed
            # over either way, so the after-response point has come.
            await trio.lowlevel.checkpoint_if_cancelled()
            try:
                await self._send(message)
            finally:
                self._manager.fire(_AFTER_RESPONSE)
        elif kind == "http.response.start":
            self.started = True
            # Before the server gets the message: after_route tasks start first. A 5xx status
            # makes this a failed request (only always=True deferred tasks will run).
            self._manager.response_started(message.get("status"))
            await self._send(message)
        else:
            await self._send(message)

    async def send_error(self) -> None:
        """Send a plain 500 for a handler that raised before starting its response."""
        self.started = True
        self._manager.error_sent()
        try:
            await self._send(_ERROR_START)
            await self._send({"type": "http.response.body", "body": _ERROR_BODY})
        except Exception as exc:  # the client may be gone; the handler's error is what matters
            logger.debug("could not send the 500 response: %r", exc)
