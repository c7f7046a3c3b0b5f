"""The start methods shared by managers, groups and a request's timing points, typed once.

Positional arguments are typed with a TypeVarTuple, so a type checker catches a wrong argument;
the options are keyword-only; keyword arguments for the function go through ``add_task`` or
``functools.partial``. Every start is synchronous, like trio's ``nursery.start_soon``: it returns a
:class:`~trio_bg.TaskHandle` at once, or raises before anything is started (arguments that the
function cannot take included, as a direct call would). Each kind of starter implements one
method, :meth:`TaskStarter._start`, with the options named.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar, TypeVarTuple, Unpack, overload

from ._callables import callable_name
from ._options import TaskOptions

if TYPE_CHECKING:
    from ._handle import ErrorHandler, TaskHandle
    from ._retry import Retry

T = TypeVar("T")
P = ParamSpec("P")
PosArgsT = TypeVarTuple("PosArgsT")


def task_options(
    timeout: float | None,
    retry: Retry | None,
    on_error: ErrorHandler | None,
    key: str | None,
    always: bool,
) -> TaskOptions:
    """The options of a start that gave at least one (the one place they are built)."""
    return TaskOptions(timeout=timeout, retry=retry, on_error=on_error, key=key, always=always)


def function_keywords_error(method: str, fn: object, kwargs: dict[str, Any]) -> TypeError:
    """The error for keyword arguments meant for the function, given to a start method whose
    keywords are task options (the reverse of ``add_task(fn, timeout=...)``)."""
    keyword = next(iter(kwargs))
    target = getattr(fn, "__name__", None)
    if not isinstance(target, str) or not target.isidentifier():
        target = "fn"
    return TypeError(
        f"{method}() got an unexpected keyword argument {keyword!r} ({method}() takes task "
        f"options as keywords, not the function's: for {keyword}=, use "
        f"functools.partial({target}, {keyword}=...) or add_task())"
    )


class TaskStarter:
    """Base of everything that starts tasks: a manager, a group of it, a timing point of it."""

    __slots__ = ()

    def _start(
        self,
        method: str,
        name: str,
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        shield: bool,
        options: TaskOptions | None,
    ) -> TaskHandle[Any]:
        """Start one task; ``method`` names the public method (for messages); ``options`` is
        None when no rarely used option was given."""
        raise NotImplementedError

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
        **kwargs: Any,
    ) -> TaskHandle[Any]:
        """Start ``fn(*args)`` as a task called ``name``; return its handle at once.

        ``fn`` is an async function (run in the manager's nursery) or a plain function (run in a
        worker thread). See :meth:`start_soon` for the options.
        """
        if kwargs:
            raise function_keywords_error("start_soon_named", fn, kwargs)
        options = None  # most starts give none: no object, no call (docs/performance.md)
        if (
            timeout is not None
            or retry is not None
            or on_error is not None
            or key is not None
            or always is not False
        ):
            options = task_options(timeout, retry, on_error, key, always)
        return self._start("start_soon_named", name, fn, args, shield, options)

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
        **kwargs: Any,
    ) -> TaskHandle[Any]:
        """Start ``fn(*args)`` as a task named after the function; return its handle at once.

        Args:
            fn: an async function, or a plain function to run in a worker thread.
            *args: positional arguments for ``fn``.
            shield: survive ``cancel_all()``, the owner's shutdown and outer cancellation until
                the manager's ``shield_timeout``; ``handle.cancel()`` still cancels at once.
            timeout: seconds for each attempt; then the task fails with ``trio.TooSlowError``.
            retry: a :class:`~trio_bg.Retry` policy for failed attempts.
            on_error: ``handler(handle, exc)``, called once if the task fails; overrides the
                manager's handler.
            key: at most one active task per key: while one is active, the same handle is
                returned and nothing new is started.
            always: for a request's ``after_route`` / ``after_response`` starts: run the task
                even if that point never comes (the handler failed). Elsewhere a task starts at
                once, so it always runs and the flag changes nothing.

        Raises:
            TaskRejected: the manager is closed, its pending queue is full, or its cap reached.
            TypeError, ValueError: misuse (a coroutine object, an empty name, a bad option,
                arguments that ``fn`` cannot take: checked here, with Python's own reason; a
                keyword meant for ``fn``, with a pointer to ``functools.partial`` and
                :meth:`add_task`). Nothing is started or counted.
        """
        if kwargs:
            raise function_keywords_error("start_soon", fn, kwargs)
        options = None  # most starts give none: no object, no call (docs/performance.md)
        if (
            timeout is not None
            or retry is not None
            or on_error is not None
            or key is not None
            or always is not False
        ):
            options = task_options(timeout, retry, on_error, key, always)
        name = callable_name(fn) if callable(fn) else ""
        return self._start("start_soon", name, fn, args, shield, options)

    @overload
    def add_task(
        self, fn: Callable[P, Awaitable[T]], /, *args: P.args, **kwargs: P.kwargs
    ) -> TaskHandle[T]: ...

    @overload
    def add_task(
        self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs
    ) -> TaskHandle[T]: ...

    def add_task(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> TaskHandle[Any]:
        """Start ``fn(*args, **kwargs)``, Starlette style, named after the function.

        On a request manager the task runs after the response (like Starlette's
        ``BackgroundTasks``); elsewhere it starts at once. It takes no options: use
        :meth:`start_soon_named` for those. Arguments that ``fn`` cannot take (an option name
        such as ``timeout=`` included) raise TypeError here, not after the response.
        """
        name = callable_name(fn) if callable(fn) else ""
        if kwargs and callable(fn):
            fn = functools.partial(fn, **kwargs)
        return self._start("add_task", name, fn, args, False, None)
