"""What kind of callable a task is given: async or sync, its default name, and misuse checks."""

from __future__ import annotations

import functools
import inspect
import types
from collections.abc import Callable
from typing import Any

_CO_COROUTINE = inspect.CO_COROUTINE


def is_async_callable(fn: Callable[..., Any]) -> bool:
    """True when calling ``fn`` returns a coroutine to await, False when it runs synchronously.

    Sees through ``functools.partial`` and detects objects with an ``async def __call__``.
    """
    if type(fn) is types.FunctionType:  # the hot path: a plain ``def`` or ``async def``
        return bool(fn.__code__.co_flags & _CO_COROUTINE)
    while isinstance(fn, functools.partial):
        fn = fn.func
    if inspect.iscoroutinefunction(fn):
        return True
    if inspect.isfunction(fn) or inspect.ismethod(fn) or isinstance(fn, type):
        return False
    call = getattr(fn, "__call__", None)  # noqa: B004 - an object with an async __call__
    return call is not None and inspect.iscoroutinefunction(call)


def callable_name(fn: Callable[..., Any]) -> str:
    """The default task name: the function's qualified name."""
    name = getattr(fn, "__qualname__", None)
    if isinstance(name, str):
        return name
    while isinstance(fn, functools.partial):
        fn = fn.func
    name = getattr(fn, "__qualname__", None)
    if isinstance(name, str):
        return name
    return type(fn).__qualname__


def reject_non_function(method: str, fn: object) -> None:
    """Raise TypeError for what cannot be a task function; close a coroutine object first.

    Called only when ``fn`` is not a plain function, so the common case costs nothing.
    """
    if inspect.iscoroutine(fn):
        qualname = fn.__qualname__
        fn.close()  # no "coroutine ... was never awaited" warning
        raise TypeError(
            f"{method}() takes a function, not a coroutine object: "
            f"write {method}({qualname}, *args), not {method}({qualname}(*args))"
        )
    if inspect.isawaitable(fn):
        raise TypeError(f"{method}() takes a function, not an awaitable {type(fn).__name__!r}")
    if not callable(fn):
        raise TypeError(f"{method}() takes a function, got {type(fn).__name__!r}")
    target: object = fn
    while isinstance(target, functools.partial):
        target = target.func
    if inspect.isasyncgenfunction(target) or inspect.isgeneratorfunction(target):
        raise TypeError(
            f"{method}() takes a function, not a generator function "
            f"{callable_name(fn)!r}: wrap it in a function that consumes it"
        )
