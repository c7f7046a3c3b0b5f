"""The body of every task: call the function, capture its result, finish the handle.

:func:`run_task` is what the manager's nursery runs for a RUNNING handle. It calls the function
inside the task's own cancel scope (with a timeout per attempt and retries where asked; in a
worker thread for a sync function), captures the result or the exception, runs the error
handler, and ends the handle through the manager's lifecycle. A task's exception never reaches
the nursery: only an outer cancellation, KeyboardInterrupt or SystemExit pass through.
"""

from __future__ import annotations

import inspect
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import outcome
import trio

from ._cancellation import all_cancelled, separate_cancelled
from ._log import logger
from ._state import TaskState
from ._threads import run_in_thread

if TYPE_CHECKING:
    from ._handle import TaskHandle
    from ._manager import TaskManager

_now = time.time
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
    handle._fn = handle._args = None
    scope = handle._scope
    if scope is None:
        # A plain task's scope is made here, at its first step, not at launch: 100,000 tasks
        # waiting in trio's run queue hold no scope (collector time 0.59 -> 0.45 s in P1).
        scope = handle._scope = trio.CancelScope()
        ran = True
    else:  # cancelled before its first step, or a shielded task past the shield cap
        ran = not scope.cancel_called
    value: Any = None
    try:
        with scope:
            if ran:
                handle._started = _now()
                try:
                    if handle._is_async and handle._options is None:
                        value = await fn(*args)
                    else:
                        value = await _attempt(manager, handle, fn, args)
                except trio.Cancelled as stopped:
                    handle._result = stopped
                    raise
    except BaseException as exc:
        if all_cancelled(exc):
            # Cancelled from outside the task's own scope: pass it on.
            handle._result = None
            manager._task_finished(handle, _CANCELLED, report=True)
            raise
        _strip_own_frames(exc)
        failure, cancelled = separate_cancelled(exc)
        await _fail(manager, handle, failure)
        if cancelled is not None:
            raise cancelled from None
        if isinstance(exc, KeyboardInterrupt | SystemExit):
            raise
        return
    if scope.cancelled_caught or not ran:
        cause = getattr(handle, "_result", None)
        if cause is not None:
            _strip_own_frames(cause)  # the cause's traceback must not hold this frame
        manager._task_finished(handle, _CANCELLED, report=True)
    else:
        handle._result = value
        manager._task_finished(handle, _SUCCEEDED, report=False)


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
        handle._attempts = attempt
        try:
            if timeout is None:
                return await _call(manager, handle, fn, args)
            with trio.fail_after(timeout):
                return await _call(manager, handle, fn, args)
        except Exception as exc:
            if retry is None or attempt >= retry.attempts or not isinstance(exc, retry.on):
                raise
            delay = retry.delay(attempt)
            manager._task_retrying(handle, exc, delay)
        await trio.sleep(delay)


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


async def _fail(manager: TaskManager, handle: TaskHandle[Any], exc: BaseException) -> None:
    """Record a failure: log it, run the error handler once, then finish the handle FAILED."""
    handle._result = outcome.Error(exc)
    logger.error("task %r (%s) failed", handle._name, handle.id, exc_info=exc)
    handler = manager._on_error
    if handle._options is not None and handle._options.on_error is not None:
        handler = handle._options.on_error
    try:
        if handler is not None and not isinstance(exc, KeyboardInterrupt | SystemExit):
            # The handler runs under the task's rules: a scope of its own (so cancel(),
            # cancel_all() and the close reach it), shielded like the task, and capped by the
            # shutdown's shield deadline.
            scope = trio.CancelScope(shield=handle._shield)
            if handle._shield:
                scope.deadline = manager._shield_deadline
            handle._scope = scope
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
        manager._task_finished(handle, _FAILED, report=False)


_OWN_CODES = frozenset(
    {run_task.__code__, _attempt.__code__, _call.__code__, run_in_thread.__code__}
)


def _strip_own_frames(exc: BaseException) -> None:
    """Drop trio_bg's own frames from the top of a task's traceback.

    The user sees where their function failed (or waited, for a cancellation), and the traceback
    holds no frame that refers to the handle, so a finished handle is freed by reference counting.
    """
    tb = exc.__traceback__
    while tb is not None and tb.tb_frame.f_code in _OWN_CODES:
        tb = tb.tb_next
    exc.__traceback__ = tb
