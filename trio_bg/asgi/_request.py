"""A request's task manager: the core manager plus the request's timing points.

The timing points are an ASGI idea, so they live here: a task started at ``after_route`` or
``after_response`` before that point has come is *held* by the core manager (PENDING, counted,
not running) and released by :meth:`RequestTaskManager.fire` when the middleware sees the
point pass in the ``send`` stream. What was never released is settled by
:meth:`RequestTaskManager.handler_ended` (the core's ``_drop_held``, and one warning):
``always=True`` tasks run anyway, the others end CANCELLED.

The middleware drives a request manager through five public methods, its *timing-point
protocol*: :meth:`~RequestTaskManager.open_request`, :meth:`~RequestTaskManager.response_started`,
:meth:`~RequestTaskManager.fire`, :meth:`~RequestTaskManager.error_sent` and
:meth:`~RequestTaskManager.handler_ended`. They are public so that the ASGI layer uses the core
as any other code may (pyright's ``reportPrivateUsage`` is on outside ``trio_bg/_core``); an app
never calls them, ``TaskMiddleware`` does.

A response that starts with a 5xx status counts as a failed handler: its points still come, but
they release only ``always=True`` tasks (at their normal point); the others stay held and are
dropped when the handler ends. Frameworks turn a handler's exception into a 500 before re-raising
it (Starlette's ServerErrorMiddleware) or instead of raising it (Quart), so the status is what
makes the rule hold wherever the middleware is placed.

A request's manager is named after the request's method and route template (``"POST
/pay/{order_id}"``), never its raw path, which would put unbounded names (ids, tokens) into logs,
reports and metrics labels. The route is known only once the framework has routed the request
(Starlette sets ``scope["route"]`` on the same scope dict), so the name is resolved lazily: at the
first task start, at the response start and at the end of the handler. Until then, and for a
framework that exposes no route, the name is the method alone (``"GET"``).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, final

from .._core._handle import ErrorHandler, TaskHandle
from .._core._instruments import InstrumentSet
from .._core._log import logger
from .._core._manager import TaskManager
from .._core._options import TaskOptions
from .._core._starter import TaskStarter
from .._core._state import Timing
from ._advice import FROM_A_SYNC_ENDPOINT, SERVE_UNDER_TRIO
from ._naming import RequestNamer
from ._types import Scope

_IMMEDIATE = Timing.IMMEDIATE
_AFTER_ROUTE = Timing.AFTER_ROUTE
_AFTER_RESPONSE = Timing.AFTER_RESPONSE
_BITS = {Timing.AFTER_ROUTE: 1, Timing.AFTER_RESPONSE: 2}
_FAILED = 4  # in _fired: the response started with a 5xx status

StartAt = Callable[
    [Timing, str, str, Callable[..., Any], tuple[Any, ...], bool, "TaskOptions | None"],
    "TaskHandle[Any]",
]
"""A request manager's start at a timing point, which its deferred starters call."""


@final
@dataclass(frozen=True, slots=True)
class RequestInfo:
    """What a request manager shows of its request (:attr:`RequestTaskManager.request_info`)."""

    method: str
    """The HTTP method (``"HTTP"`` if the scope had none)."""
    route: str | None
    """The route template, once the framework has routed the request (Starlette's
    ``scope["route"].path``); never the raw path, which can hold personal data."""
    status: int | None
    """The response status, once the response has started."""
    opened_time: float
    """When the request's call began, in seconds since the epoch (``time.time()``)."""


@final
class RequestTaskManager(TaskManager):
    """The manager of one http request, as ``request_tasks(scope)`` returns it.

    Everything a :class:`trio_bg.TaskManager` does, plus ``after_route`` and ``after_response``;
    ``add_task`` starts its task after the response, like Starlette's ``BackgroundTasks``.
    """

    __slots__ = ("_fired", "_method", "_namer", "_opened", "_request_scope", "_route", "_status")
    _trio_advice = SERVE_UNDER_TRIO
    _thread_advice = FROM_A_SYNC_ENDPOINT
    _fired: int  # a bit per timing point that has come (_BITS), and _FAILED
    _method: str
    _namer: RequestNamer | None  # TaskMiddleware(request_name=...), for unrouted requests
    _route: str | None  # the route template, once the framework has routed the request
    _status: int | None  # the response status, once the response has started
    _opened: float  # time.time() when the request's call began
    # The request's scope, read for its route until the handler has ended; then None, so that
    # scope -> manager (REQUEST_TASKS_KEY) and manager -> scope make no cycle past the request.
    _request_scope: Scope | None

    # -- the timing-point protocol (called by TaskMiddleware) ----------------------------------

    @classmethod
    def open_request(
        cls,
        *,
        scope: Scope,
        max_tasks: int | None,
        shield_timeout: float,
        on_error: ErrorHandler | None,
        instruments: InstrumentSet | None,
        namer: RequestNamer | None = None,
    ) -> RequestTaskManager:
        """A request's manager, not yet open (``TaskManagerContext(manager)`` opens it): it
        waits for its tasks without limit (the server's cancellation starts its shutdown) and
        keeps no ``recent`` of its own. It is named after the request's method until its route
        is known. Called by ``TaskMiddleware`` once per http request."""
        method = scope.get("method")
        if type(method) is not str:
            method = "HTTP"
        self = cls._create(
            name=method,
            max_tasks=max_tasks,
            grace_period=math.inf,
            shield_timeout=shield_timeout,
            on_error=on_error,
            recent_limit=0,
            instruments=instruments,
        )
        self._fired = 0
        self._method = method
        self._route = self._status = None
        self._opened = time.time()
        self._request_scope = scope
        self._namer = namer
        return self

    def _name_from_route(self) -> None:
        """Name the manager ``"<method> <route template>"`` if the framework has routed the
        request (Starlette's ``scope["route"].path``)."""
        scope = self._request_scope
        if scope is None:
            return
        path = getattr(scope.get("route"), "path", None)
        if not (type(path) is str and path) and self._namer is not None:
            path = self._namer.name(scope)
        if type(path) is str and path:
            self._route = path
            self._name = f"{self._method} {path}"

    def error_sent(self) -> None:
        """The middleware sent a plain 500 for a handler that raised before its response."""
        self._status = 500

    def response_started(self, status: Any) -> None:
        """The app sent ``http.response.start`` with ``status``: note it, name the manager and
        fire ``after_route``. A 5xx status marks the request failed first, so that from now on
        only ``always=True`` deferred tasks are released."""
        self._status = status
        if isinstance(status, int) and status >= 500:
            self._fired |= _FAILED
        self._name_from_route()
        self.fire(_AFTER_ROUTE)

    def handler_ended(self) -> None:
        """The app's call returned or raised: name the manager a last time and let go of the
        scope; settle the deferred tasks still held (``always=True`` ones run, the others end
        CANCELLED, named in one warning)."""
        scope = self._request_scope
        if scope is not None:
            # _name_from_route's body, inline: this runs once per request.
            path = getattr(scope.get("route"), "path", None)
            if not (type(path) is str and path) and self._namer is not None:
                path = self._namer.name(scope)
            if type(path) is str and path:
                self._route = path
                self._name = f"{self._method} {path}"
            self._request_scope = None
        if self._held:  # most requests hold nothing by now: one call fewer for them
            self._drop_deferred()

    @property
    def request_info(self) -> RequestInfo:
        """The request's method, route, status and start, for dashboards and instruments.
        Reading it changes nothing (the route is looked up, not recorded)."""
        route = self._route
        scope = self._request_scope
        if route is None and scope is not None:
            path = getattr(scope.get("route"), "path", None)
            if type(path) is str and path:
                route = path
        return RequestInfo(self._method, route, self._status, self._opened)

    @property
    def after_route(self) -> DeferredStarter:
        """Start tasks when the handler sends ``http.response.start``."""
        # A fresh two-slot view each time: caching it on the manager would make a reference
        # cycle, and every request would leave its manager to the garbage collector.
        return DeferredStarter(self, _AFTER_ROUTE, self._start_at)

    @property
    def after_response(self) -> DeferredStarter:
        """Start tasks once the final response body has been handed to the server."""
        return DeferredStarter(self, _AFTER_RESPONSE, self._start_at)

    def _start(
        self,
        method: str,
        name: str,
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        shield: bool,
        options: TaskOptions | None,
    ) -> TaskHandle[Any]:
        # add_task on a request is Starlette's BackgroundTasks: after the response.
        timing = _AFTER_RESPONSE if method == "add_task" else _IMMEDIATE
        return self._start_at(timing, method, name, fn, args, shield, options)

    def _start_at(
        self,
        timing: Timing,
        method: str,
        name: str,
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        shield: bool,
        options: TaskOptions | None,
    ) -> TaskHandle[Any]:
        if self._route is None:  # the first start (or no route yet): name the manager now
            self._name_from_route()
        if timing is _IMMEDIATE:
            held = False
        else:
            # Held until its point comes; after a 5xx response start, held until the handler
            # ends (and then dropped), unless always=True.
            fired = self._fired
            held = not fired & _BITS[timing] or (
                fired & _FAILED != 0 and (options is None or not options.always)
            )
        return self._spawn(method, name, fn, args, shield, options, timing=timing, held=held)

    def fire(self, timing: Timing) -> None:
        """The point ``timing`` has come: release the tasks held for it (after a 5xx response
        start, only the ``always=True`` ones); later starts at that point run at once (likewise).
        """
        fired = self._fired = self._fired | _BITS[timing]
        held = self._held
        if held:
            failed = fired & _FAILED != 0
            for handle in [
                h for h in held.values() if h.timing is timing and (not failed or h.always)
            ]:
                self._release(handle)

    def _drop_deferred(self) -> None:
        """The handler has ended: settle the deferred tasks still held (``always=True`` ones
        run, the others end CANCELLED) and name the cancelled ones in one warning, by the
        manager's name (method and route template, never the raw path), with the reason."""
        dropped = self._drop_held(report=False)
        if not dropped:
            return
        if self._fired & _FAILED:
            reason = f"the response status was {self._status}"
        else:
            reason = "the response was not completed"
        logger.warning(
            "%s: %d deferred task(s) not run, %s: %s",
            self._name,
            len(dropped),
            reason,
            ", ".join(f"{h.name!r} ({h.id})" for h in dropped),
        )


@final
class DeferredStarter(TaskStarter):
    """``tasks.after_route`` / ``tasks.after_response`` of a request manager.

    A task started here is PENDING until its timing point comes, then runs like any other; once
    the point has passed, a start runs at once. If the point never comes (the handler raised, or
    returned without a complete response), or the response started with a 5xx status, the task
    is not run: it ends CANCELLED when the handler ends and one warning names it. A task started
    with ``always=True`` runs anyway: at its point if that comes, else when the handler ends.
    """

    __slots__ = ("_manager", "_start_at", "_timing")

    def __init__(self, manager: RequestTaskManager, timing: Timing, start_at: StartAt) -> None:
        """Made by the manager's ``after_route`` / ``after_response`` (``start_at`` is its
        start at a timing point); an app uses those."""
        self._manager = manager
        self._timing = timing
        self._start_at = start_at

    @property
    def timing(self) -> Timing:
        """The timing point this starter waits for."""
        return self._timing

    def _start(
        self,
        method: str,
        name: str,
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        shield: bool,
        options: TaskOptions | None,
    ) -> TaskHandle[Any]:
        return self._start_at(self._timing, method, name, fn, args, shield, options)

    def __repr__(self) -> str:
        return f"<DeferredStarter {self._timing.value} of {self._manager!r}>"
