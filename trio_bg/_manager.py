"""TaskManager: named background tasks in a nursery, with exact accounting and a close policy.

Data flows one way: a start makes a :class:`~trio_bg.TaskHandle`, the handle waits (PENDING) for a
running slot or its timing point, runs in the manager's nursery inside its own cancel scope, and
ends in exactly one terminal state with its result captured as an ``outcome``. No task's exception
ever reaches the nursery, so one failure never cancels anything else.
"""

from __future__ import annotations

import contextvars
import inspect
import itertools
import math
import time
import types
from collections import deque
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast, final

import outcome
import trio

from ._callables import is_async_callable, reject_non_function
from ._cancellation import all_cancelled, first_leaf, separate_cancelled
from ._checks import check_cap, check_handler, check_seconds
from ._deferred import DeferredStarter
from ._exceptions import TaskRejected
from ._group import TaskGroup
from ._handle import ErrorHandler, TaskExtras, TaskHandle
from ._log import logger
from ._retry import Retry
from ._starter import TaskStarter
from ._state import TaskState, Timing

if TYPE_CHECKING:
    from types import TracebackType


_task_numbers = itertools.count(1)
_now = time.time
_CO_COROUTINE = inspect.CO_COROUTINE
_CO_GENERATORS = inspect.CO_GENERATOR | inspect.CO_ASYNC_GENERATOR
_FunctionType = types.FunctionType
_PENDING = TaskState.PENDING
_RUNNING = TaskState.RUNNING
_SUCCEEDED = TaskState.SUCCEEDED
_FAILED = TaskState.FAILED
_CANCELLED = TaskState.CANCELLED
_IMMEDIATE = Timing.IMMEDIATE
_TIMING_BITS = {Timing.IMMEDIATE: 0, Timing.AFTER_ROUTE: 1, Timing.AFTER_RESPONSE: 2}
_INF = math.inf


@final
@dataclass(frozen=True, slots=True)
class TaskStatistics:
    """Counters of a manager at one moment.

    ``started == pending + running + succeeded + failed + cancelled`` always holds. ``rejected``
    counts refused starts, for which no handle exists.
    """

    started: int
    pending: int
    running: int
    succeeded: int
    failed: int
    cancelled: int
    rejected: int


@final
@dataclass(frozen=True, slots=True)
class ShutdownReport:
    """What a manager's close did: how long it took and which tasks it had to cancel."""

    manager: str
    duration: float
    """Seconds from the start of the close to its end (on trio's clock)."""
    cancelled: tuple[TaskHandle[Any], ...]
    """Every task cancelled by the shutdown (or an outer cancellation), oldest first."""

    def __str__(self) -> str:
        if not self.cancelled:
            return f"task manager {self.manager!r} closed in {self.duration:.3f} s; no task dropped"
        names = ", ".join(f"{h.name!r} ({h.id})" for h in self.cancelled)
        return (
            f"task manager {self.manager!r} closed in {self.duration:.3f} s; "
            f"{len(self.cancelled)} task(s) cancelled by the shutdown: {names}"
        )


@final
class TaskManager(TaskStarter):
    """Runs named background tasks in a nursery it owns; reachable only through
    ``async with trio_bg.open_task_manager() as tm``.

    Cancellation: a task runs inside its own cancel scope, nested in the scopes that surround the
    manager's ``async with``. An outer cancellation therefore stops unshielded tasks at once;
    shielded ones run on until ``shield_timeout`` seconds after it reached the manager.
    ``handle.cancel()`` and ``cancel(id)`` cancel one task (shielded or not);
    ``cancel_all()`` cancels the unshielded ones.

    Closing (leaving ``async with``) refuses new tasks, waits up to ``grace_period`` for the
    active ones, cancels the unshielded ones, gives shielded ones up to ``shield_timeout`` from
    the start of the close, cancels them too, and logs one report naming every task it cancelled.
    If the ``async with`` body raised (or was cancelled), there is no grace period: unshielded
    tasks are cancelled at once and shielded ones get ``shield_timeout``; the body's exception
    then propagates unchanged. A manager with ``grace_period=math.inf`` waits for its tasks
    without limit; its shutdown begins only when it is cancelled from outside.
    """

    # Per-instance state is set by _create(); the public constructor is refused. Counters and
    # flags start from these class-level defaults, so opening a manager (one per request) costs
    # only the handful of containers it really needs.
    _name: str
    _max_running: int | None
    _max_pending: int | None
    _max_tasks: int | None
    _grace: float
    _shield_timeout: float
    _on_error: ErrorHandler | None
    _limiter: trio.CapacityLimiter | None = None
    _nursery: trio.Nursery | None = None
    _active: dict[int, TaskHandle[Any]]
    _keys: dict[str, TaskHandle[Any]] | None = None
    _queue: deque[TaskHandle[Any]] | None = None
    _deferred: dict[Timing, list[TaskHandle[Any]]] | None = None
    _fired: int = 0  # a bit per timing point that has come (_TIMING_BITS)
    _timing_points: bool = False
    _add_task_timing: Timing = _IMMEDIATE
    _recent: deque[TaskHandle[Any]] | None = None
    _closed: bool = False
    _shield_deadline: float = _INF
    _dropped: list[TaskHandle[Any]] | None = None
    _idle: trio.Event | None = None
    _close_started: float = 0.0
    _close_span: tuple[float, float] | None = None
    _shielded: int = 0
    _report: ShutdownReport | None = None
    _started: int = 0
    _queued: int = 0
    _waiting: int = 0
    _running: int = 0
    _succeeded: int = 0
    _failed: int = 0
    _cancelled: int = 0
    _rejected: int = 0

    def __init__(self) -> None:
        raise TypeError(
            "trio_bg.TaskManager has no public constructor; "
            "use 'async with trio_bg.open_task_manager() as tm'"
        )

    @classmethod
    def _create(
        cls,
        *,
        name: str,
        max_running: int | None = None,
        max_pending: int | None = None,
        max_tasks: int | None = None,
        grace_period: float = 5.0,
        shield_timeout: float = 30.0,
        on_error: ErrorHandler | None = None,
        max_threads: int | None = None,
        recent_limit: int = 100,
        timing_points: bool = False,
        add_task_timing: Timing = _IMMEDIATE,
    ) -> TaskManager:
        self = object.__new__(cls)
        self._name = name
        self._max_running = max_running
        self._max_pending = max_pending
        self._max_tasks = max_tasks
        self._grace = grace_period
        self._shield_timeout = shield_timeout
        self._on_error = on_error
        if max_threads is not None:
            self._limiter = trio.CapacityLimiter(max_threads)
        self._active = {}
        if max_running is not None:
            self._queue = deque()
        if recent_limit:
            self._recent = deque(maxlen=recent_limit)
        if timing_points:
            self._timing_points = True
            self._add_task_timing = add_task_timing
        return self

    # -- introspection ---------------------------------------------------------------------

    @property
    def name(self) -> str:
        """The manager's name, used in logs and reports."""
        return self._name

    @property
    def closed(self) -> bool:
        """True once the close has begun: every start is refused from then on."""
        return self._closed

    @property
    def active_tasks(self) -> tuple[TaskHandle[Any], ...]:
        """PENDING and RUNNING tasks, oldest first."""
        return tuple(self._active.values())

    @property
    def active_count(self) -> int:
        """How many tasks are PENDING or RUNNING."""
        return len(self._active)

    @property
    def recent(self) -> deque[TaskHandle[Any]]:
        """The most recently finished handles, newest last (bounded; treat as read-only)."""
        return deque(maxlen=0) if self._recent is None else self._recent

    @property
    def shutdown_report(self) -> ShutdownReport | None:
        """The report of the close, once the manager has closed."""
        if self._report is None and self._close_span is not None:
            began, ended = self._close_span
            self._report = ShutdownReport(manager=self._name, duration=ended - began, cancelled=())
        return self._report

    def statistics(self) -> TaskStatistics:
        """A frozen snapshot of the counters."""
        return TaskStatistics(
            started=self._started,
            pending=self._queued + self._waiting,
            running=self._running,
            succeeded=self._succeeded,
            failed=self._failed,
            cancelled=self._cancelled,
            rejected=self._rejected,
        )

    def get(self, task_id: str) -> TaskHandle[Any] | None:
        """The handle of an active or recently finished task, or None."""
        n = _task_number(task_id)
        if n is None:
            return None
        handle = self._active.get(n)
        if handle is not None:
            return handle
        for handle in self._recent or ():
            if handle._n == n:
                return handle
        return None

    def __repr__(self) -> str:
        return (
            f"<TaskManager {self._name!r} running={self._running} "
            f"pending={self._queued + self._waiting} closed={self._closed}>"
        )

    # -- timing points ---------------------------------------------------------------------

    @property
    def after_route(self) -> DeferredStarter:
        """Start tasks when the handler sends ``http.response.start`` (request managers only)."""
        return self._timing_point(Timing.AFTER_ROUTE)

    @property
    def after_response(self) -> DeferredStarter:
        """Start tasks once the final response body is sent (request managers only)."""
        return self._timing_point(Timing.AFTER_RESPONSE)

    def _timing_point(self, timing: Timing) -> DeferredStarter:
        if not self._timing_points:
            raise RuntimeError(
                f"task manager {self._name!r} has no timing points: {timing.value} tasks "
                "belong to a request manager (trio_bg.asgi.request_tasks(scope))"
            )
        # A fresh two-slot view each time: caching it on the manager would make a reference
        # cycle, and every request would leave its manager to the garbage collector.
        return DeferredStarter._create(self, timing)

    def _fire(self, timing: Timing) -> None:
        """Start the tasks waiting for ``timing``; later starts at that timing run at once."""
        self._fired |= _TIMING_BITS[timing]
        deferred = self._deferred
        if not deferred:
            return
        for handle in deferred.pop(timing, ()):
            if handle._state is _PENDING:
                self._waiting -= 1
                self._schedule(handle)

    def _discard_deferred(self) -> list[TaskHandle[Any]]:
        """Settle the tasks whose timing point never came: ``always`` ones start, the rest end
        CANCELLED. Returns the discarded handles."""
        discarded: list[TaskHandle[Any]] = []
        deferred, self._deferred = self._deferred, None
        if not deferred:
            return discarded
        for handles in deferred.values():
            for handle in handles:
                if handle._state is not _PENDING:
                    continue
                self._waiting -= 1
                if handle._extra is not None and handle._extra.always:
                    self._schedule(handle)
                else:
                    discarded.append(handle)
                    self._finish(handle, _CANCELLED, report=False)
        return discarded

    # -- starting --------------------------------------------------------------------------

    def _add_task(
        self, name: str, fn: Callable[..., Any], args: tuple[Any, ...]
    ) -> TaskHandle[Any]:
        if self._add_task_timing is not _IMMEDIATE:
            return self._timing_point(self._add_task_timing)._add_task(name, fn, args)
        return self._spawn("add_task", name, fn, args, False, None, None, None, None, False)

    def _spawn(
        self,
        method: str,
        name: str,
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        shield: bool,
        timeout: float | None,
        retry: Retry | None,
        on_error: ErrorHandler | None,
        key: str | None,
        always: bool,
        timing: Timing = _IMMEDIATE,
        group: TaskGroup | None = None,
    ) -> TaskHandle[Any]:
        # Validate everything before anything is created: a refusal starts nothing.
        if type(fn) is _FunctionType and not fn.__code__.co_flags & _CO_GENERATORS:
            is_async = bool(fn.__code__.co_flags & _CO_COROUTINE)
        else:
            reject_non_function(method, fn)
            is_async = is_async_callable(fn)
        if type(name) is not str:
            raise TypeError(f"task name must be a str, got {type(name).__name__}")
        if not name:
            raise ValueError("task name must be a non-empty string")
        if timeout is not None:
            timeout = check_seconds("timeout", timeout, allow_inf=True)
        retry_policy = cast(object, retry)
        if retry_policy is not None and not isinstance(retry_policy, Retry):
            raise TypeError(
                f"retry must be a trio_bg.Retry or None, got {type(retry_policy).__name__}"
            )
        if on_error is not None:
            check_handler("on_error", on_error)
        if key is not None and type(key) is not str:
            raise TypeError(f"key must be a str or None, got {type(key).__name__}")
        if group is not None:
            group._check_open()
        if key is not None and self._keys is not None:
            existing = self._keys.get(key)
            if existing is not None:
                return existing
        if self._closed:
            self._rejected += 1
            raise TaskRejected(f"task manager {self._name!r} is closed to new tasks")
        if self._max_tasks is not None and self._started >= self._max_tasks:
            self._rejected += 1
            raise TaskRejected(
                f"task manager {self._name!r} reached its cap of {self._max_tasks} tasks"
            )
        deferred = timing is not _IMMEDIATE and not self._fired & _TIMING_BITS[timing]
        must_queue = (
            not deferred and self._max_running is not None and self._running >= self._max_running
        )
        if must_queue and self._max_pending is not None and self._queued >= self._max_pending:
            self._rejected += 1
            raise TaskRejected(
                f"task manager {self._name!r} has {self._queued} pending tasks "
                f"(max_pending={self._max_pending})"
            )

        extra: TaskExtras | None = None
        if (
            timeout is not None
            or retry is not None
            or on_error is not None
            or key is not None
            or group is not None
            or deferred
            or must_queue
        ):
            # A task started later, from another task, keeps the starter's context.
            context = contextvars.copy_context() if deferred or must_queue else None
            extra = TaskExtras(timeout, retry, on_error, key, group, always, context)
        n = next(_task_numbers)
        handle: TaskHandle[Any] = TaskHandle(
            self, n, name, fn, args, is_async, shield, timing, extra
        )
        if key is not None:
            if self._keys is None:
                self._keys = {}
            self._keys[key] = handle
        if group is not None:
            group._add(handle)
        self._active[n] = handle
        self._started += 1
        if shield:
            self._shielded += 1
        if deferred:
            if self._deferred is None:
                self._deferred = {}
            self._deferred.setdefault(timing, []).append(handle)
            self._waiting += 1
        elif must_queue:
            handle._in_queue = True
            assert self._queue is not None  # must_queue implies max_running
            self._queue.append(handle)
            self._queued += 1
        else:
            self._launch(handle)
        return handle

    def _schedule(self, handle: TaskHandle[Any]) -> None:
        """Launch a PENDING handle now, or queue it for a running slot."""
        queue = self._queue
        if queue is not None and self._running >= (self._max_running or 0):
            handle._in_queue = True
            queue.append(handle)
            self._queued += 1
        else:
            self._launch(handle)

    def _launch(self, handle: TaskHandle[Any]) -> None:
        """Give a PENDING handle a running slot and spawn it in the nursery."""
        nursery = self._nursery
        assert nursery is not None
        handle._state = _RUNNING
        self._running += 1
        if handle._shield:
            # A shielded task's scope exists from launch, for the close to cap it. Others get
            # theirs when they first run (or when cancelled before that): one object fewer per
            # task waiting in the run queue.
            scope = handle._scope = trio.CancelScope(shield=True)
            scope.deadline = self._shield_deadline
        extra = handle._extra
        if extra is None or extra.context is None:
            nursery.start_soon(self._run, handle, name=handle._name)
        else:
            context, extra.context = extra.context, None
            if extra.spent():
                handle._extra = None  # it only carried the context and `always`: let it go
            context.run(self._start_in, nursery, handle)

    def _start_in(self, nursery: trio.Nursery, handle: TaskHandle[Any]) -> None:
        nursery.start_soon(self._run, handle, name=handle._name)

    # -- running ---------------------------------------------------------------------------

    async def _run(self, handle: TaskHandle[Any]) -> None:
        """The body of every task: call, capture, finish. Never raises but to pass on an outer
        cancellation, KeyboardInterrupt or SystemExit."""
        fn = handle._fn
        args = handle._args
        assert fn is not None and args is not None
        handle._fn = handle._args = None
        scope = handle._scope
        if scope is None:
            scope = handle._scope = trio.CancelScope()
            ran = True
        else:  # cancelled before its first step, or a shielded task past the shield cap
            ran = not scope.cancel_called
        value: Any = None
        try:
            with scope:
                if ran:
                    handle._started = _now()
                    if handle._is_async and handle._extra is None:
                        value = await fn(*args)
                    else:
                        value = await self._attempt(handle, fn, args)
        except BaseException as exc:
            if all_cancelled(exc):
                # Cancelled from outside the task's own scope: pass it on.
                self._finish(handle, _CANCELLED, report=True)
                raise
            _strip_own_frames(exc)
            failure, cancelled = separate_cancelled(exc)
            await self._fail(handle, failure)
            if cancelled is not None:
                raise cancelled from None
            if isinstance(exc, KeyboardInterrupt | SystemExit):
                raise
            return
        if scope.cancelled_caught or not ran:
            self._finish(handle, _CANCELLED, report=True)
        else:
            handle._result = value
            self._finish(handle, _SUCCEEDED, report=False)

    async def _attempt(
        self, handle: TaskHandle[Any], fn: Callable[..., Any], args: tuple[Any, ...]
    ) -> Any:
        """Call the function with its timeout, in a thread if it is sync, retrying per policy."""
        extra = handle._extra
        retry = None if extra is None else extra.retry
        timeout = None if extra is None else extra.timeout
        attempt = 0
        while True:
            attempt += 1
            handle._attempts = attempt
            try:
                if timeout is None:
                    return await self._call(handle, fn, args)
                with trio.fail_after(timeout):
                    return await self._call(handle, fn, args)
            except Exception as exc:
                if retry is None or attempt >= retry.attempts or not isinstance(exc, retry.on):
                    raise
                delay = retry.delay(attempt)
                logger.info(
                    "task %r (%s) attempt %d of %d failed with %r; retrying in %.3g s",
                    handle._name, handle.id, attempt, retry.attempts, exc, delay,
                )  # fmt: skip
            await trio.sleep(delay)

    async def _call(
        self, handle: TaskHandle[Any], fn: Callable[..., Any], args: tuple[Any, ...]
    ) -> Any:
        if handle._is_async:
            return await fn(*args)
        # A worker thread cannot be interrupted: on cancellation the task ends at once and the
        # thread is abandoned (it runs to its end in the background, its result discarded).
        # A sync function that returns a coroutine gets trio's own TypeError, and the coroutine
        # is closed by trio (no "never awaited" warning).
        return await trio.to_thread.run_sync(
            fn, *args, limiter=self._limiter, abandon_on_cancel=True
        )

    async def _fail(self, handle: TaskHandle[Any], exc: BaseException) -> None:
        """Record a failure: log it, run the error handler once, then finish the handle."""
        handle._result = outcome.Error(exc)
        logger.error("task %r (%s) failed", handle._name, handle.id, exc_info=exc)
        handler = self._on_error
        if handle._extra is not None and handle._extra.on_error is not None:
            handler = handle._extra.on_error
        try:
            if handler is not None and not isinstance(exc, KeyboardInterrupt | SystemExit):
                # The handler runs under the task's rules: a scope of its own (so cancel(),
                # cancel_all() and the close reach it), shielded like the task, and capped by
                # the shutdown's shield deadline.
                scope = trio.CancelScope(shield=handle._shield)
                if handle._shield:
                    scope.deadline = self._shield_deadline
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
            self._finish(handle, _FAILED, report=False)

    def _finish(self, handle: TaskHandle[Any], state: TaskState, *, report: bool) -> None:
        """Move a handle to its terminal state and keep every counter exact.

        The handle lets go of its function, scope and manager, so a finished handle holds no
        reference cycle and is freed by reference counting alone.
        """
        if handle._state is _RUNNING:
            self._running -= 1
        handle._state = state
        handle._finished = _now()
        handle._fn = handle._args = handle._scope = handle._manager = None
        if state is _SUCCEEDED:
            self._succeeded += 1
        elif state is _FAILED:
            self._failed += 1
        else:
            self._cancelled += 1
            if report and not getattr(handle, "_cancel_requested", False):
                if self._dropped is None:
                    self._dropped = []
                self._dropped.append(handle)
        del self._active[handle._n]
        if handle._shield:
            self._shielded -= 1
        extra = handle._extra
        if extra is not None:
            extra.context = None
            key = extra.key
            keys = self._keys
            if key is not None and keys is not None and keys.get(key) is handle:
                del keys[key]
            if extra.group is not None:
                extra.group._task_done()
        if self._recent is not None:
            self._recent.append(handle)
        event = handle._event
        if event is not None:
            event.set()
        queue = self._queue
        while queue and (self._max_running is None or self._running < self._max_running):
            waiting = queue.popleft()
            if waiting._state is _PENDING:
                waiting._in_queue = False
                self._queued -= 1
                self._launch(waiting)
        if not self._active and self._idle is not None:
            self._idle.set()
            self._idle = None

    # -- cancelling ------------------------------------------------------------------------

    def _cancel_handle(self, handle: TaskHandle[Any]) -> None:
        handle._cancel_requested = True
        self._stop(handle)

    def _stop(self, handle: TaskHandle[Any]) -> None:
        """Cancel one active task: a PENDING one ends now, a RUNNING one at its next checkpoint."""
        if handle._state is _RUNNING:
            scope = handle._scope
            if scope is None:  # launched, not yet run: it will enter this cancelled scope
                scope = handle._scope = trio.CancelScope()
            scope.cancel()
            return
        if getattr(handle, "_in_queue", False):
            handle._in_queue = False
            self._queued -= 1
        else:
            self._waiting -= 1
        self._finish(handle, _CANCELLED, report=True)

    def cancel(self, task_id: str) -> bool:
        """Cancel the active task with this id (in O(1)); False if there is none."""
        n = _task_number(task_id)
        handle = None if n is None else self._active.get(n)
        return handle is not None and handle.cancel()

    def cancel_all(self) -> int:
        """Cancel every unshielded active task; return how many were cancelled.

        Shielded tasks are left running: cancel them one by one with ``handle.cancel()``.
        """
        count = 0
        for handle in tuple(self._active.values()):
            if not handle._shield and not handle._state.done:
                handle._cancel_requested = True
                self._stop(handle)
                count += 1
        return count

    async def wait_idle(self) -> None:
        """Return once no task is active (PENDING or RUNNING).

        New tasks may start right after it returns. Cancelling the caller stops the wait only.
        """
        if not self._active:
            await trio.lowlevel.checkpoint()
            return
        if self._idle is None:
            self._idle = trio.Event()
        await self._idle.wait()

    # -- groups ----------------------------------------------------------------------------

    def open_group(self, name: str) -> TaskGroup:
        """A group of this manager's tasks: ``async with tm.open_group("thumbnails") as g``.

        The block's exit waits for all of the group's tasks; ``await g.wait_all()`` returns their
        results in start order. The tasks run in the manager's nursery and are visible in
        ``active_tasks``.
        """
        return TaskGroup._create(self, name)

    # -- closing ---------------------------------------------------------------------------

    async def _close(self, aborted: bool) -> BaseException | None:
        """Run the close sequence; return an outer ``Cancelled`` caught during the grace period,
        for the caller to re-raise once the nursery has exited."""
        self._closed = True
        started = self._close_started = trio.current_time()
        if self._deferred:
            discarded = self._discard_deferred()
            if discarded:
                self._dropped = [*(self._dropped or ()), *discarded]
        caught: BaseException | None = None
        if self._active and not aborted and self._grace == _INF and not self._shielded:
            # Nothing to cap: the nursery's own exit waits for the tasks (one scheduling pass
            # fewer per request), and an outer cancellation reaches them there directly.
            return None
        if self._active:
            if not aborted:
                try:
                    if self._grace == _INF:
                        await self.wait_idle()
                    else:
                        with trio.move_on_after(self._grace):
                            await self.wait_idle()
                except trio.Cancelled as exc:  # the outer scope was cancelled meanwhile
                    caught = exc
            if self._active:
                with trio.CancelScope(shield=True):
                    finite = math.isfinite(self._grace)
                    begin = started if aborted or finite else trio.current_time()
                    self._shield_deadline = begin + self._shield_timeout
                    for handle in tuple(self._active.values()):
                        if not handle._shield:
                            if not handle._state.done:
                                self._stop(handle)
                        elif handle._scope is not None:
                            handle._scope.deadline = min(
                                handle._scope.deadline, self._shield_deadline
                            )
                    await self.wait_idle()
        return caught

    def _report_close(self) -> None:
        """After the nursery has exited: record the close and log the one report, if any task
        was cancelled by it."""
        started = self._close_started
        ended = trio.current_time()
        self._close_span = (started, ended)
        if self._dropped:
            report = self._report = ShutdownReport(
                manager=self._name,
                duration=ended - started,
                cancelled=tuple(sorted(self._dropped, key=lambda h: h._n)),
            )
            self._dropped = None
            logger.warning("%s", report)


def _task_number(task_id: object) -> int | None:
    if type(task_id) is not str or not task_id.startswith("task-"):
        return None
    digits = task_id[5:]
    return int(digits) if digits.isdigit() else None


_OWN_CODES = frozenset(
    {
        TaskManager._run.__code__,
        TaskManager._attempt.__code__,
        TaskManager._call.__code__,
    }
)


def _strip_own_frames(exc: BaseException) -> None:
    """Drop trio_bg's own frames from the top of a task's traceback.

    The user sees where their function failed, and the traceback holds no frame that refers to
    the handle, so a failed handle is freed by reference counting.
    """
    tb = exc.__traceback__
    while tb is not None and tb.tb_frame.f_code in _OWN_CODES:
        tb = tb.tb_next
    exc.__traceback__ = tb


class ManagerScope:
    """The async context manager returned by :func:`open_task_manager`.

    It owns the manager's nursery: the body runs inside it, the close runs before it exits,
    and the body's exception (or an outer ``Cancelled`` caught during the close) comes out
    unchanged, never wrapped in an exception group.
    """

    __slots__ = ("_manager", "_nursery_cm")

    def __init__(self, manager: TaskManager) -> None:
        self._manager = manager
        self._nursery_cm: AbstractAsyncContextManager[trio.Nursery] | None = None

    async def __aenter__(self) -> TaskManager:
        manager = self._manager
        if self._nursery_cm is not None or manager._closed:
            raise RuntimeError("this open_task_manager() was already entered")
        nursery_cm = trio.open_nursery()
        manager._nursery = await nursery_cm.__aenter__()
        self._nursery_cm = nursery_cm
        return manager

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool:
        nursery_cm = self._nursery_cm
        if nursery_cm is None:
            raise RuntimeError("this open_task_manager() was not entered")
        manager = self._manager
        pending = exc
        try:
            try:
                caught = await manager._close(aborted=exc is not None)
            except BaseException as error:  # KeyboardInterrupt during the close
                await nursery_cm.__aexit__(type(error), error, error.__traceback__)
                raise
            if pending is None:
                pending = caught
            try:
                await nursery_cm.__aexit__(None, None, None)
            except BaseExceptionGroup as group:
                # Tasks stopped by an outer cancellation pass their Cancelled to the nursery,
                # which groups them; the body (or the close) holds that same cancellation
                # unwrapped in ``pending``: raise that instead of the group (or, if the
                # cancellation came while the nursery waited, one of its own Cancelled).
                if not all_cancelled(group):
                    raise
                if pending is None:
                    pending = first_leaf(group)
        finally:
            manager._nursery = None
            manager._report_close()
        if pending is None or pending is exc:
            return False  # the body's own exception, if any, propagates unchanged
        try:
            raise pending
        finally:
            pending = None

    def __enter__(self) -> TaskManager:
        raise TypeError("use 'async with trio_bg.open_task_manager(...)', not 'with'")

    def __exit__(self, *exc_info: object) -> None:  # pragma: no cover - __enter__ always raises
        return None


def open_task_manager(
    name: str = "app",
    *,
    max_running: int | None = None,
    max_pending: int | None = None,
    grace_period: float = 5.0,
    shield_timeout: float = 30.0,
    on_error: ErrorHandler | None = None,
    max_threads: int | None = None,
    recent_limit: int = 100,
) -> ManagerScope:
    """Open a task manager that owns a nursery: ``async with open_task_manager() as tm``.

    Args:
        name: used in logs and the shutdown report.
        max_running: how many tasks may run at once; more wait in PENDING, first in first out.
        max_pending: how many may wait for a running slot; past it a start raises TaskRejected.
        grace_period: on close, seconds to let unshielded tasks finish before cancelling them
            (``math.inf``: wait for them without limit).
        shield_timeout: on close, seconds from its start that shielded tasks may still run.
        on_error: ``handler(handle, exc)``, sync or async, called once per failed task.
        max_threads: how many sync tasks may run in worker threads at once (default: trio's
            process-wide limiter of 40 threads).
        recent_limit: how many finished handles ``recent`` keeps.

    Raises:
        TypeError, ValueError: an option of the wrong kind or value, before anything starts.
    """
    if type(name) is not str:
        raise TypeError(f"task manager name must be a str, got {type(name).__name__}")
    if not name:
        raise ValueError("task manager name must be a non-empty string")
    max_running = check_cap("max_running", max_running, 1)
    max_pending = check_cap("max_pending", max_pending, 0)
    max_threads = check_cap("max_threads", max_threads, 1)
    checked_recent = check_cap("recent_limit", recent_limit, 0)
    if checked_recent is None:
        raise TypeError("recent_limit must be an int, got NoneType")
    grace = check_seconds("grace_period", grace_period, allow_inf=True)
    shield = check_seconds("shield_timeout", shield_timeout, allow_inf=True)
    if math.isfinite(grace) and shield < grace:
        raise ValueError(
            f"shield_timeout ({shield!r}) must be >= grace_period ({grace!r}): "
            "shielded tasks get at least the grace period"
        )
    check_handler("on_error", on_error)
    return ManagerScope(
        TaskManager._create(
            name=name,
            max_running=max_running,
            max_pending=max_pending,
            grace_period=grace,
            shield_timeout=shield,
            on_error=on_error,
            max_threads=max_threads,
            recent_limit=checked_recent,
        )
    )
