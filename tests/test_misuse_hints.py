"""Misuse that says what to do instead: a middleware name of the wrong kind, the context used as
the manager, a request object passed instead of its scope."""

from __future__ import annotations

import re

import pytest

import trio_bg
from trio_bg.asgi import TaskMiddleware, app_tasks, request_tasks


def exact(message: str) -> str:
    return f"^{re.escape(message)}$"


async def _app(scope: object, receive: object, send: object) -> None:
    del scope, receive, send


def test_a_middleware_name_of_the_wrong_kind_is_a_type_error() -> None:
    with pytest.raises(TypeError, match=exact("task manager name must be a str, got int")):
        TaskMiddleware(_app, name=5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=exact("task manager name must be a non-empty string")):
        TaskMiddleware(_app, name="")


def test_using_the_context_as_the_manager_says_what_to_do() -> None:
    context = trio_bg.open_task_manager()
    with pytest.raises(
        AttributeError,
        match=exact(
            "'TaskManagerContext' object has no attribute 'start_soon_named': "
            "open_task_manager() returns an async context manager; the manager is what "
            "'async with trio_bg.open_task_manager() as tm' gives you"
        ),
    ):
        context.start_soon_named  # type: ignore[attr-defined]  # noqa: B018


class QuartLikeRequest:
    """Not a mapping: what Quart's ``request`` is (its scope is ``request.scope``)."""

    def __init__(self) -> None:
        self.scope: dict[str, object] = {}


@pytest.mark.parametrize("lookup", [request_tasks, app_tasks])
def test_a_request_object_instead_of_its_scope_says_what_to_pass(lookup: object) -> None:
    name = getattr(lookup, "__name__")  # noqa: B009
    with pytest.raises(
        TypeError,
        match=exact(
            f"{name}() takes the ASGI scope (a mapping; in Quart pass request.scope), "
            "got QuartLikeRequest"
        ),
    ):
        lookup(QuartLikeRequest())  # type: ignore[operator]
