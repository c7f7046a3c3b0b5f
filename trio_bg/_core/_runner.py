"""The body of every task: call the function, capture its result, finish the handle.

:func:`run_task` is what the manager's nursery runs for a RUNNING handle. It calls the function
inside the task's own cancel scope (with a timeout per attempt and retries where asked; in a
worker thread for a sync function), captures the result or the exception, runs the error
handler, and ends the handle through the manager's lifecycle. A task's exception never reaches
the nursery: only an outer cancellation, KeyboardInterrupt or SystemExit pass through (the last
two also from inside the task's own exception group). A failure is logged once: with its
traceback, trimmed of trio_bg's and trio's own frames above the task's function; a timeout as
one line.
"""

from __future__ import annotations

import inspect
import types
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, cast

import outcome
import trio

from ._cancellation import all_cancelled, first_leaf, separate_cancelled
from ._log import logger
from ._state import TaskState
from ._text import quoted
from ._threads import run_in_thread

if TYPE_CHECKING:
    from ._handle import TaskHandle
    from ._manager import TaskManager

_SUCCEEDED = TaskState.SUCCEEDED
_FAILED = TaskState.FAILED
_CANCELLED = TaskState.CANCELLED


async def run_task(manager: TaskManager, handle: TaskHandle[Any]) -> None:
    """Run a launched handle to its terminal state.

    Cancellation: the task's own scope (``handle.cancel()``, ``cancel_all()``, the close) ends
    it CANCELLED here, the ``trio.Cancelled`` kept as the cause for ``get()``. An outer
    cancellation also ends it CANCELLED and is re-raised into the nursery.
    """
    fn = handle._fn
    args = handle._args
    assert fn is not None and args is not None
    ran = manager._task_began(handle)
    scope = handle._scope
    assert scope is not None
    value: Any = None
    cause: trio.Cancelled | None = None
    try:
        with scope:
            if ran:
                try:
                    if handle._is_async and handle._options is None:
                        value = await fn(*args)
                    else:
                        value = await _attempt(manager, handle, fn, args)
                except trio.Cancelled as stopped:
                    cause = stopped
                    raise
    except BaseException as exc:
        if all_cancelled(exc):
            # Cancelled from outside the task's own scope: pass it on.
            manager._task_finished(handle, _CANCELLED, None, True)
            raise
        _strip_own_frames(exc)
        if _is_interrupt(exc):
            _interrupted(manager, handle, exc)
            raise  # unchanged, with any cancellation it carries: the nursery sees it all
        failure, cancelled = separate_cancelled(exc)
        await _fail(manager, handle, failure)
        if cancelled is not None:
            raise cancelled from None
        return
    if scope.cancelled_caught or not ran:
        if cause is not None:
            _strip_own_frames(cause)  # the cause's traceback must not hold this frame
        manager._task_finished(handle, _CANCELLED, cause, True)
    else:
        manager._task_finished(handle, _SUCCEEDED, value, False)


async def _attempt(
    manager: TaskManager, handle: TaskHandle[Any], fn: Callable[..., Any], args: tuple[Any, ...]
) -> Any:
    """Call the function with its timeout, in a thread if it is sync, retrying per policy."""
    options = handle._options
    retry = None if options is None else options.retry
    timeout = None if options is None else options.timeout
    attempt = 0
    while True:
        attempt += 1
        manager._task_attempt(handle, attempt)
        try:
            if timeout is None:
                return await _call(manager, handle, fn, args)
            # trio.fail_after, but the TooSlowError is raised here, from nothing: its context
            # would be the Cancelled with trio's whole cancellation path (~30 lines in a log).
            with trio.move_on_after(timeout):
                return await _call(manager, handle, fn, args)
            raise trio.TooSlowError  # the deadline cancelled the call; no text, like trio's
        except Exception as exc:
            if retry is None or attempt >= retry.attempts or not isinstance(exc, retry.on):
                raise
            delay = retry.delay(attempt)
            manager._task_retrying(handle, exc, delay)
        await _backoff(trio.current_time() + delay)


async def _backoff(deadline: float) -> None:
    """The wait between two attempts, until ``deadline`` on trio's clock: a function of its own
    so that ``_where`` can tell it (and read ``deadline``) from a wait of the task's code."""
    await trio.sleep_until(deadline)


async def _call(
    manager: TaskManager, handle: TaskHandle[Any], fn: Callable[..., Any], args: tuple[Any, ...]
) -> Any:
    if handle._is_async:
        return await fn(*args)
    # A worker thread cannot be interrupted: on cancellation the task ends at once and the
    # thread is abandoned (it runs to its end in the background, its result discarded; counted
    # and logged by run_in_thread). A sync function that returns a coroutine gets trio's own
    # TypeError, and the coroutine is closed by trio (no "never awaited" warning).
    return await run_in_thread(manager, handle, fn, args)


def _is_interrupt(exc: BaseException) -> bool:
    """KeyboardInterrupt or SystemExit, alone or anywhere in an exception group."""
    if isinstance(exc, BaseExceptionGroup):
        group = cast("BaseExceptionGroup[BaseException]", exc)
        return group.subgroup((KeyboardInterrupt, SystemExit)) is not None
    return isinstance(exc, KeyboardInterrupt | SystemExit)


def _interrupted(manager: TaskManager, handle: TaskHandle[Any], exc: BaseException) -> None:
    """A KeyboardInterrupt or SystemExit ended the task: FAILED with it, logged in one line, no
    error handler (the interrupt is not the task's failure to handle, and must not wait)."""
    logger.error(
        "task %s (%s) was interrupted by %s, which propagates",
        quoted(handle._name), handle.id, _interrupt_name(exc),
    )  # fmt: skip
    manager._task_finished(handle, _FAILED, outcome.Error(exc), False)


def _interrupt_name(exc: BaseException) -> str:
    if isinstance(exc, BaseExceptionGroup):
        group = cast("BaseExceptionGroup[BaseException]", exc)
        found = group.subgroup((KeyboardInterrupt, SystemExit))
        assert found is not None
        return f"{type(first_leaf(found)).__name__} (in {type(group).__name__})"
    return type(exc).__name__


def _timed_out(handle: TaskHandle[Any], exc: BaseException) -> float | None:
    """The task's timeout if ``exc`` is the TooSlowError :func:`_attempt` raised for it (raised
    from nothing, with no text and only trio_bg's frames, which are stripped), else None."""
    options = handle._options
    if (
        type(exc) is trio.TooSlowError
        and exc.__traceback__ is None
        and not exc.args
        and options is not None
        and options.timeout is not None
    ):
        return options.timeout
    return None


async def _fail(manager: TaskManager, handle: TaskHandle[Any], exc: BaseException) -> None:
    """Record a failure: log it, run the error handler once, then finish the handle FAILED.

    The log is one ERROR record on ``trio_bg``: ``task 'x' (task-1) failed`` with the traceback,
    or, for the task's own timeout, ``task 'x' (task-1) timed out after 2 s`` and no traceback.
    """
    timeout = _timed_out(handle, exc)
    if timeout is None:
        logger.error("task %s (%s) failed", quoted(handle._name), handle.id, exc_info=exc)
    else:
        logger.error("task %s (%s) timed out after %g s", quoted(handle._name), handle.id, timeout)
    handler = manager._on_error
    if handle._options is not None and handle._options.on_error is not None:
        handler = handle._options.on_error
    try:
        if handler is not None:
            # The handler runs under the task's rules: a scope of its own (so cancel(),
            # cancel_all() and the close reach it), shielded like the task, and capped by the
            # shutdown's shield deadline.
            scope = manager._task_scope(handle, trio.CancelScope(shield=handle._shield))
            if handle._shield:
                scope.deadline = manager._shield_deadline
            with scope:
                try:
                    result = handler(handle, exc)
                    if inspect.isawaitable(result):
                        await result
                except Exception:
                    logger.exception(
                        "error handler of task %r (%s) raised", handle._name, handle.id
                    )
    finally:
        manager._task_finished(handle, _FAILED, outcome.Error(exc), False)


def _with_nested(*codes: types.CodeType) -> Iterator[types.CodeType]:
    for code in codes:
        yield code
        yield from _with_nested(*(c for c in code.co_consts if isinstance(c, types.CodeType)))


# trio_bg's own frames (run_in_thread's too: it refers to the handle), and those between them
# and a sync function in its worker thread: trio.to_thread.run_sync with its inner functions, and
# outcome's unwrap of the thread's result.
_OWN_CODES = frozenset(
    _with_nested(
        run_task.__code__,
        _attempt.__code__,
        _call.__code__,
        _backoff.__code__,
        run_in_thread.__code__,
        trio.to_thread.run_sync.__code__,
        outcome.Error.unwrap.__code__,
    )
)


def _strip_own_frames(exc: BaseException) -> None:
    """Drop trio_bg's own frames from the top of a task's traceback, and trio's thread machinery
    above a sync function.

    The user sees where their function failed (or waited, for a cancellation), and the traceback
    holds no frame that refers to the handle, so a finished handle is freed by reference counting.
    """
    tb = exc.__traceback__
    while tb is not None and tb.tb_frame.f_code in _OWN_CODES:
        tb = tb.tb_next
    exc.__traceback__ = tb
