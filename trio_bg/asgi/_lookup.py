"""request_tasks(scope) and app_tasks(scope): find the managers the middleware put in a scope."""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from typing import Any, cast

from .._core._manager import TaskManager
from ._request import RequestTaskManager
from ._types import APP_TASKS_KEY, REQUEST_TASKS_KEY


def request_tasks(scope: Mapping[str, Any]) -> RequestTaskManager:
    """This http request's task manager.

    ``scope`` is the ASGI scope (a Starlette ``Request`` works too: it is a mapping over its scope;
    in Quart pass ``request.scope``). Tasks started here belong to the request: its ASGI call
    returns once they are done, and the response is never delayed by them.

    Raises:
        TypeError: ``scope`` is not a mapping (say, Quart's ``request`` instead of
            ``request.scope``).
        RuntimeError: the app is not wrapped in :class:`TaskMiddleware`, or the scope is not an
            http request.
    """
    _check_scope("request_tasks", scope)
    manager = scope.get(REQUEST_TASKS_KEY)
    if isinstance(manager, RequestTaskManager):
        return manager
    if scope.get("type", "http") != "http":
        raise RuntimeError(
            f"request_tasks() needs an http scope, got {scope.get('type')!r}: "
            "use app_tasks(scope) for tasks that outlive this connection"
        )
    raise RuntimeError(
        "request_tasks() found no task manager in this scope: "
        "wrap the ASGI app in trio_bg.asgi.TaskMiddleware"
    )


def app_tasks(scope: Mapping[str, Any]) -> TaskManager:
    """The app-lifetime task manager, opened at lifespan startup and closed at shutdown.

    Raises:
        TypeError: ``scope`` is not a mapping.
        RuntimeError: the app is not wrapped in :class:`TaskMiddleware`, or the server did not
            run the ASGI lifespan protocol (so there is no app manager).
    """
    _check_scope("app_tasks", scope)
    manager = scope.get(APP_TASKS_KEY)
    if isinstance(manager, TaskManager):
        return manager
    state = scope.get("state")
    if isinstance(state, Mapping):
        found = cast("Mapping[str, object]", state).get(APP_TASKS_KEY)
        if isinstance(found, TaskManager):
            return found
    if REQUEST_TASKS_KEY in scope:
        raise RuntimeError(
            "app_tasks() found no app task manager: the server did not run the ASGI lifespan "
            "protocol (enable lifespan in the server)"
        )
    raise RuntimeError(
        "app_tasks() found no task manager in this scope: "
        "wrap the ASGI app in trio_bg.asgi.TaskMiddleware"
    )


def _check_scope(function: str, scope: object) -> None:
    if not isinstance(scope, Mapping):
        raise TypeError(
            f"{function}() takes the ASGI scope (a mapping; in Quart pass request.scope), "
            f"got {_kind(scope)}"
        )


def _kind(value: object) -> str:
    """The type name a user recognises: Quart's ``request`` is a werkzeug ``LocalProxy``, named
    after the ``Request`` it stands for."""
    if type(value).__name__ == "LocalProxy":
        # Outside a request context the proxy stands for nothing: keep its own name.
        with contextlib.suppress(Exception):
            value = cast("Any", value)._get_current_object()
    return type(value).__name__
