"""Tasks declared on a route: a route's fixed side effects next to it, not inside it."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Generic, TypeVar, TypeVarTuple, Unpack, cast, final, overload

import trio

from .._core._callables import callable_name, reject_non_function
from .._core._state import Timing
from ._lookup import request_tasks
from ._types import ASGIApp, Receive, Scope, Send

T = TypeVar("T")
PosArgsT = TypeVarTuple("PosArgsT")
EndpointT = TypeVar("EndpointT", bound=Callable[..., Any])


@final
class RouteTask(Generic[T]):
    """One task a route declares: made by :func:`route_task`, attached by :func:`with_tasks`."""

    __slots__ = ("args", "fn", "name", "pass_scope", "shield", "timing")

    def __init__(
        self,
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        *,
        name: str,
        timing: Timing,
        shield: bool,
        pass_scope: bool,
    ) -> None:
        self.fn = fn
        self.args = args
        self.name = name
        self.timing = timing
        self.shield = shield
        self.pass_scope = pass_scope

    def start(self, scope: Mapping[str, Any]) -> None:
        """Start this task in the request's manager of ``scope``, at its timing."""
        tasks = request_tasks(scope)
        args = (scope, *self.args) if self.pass_scope else self.args
        if self.timing is Timing.IMMEDIATE:
            tasks.start_soon_named(self.name, self.fn, *args, shield=self.shield)
        elif self.timing is Timing.AFTER_ROUTE:
            tasks.after_route.start_soon_named(self.name, self.fn, *args, shield=self.shield)
        else:
            tasks.after_response.start_soon_named(self.name, self.fn, *args, shield=self.shield)

    def __repr__(self) -> str:
        return f"<RouteTask {self.name!r} {self.timing.value}>"


@overload
def route_task(
    fn: Callable[[Unpack[PosArgsT]], Awaitable[T]],
    *args: Unpack[PosArgsT],
    name: str | None = None,
    timing: Timing = Timing.AFTER_RESPONSE,
    shield: bool = False,
) -> RouteTask[T]: ...


@overload
def route_task(
    fn: Callable[[Unpack[PosArgsT]], T],
    *args: Unpack[PosArgsT],
    name: str | None = None,
    timing: Timing = Timing.AFTER_RESPONSE,
    shield: bool = False,
) -> RouteTask[T]: ...


def route_task(
    fn: Callable[[Unpack[PosArgsT]], Any],
    *args: Unpack[PosArgsT],
    name: str | None = None,
    timing: Timing = Timing.AFTER_RESPONSE,
    shield: bool = False,
) -> RouteTask[Any]:
    """Declare ``fn(*args)`` as a task of every request to the route it is attached to.

    Like Ravyn's ``BackgroundTask(fn, *args)``: after the response by default; pass
    ``timing=Timing.IMMEDIATE`` or ``Timing.AFTER_ROUTE`` for the other points. Keyword arguments
    go through ``functools.partial``. See :func:`route_task_with_scope` for a task that needs the
    request's scope.
    """
    return _make(fn, args, name, timing, shield, pass_scope=False)


@overload
def route_task_with_scope(
    fn: Callable[[Scope, Unpack[PosArgsT]], Awaitable[T]],
    *args: Unpack[PosArgsT],
    name: str | None = None,
    timing: Timing = Timing.AFTER_RESPONSE,
    shield: bool = False,
) -> RouteTask[T]: ...


@overload
def route_task_with_scope(
    fn: Callable[[Scope, Unpack[PosArgsT]], T],
    *args: Unpack[PosArgsT],
    name: str | None = None,
    timing: Timing = Timing.AFTER_RESPONSE,
    shield: bool = False,
) -> RouteTask[T]: ...


def route_task_with_scope(
    fn: Callable[[Scope, Unpack[PosArgsT]], Any],
    *args: Unpack[PosArgsT],
    name: str | None = None,
    timing: Timing = Timing.AFTER_RESPONSE,
    shield: bool = False,
) -> RouteTask[Any]:
    """Like :func:`route_task`, but the task is called as ``fn(scope, *args)``.

    Read what you need from the scope (path, headers, user) at once: the request and its body
    are gone by the time an after-response task runs.
    """
    return _make(fn, args, name, timing, shield, pass_scope=True)


def _make(
    fn: Callable[..., Any],
    args: tuple[Any, ...],
    name: str | None,
    timing: Timing,
    shield: bool,
    *,
    pass_scope: bool,
) -> RouteTask[Any]:
    if not inspect.isfunction(fn):
        reject_non_function("route_task", fn)
    if not isinstance(cast(object, timing), Timing):
        raise TypeError(f"timing must be a trio_bg.Timing, got {type(timing).__name__}")
    task_name = callable_name(fn) if name is None else name
    if type(task_name) is not str or not task_name:
        raise ValueError("task name must be a non-empty string")
    return RouteTask(fn, args, name=task_name, timing=timing, shield=shield, pass_scope=pass_scope)


def with_tasks(*tasks: RouteTask[Any]) -> Callable[[EndpointT], EndpointT]:
    """Attach background tasks to a route: ``@with_tasks(route_task(audit, "orders"))``.

    Decorates a raw ASGI app ``async (scope, receive, send)`` or a Starlette endpoint
    ``(request) -> Response`` (async or sync). Each request to the route starts the tasks, at their
    timing, in the request's manager, before the endpoint runs; so deferred ones follow the
    request's rules (not run if the endpoint raises). The app must be wrapped in
    :class:`TaskMiddleware`.
    """
    for task in tasks:
        if not isinstance(cast(object, task), RouteTask):
            raise TypeError(
                f"with_tasks() takes route_task(...) objects, got {type(task).__name__!r}"
            )
    declared = tuple(tasks)

    def decorate(endpoint: EndpointT) -> EndpointT:
        params = len(inspect.signature(endpoint).parameters)
        if params == 3:
            return _wrap_asgi(endpoint, declared)  # type: ignore[return-value]
        if params == 1:
            return _wrap_endpoint(endpoint, declared)  # type: ignore[return-value]
        raise TypeError(
            "with_tasks() decorates an ASGI app (scope, receive, send) or a Starlette endpoint "
            f"(request), got {callable_name(endpoint)!r} with {params} parameters"
        )

    return decorate


def _wrap_asgi(app: ASGIApp, tasks: tuple[RouteTask[Any], ...]) -> ASGIApp:
    @functools.wraps(app)
    async def with_route_tasks(scope: Scope, receive: Receive, send: Send) -> None:
        for task in tasks:
            task.start(scope)
        await app(scope, receive, send)

    return with_route_tasks


def _wrap_endpoint(
    endpoint: Callable[[Any], Any], tasks: tuple[RouteTask[Any], ...]
) -> Callable[[Any], Awaitable[Any]]:
    is_async = inspect.iscoroutinefunction(endpoint)

    @functools.wraps(endpoint)
    async def with_route_tasks(request: Any) -> Any:
        scope: Scope = request.scope
        for task in tasks:
            task.start(scope)
        if is_async:
            return await endpoint(request)
        return await trio.to_thread.run_sync(endpoint, request)

    return with_route_tasks
