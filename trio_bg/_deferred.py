"""DeferredStarter: start tasks at a request's timing point (after route, after response)."""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar, TypeVarTuple, Unpack, final, overload

from ._callables import callable_name
from ._state import Timing

if TYPE_CHECKING:
    from ._handle import ErrorHandler, TaskHandle
    from ._manager import TaskManager
    from ._retry import Retry

T = TypeVar("T")
P = ParamSpec("P")
PosArgsT = TypeVarTuple("PosArgsT")


@final
class DeferredStarter:
    """``tasks.after_route`` / ``tasks.after_response`` of a request manager.

    A task started here is PENDING until its timing point comes, then runs like any other; once
    the point has passed, a start runs at once. If the point never comes (the handler raised, or
    returned without a complete response) the task is not run: it ends CANCELLED and one warning
    names it, unless it was started with ``always=True``, which runs it anyway.
    """

    __slots__ = ("_manager", "_timing")
    _manager: TaskManager
    _timing: Timing

    def __init__(self) -> None:
        raise TypeError("use request_tasks(scope).after_route / .after_response")

    @classmethod
    def _create(cls, manager: TaskManager, timing: Timing) -> DeferredStarter:
        self = object.__new__(cls)
        self._manager = manager
        self._timing = timing
        return self

    @property
    def timing(self) -> Timing:
        """The timing point this starter waits for."""
        return self._timing

    @overload
    def start_soon_named(
        self,
        name: str,
        fn: Callable[[Unpack[PosArgsT]], Awaitable[T]],
        *args: Unpack[PosArgsT],
        shield: bool = False,
        timeout: float | None = None,
        retry: Retry | None = None,
        on_error: ErrorHandler | None = None,
        key: str | None = None,
        always: bool = False,
    ) -> TaskHandle[T]: ...

    @overload
    def start_soon_named(
        self,
        name: str,
        fn: Callable[[Unpack[PosArgsT]], T],
        *args: Unpack[PosArgsT],
        shield: bool = False,
        timeout: float | None = None,
        retry: Retry | None = None,
        on_error: ErrorHandler | None = None,
        key: str | None = None,
        always: bool = False,
    ) -> TaskHandle[T]: ...

    def start_soon_named(
        self,
        name: str,
        fn: Callable[[Unpack[PosArgsT]], Any],
        *args: Unpack[PosArgsT],
        shield: bool = False,
        timeout: float | None = None,
        retry: Retry | None = None,
        on_error: ErrorHandler | None = None,
        key: str | None = None,
        always: bool = False,
    ) -> TaskHandle[Any]:
        """Like :meth:`TaskManager.start_soon_named`, started at this timing point.

        ``always=True`` runs the task even if the timing point never comes.
        """
        return self._manager._spawn(
            "start_soon_named", name, fn, args, shield, timeout, retry, on_error, key, always,
            timing=self._timing,
        )  # fmt: skip

    @overload
    def start_soon(
        self,
        fn: Callable[[Unpack[PosArgsT]], Awaitable[T]],
        *args: Unpack[PosArgsT],
        shield: bool = False,
        timeout: float | None = None,
        retry: Retry | None = None,
        on_error: ErrorHandler | None = None,
        key: str | None = None,
        always: bool = False,
    ) -> TaskHandle[T]: ...

    @overload
    def start_soon(
        self,
        fn: Callable[[Unpack[PosArgsT]], T],
        *args: Unpack[PosArgsT],
        shield: bool = False,
        timeout: float | None = None,
        retry: Retry | None = None,
        on_error: ErrorHandler | None = None,
        key: str | None = None,
        always: bool = False,
    ) -> TaskHandle[T]: ...

    def start_soon(
        self,
        fn: Callable[[Unpack[PosArgsT]], Any],
        *args: Unpack[PosArgsT],
        shield: bool = False,
        timeout: float | None = None,
        retry: Retry | None = None,
        on_error: ErrorHandler | None = None,
        key: str | None = None,
        always: bool = False,
    ) -> TaskHandle[Any]:
        """Like :meth:`TaskManager.start_soon`, started at this timing point."""
        return self._manager._spawn(
            "start_soon", callable_name(fn) if callable(fn) else "", fn, args,
            shield, timeout, retry, on_error, key, always, timing=self._timing,
        )  # fmt: skip

    @overload
    def add_task(
        self, fn: Callable[P, Awaitable[T]], /, *args: P.args, **kwargs: P.kwargs
    ) -> TaskHandle[T]: ...

    @overload
    def add_task(
        self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs
    ) -> TaskHandle[T]: ...

    def add_task(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> TaskHandle[Any]:
        """Start ``fn(*args, **kwargs)`` at this timing point, named after the function."""
        name = callable_name(fn) if callable(fn) else ""
        if kwargs and callable(fn):
            fn = functools.partial(fn, **kwargs)
        return self._add_task(name, fn, args)

    def _add_task(
        self, name: str, fn: Callable[..., Any], args: tuple[Any, ...]
    ) -> TaskHandle[Any]:
        return self._manager._spawn(
            "add_task", name, fn, args, False, None, None, None, None, False, timing=self._timing
        )

    def __repr__(self) -> str:
        return f"<DeferredStarter {self._timing.value} of {self._manager!r}>"
