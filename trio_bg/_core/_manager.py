"""TaskManager: named background tasks in a nursery, with exact accounting and a close policy.

Data flows one way: a start is validated, makes a :class:`~trio_bg.TaskHandle` (PENDING), which
runs at once, waits in the FIFO queue for a running slot, or is held until released; a RUNNING
handle runs in the manager's nursery (:mod:`trio_bg._core._runner`) and ends in exactly one terminal
state with its result captured. Every transition and counter update is in
:mod:`trio_bg._core._lifecycle`; the close is in :mod:`trio_bg._core._closing`.
"""

from __future__ import annotations

import contextvars
import functools
import inspect
import itertools
import math
import threading
import types
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from typing import TYPE_CHECKING, Any, Literal, NoReturn, Self, Unpack, cast

import outcome
import trio

from . import _registry
from ._callables import check_arguments, is_async_callable, reject_non_function
from ._checks import check_cap, check_count, check_handler, check_name, check_seconds
from ._closing import TaskClosing, TaskManagerContext
from ._exceptions import TaskRejected
from ._group import TaskGroup
from ._handle import ErrorHandler, TaskHandle
from ._instruments import Instrument, InstrumentSet
from ._options import TaskOptions
from ._periodic import run_schedule
from ._retry import Retry
from ._runner import run_task
from ._schedule import make_schedule
from ._starter import PosArgsT, TaskStarter, task_options
from ._state import TaskState, Timing
from ._where import WaitPoint, wait_points

_task_numbers = itertools.count(1)
_get_ident = threading.get_ident
_CO_COROUTINE = inspect.CO_COROUTINE
_CO_GENERATORS = inspect.CO_GENERATOR | inspect.CO_ASYNC_GENERATOR
_FunctionType = types.FunctionType
_CANCELLED = TaskState.CANCELLED
_IMMEDIATE = Timing.IMMEDIATE


class TaskManager(TaskClosing, TaskStarter):
    """Runs named background tasks in a nursery it owns; reachable only through
    ``async with trio_bg.open_task_manager() as tm`` (or, in an ASGI app, ``app_tasks(scope)``
    and ``request_tasks(scope)``).

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

    Not constructed by hand; subclassed only by the ASGI request manager.
    """

    __slots__ = ("_limiter", "_max_pending", "_max_tasks", "_on_error")
    _max_pending: int | None
    _max_tasks: int | None
    _on_error: ErrorHandler | None
    _limiter: trio.CapacityLimiter | None

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
        instruments: InstrumentSet | None = None,
    ) -> Self:
        self = object.__new__(cls)
        self._init_lifecycle(name, max_running, recent_limit, instruments)
        self._init_closing(grace_period, shield_timeout)
        self._max_pending = max_pending
        self._max_tasks = max_tasks
        self._on_error = on_error
        self._limiter = None if max_threads is None else trio.CapacityLimiter(max_threads)
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
    def grace_period(self) -> float:
        """Seconds its close waits for unshielded tasks (``inf`` for a request manager, which
        waits until the server cancels the request)."""
        return self._grace

    @property
    def shield_timeout(self) -> float:
        """Seconds its close gives shielded tasks after the grace period."""
        return self._shield_timeout

    def wait_points(self) -> dict[int, WaitPoint]:
        """Where each RUNNING task waits now, by task number (``handle.number``): its ``await``
        chain, the line of its own code it waits at, and a one-line form for logs. Read when
        asked, by walking the tasks' coroutines (the task path records nothing for it): meant
        for dashboards, logs and people, not for a hot loop. Reads only."""
        return wait_points(self._nursery)

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

    def get(self, task_id: str) -> TaskHandle[Any] | None:
        """The handle of an active or recently finished task of this manager, or None."""
        n = _registry.task_number(task_id)
        return None if n is None else self._find(n)

    def _find(self, n: int) -> TaskHandle[Any] | None:
        """Task number ``n`` among the active tasks, then in ``recent``."""
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
            f"pending={self._pending} closed={self._closed}>"
        )

    if not TYPE_CHECKING:  # a clear message at run time; a type checker reports the attribute
        # (Properties, not __getattr__: a class with __getattr__ sends every attribute read of
        # its instances down the slow generic path; docs/performance.md.)

        @property
        def after_route(self) -> NoReturn:
            raise self._no_timing_points("after_route")

        @property
        def after_response(self) -> NoReturn:
            raise self._no_timing_points("after_response")

        def _no_timing_points(self, name: str) -> RuntimeError:
            return RuntimeError(
                f"task manager {self._name!r} has no timing points: {name} tasks belong "
                "to a request manager (trio_bg.asgi.request_tasks(scope))"
            )

    # -- starting --------------------------------------------------------------------------

    def _spawn(
        self,
        method: str,
        name: str,
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        shield: bool,
        options: TaskOptions | None,
        timing: Timing = _IMMEDIATE,
        group: TaskGroup | None = None,
        held: bool = False,
    ) -> TaskHandle[Any]:
        """Validate a start, make its handle, and launch, queue or hold it.

        ``timing``, ``group`` and ``held`` are given by keyword (they are not keyword-only:
        keyword-only defaults cost time on the plain path, which passes none).

        ``held``: the task stays PENDING until :meth:`_release` (or ends CANCELLED at
        :meth:`_drop_held` unless ``always``); a request's deferred tasks are held this way.
        """
        if _get_ident() != self._thread:  # a worker thread: start it in the trio thread
            return self._spawn_from_thread(
                method, name, fn, args, shield, options, timing, group, held
            )
        # Validate everything before anything is created: a refusal starts nothing.
        # A plain function's code is read once; anything else takes the careful path.
        code = fn.__code__ if type(fn) is _FunctionType else None
        flags = _CO_GENERATORS if code is None else code.co_flags
        if flags & _CO_GENERATORS:
            reject_non_function(method, fn)
            is_async = is_async_callable(fn)
        else:
            is_async = flags & _CO_COROUTINE != 0
        if type(name) is not str or not name:
            check_name("task name", name)
        if shield is not False and shield is not True:  # two identity tests: the cheapest check
            raise TypeError(f"shield must be a bool, got {type(shield).__name__}")
        # The arguments must fit at the call, as with a direct call: a plain function whose
        # positional parameters they fill exactly needs no more than these two comparisons;
        # anything else (defaults, *args, keywords, methods, partials) gets the full check.
        if code is None or len(args) != code.co_argcount or code.co_kwonlyargcount:
            check_arguments(method, name, fn, args)
        if options is not None:
            options.validate()
        if group is not None:
            group._check_open(name)
        if options is not None and options.key is not None and self._keys is not None:
            existing = self._keys.get(options.key)
            if existing is not None:
                return existing
        if self._closed:
            raise self._refusal(name, "closed")
        if self._max_tasks is not None and self._started >= self._max_tasks:
            raise self._refusal(name, "max_tasks")
        must_queue = (
            not held and self._max_running is not None and self._running >= self._max_running
        )
        if must_queue and self._max_pending is not None and self._queued >= self._max_pending:
            raise self._refusal(name, "max_pending")
        if group is not None or held or must_queue:
            return self._spawn_later(name, fn, args, is_async, shield, options, timing, group, held)
        handle: TaskHandle[Any] = TaskHandle(
            self, next(_task_numbers), name, fn, args, is_async, shield, timing, options
        )
        self._task_created(handle, running=True)
        if options is None and not shield:  # the common task, inline: one call fewer
            nursery = self._nursery
            assert nursery is not None
            nursery.start_soon(run_task, self, handle, name=name)
        else:
            self._spawn_in_nursery(handle)
        return handle

    def _refusal(self, name: str, reason: str) -> TaskRejected:
        """Count a refused start (``reason``: closed, max_tasks, max_pending) and return the
        exception to raise."""
        if reason == "closed":
            message = f"task manager {self._name!r} is closed to new tasks"
        elif reason == "max_tasks":
            message = f"task manager {self._name!r} reached its cap of {self._max_tasks} tasks"
        else:
            message = (
                f"task manager {self._name!r} has {self._queued} pending tasks "
                f"(max_pending={self._max_pending})"
            )
        return self._task_rejected(name, reason, message)

    def _spawn_later(
        self,
        name: str,
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        is_async: bool,
        shield: bool,
        options: TaskOptions | None,
        timing: Timing,
        group: TaskGroup | None,
        held: bool,
    ) -> TaskHandle[Any]:
        """The rest of a validated start whose task is in a group, held or queued: the options
        carry the group and, for a task that starts later, the starter's context."""
        if options is None:
            options = TaskOptions()
        options.group = group
        later = held or (self._max_running is not None and self._running >= self._max_running)
        if later:
            # A task started later, from another task, keeps the starter's context.
            options.context = contextvars.copy_context()
        handle: TaskHandle[Any] = TaskHandle(
            self, next(_task_numbers), name, fn, args, is_async, shield, timing, options
        )
        self._task_created(handle, running=not later)
        if held:
            self._task_held(handle)
        elif later:
            self._task_queued(handle)
        else:
            self._spawn_in_nursery(handle)
        return handle

    if TYPE_CHECKING:

        def _start(
            self,
            method: str,
            name: str,
            fn: Callable[..., Any],
            args: tuple[Any, ...],
            shield: bool,
            options: TaskOptions | None,
        ) -> TaskHandle[Any]: ...

    else:
        # The public starts call _spawn directly: one Python call fewer per task than a _start
        # that calls _spawn (~0.1 us, timeit).
        _start = _spawn

    def _spawn_from_thread(
        self,
        method: str,
        name: str,
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        shield: bool,
        options: TaskOptions | None,
        timing: Timing,
        group: TaskGroup | None,
        held: bool,
    ) -> TaskHandle[Any]:
        """A start from another thread: done in the manager's trio thread, if this thread is one
        that trio started (``trio.to_thread.run_sync``: a plain ``def`` endpoint of an ASGI
        framework, for one), and refused otherwise, before anything is created or counted."""

        def start() -> outcome.Outcome[TaskHandle[Any]]:
            return outcome.capture(
                self._spawn, method, name, fn, args, shield, options, timing, group, held
            )

        try:
            # The start's own errors come back captured; a RuntimeError here is trio's: this
            # thread has no trio run to reach.
            result = trio.from_thread.run_sync(start)
        except RuntimeError:
            if inspect.iscoroutine(fn):
                fn.close()  # no "never awaited" warning for a refused coroutine object
            raise RuntimeError(
                f"{method}() was called from a thread that trio did not start (or after its "
                "trio run ended): call it in the trio thread, or in a function that "
                f"trio.to_thread.run_sync runs{self._thread_advice}"
            ) from None
        return result.unwrap()

    # -- the held gate ---------------------------------------------------------------------

    def _release(self, handle: TaskHandle[Any]) -> None:
        """Let a held handle go: it runs now, or queues for a running slot."""
        if self._task_released(handle):
            self._schedule(handle)

    def _drop_held(self, *, report: bool) -> list[TaskHandle[Any]]:
        """Settle every handle still held: ``always`` ones are released, the others end
        CANCELLED (with ``report``, named in the shutdown report). Returns the handles that
        were cancelled, oldest first."""
        dropped: list[TaskHandle[Any]] = []
        for handle in self._take_held():
            if handle._options is not None and handle._options.always:
                self._schedule(handle)
            else:
                dropped.append(handle)
                self._task_finished(handle, _CANCELLED, None, report)
        return dropped

    # -- scheduling ------------------------------------------------------------------------

    def _schedule(self, handle: TaskHandle[Any]) -> None:
        """Launch a PENDING handle now, or queue it for a running slot."""
        if self._max_running is not None and self._running >= self._max_running:
            self._task_queued(handle)
        else:
            self._launch(handle)

    def _fill_slots(self) -> None:
        while self._max_running is None or self._running < self._max_running:
            waiting = self._next_queued()
            if waiting is None:
                return
            self._launch(waiting)

    def _launch(self, handle: TaskHandle[Any]) -> None:
        """Give a PENDING handle a running slot and spawn it in the nursery."""
        self._task_started(handle)
        self._spawn_in_nursery(handle)

    def _spawn_in_nursery(self, handle: TaskHandle[Any]) -> None:
        nursery = self._nursery
        assert nursery is not None
        if handle._shield:
            # A shielded task's scope exists from launch, for the close to cap it. Others get
            # theirs when they first run (or when cancelled before that).
            scope = self._task_scope(handle, trio.CancelScope(shield=True))
            scope.deadline = self._shield_deadline
        context = self._take_context(handle)
        if context is None:
            nursery.start_soon(run_task, self, handle, name=handle._name)
        else:
            context.run(self._start_in, nursery, handle)

    def _start_in(self, nursery: trio.Nursery, handle: TaskHandle[Any]) -> None:
        nursery.start_soon(run_task, self, handle, name=handle._name)

    # -- cancelling ------------------------------------------------------------------------

    def _cancel_handle(self, handle: TaskHandle[Any]) -> None:
        self._cancel_task(handle, requested=True)

    def cancel(self, task_id: str) -> bool:
        """Cancel the active task with this id (in O(1)); False if there is none."""
        n = _registry.task_number(task_id)
        handle = None if n is None else self._active.get(n)
        return handle is not None and handle.cancel()

    def cancel_all(self) -> int:
        """Cancel every unshielded active task; return how many were cancelled.

        Shielded tasks are left running: cancel them one by one with ``handle.cancel()``.
        """
        count = 0
        for handle in tuple(self._active.values()):
            if not handle._shield and not handle._state.done:
                self._cancel_task(handle, requested=True)
                count += 1
        return count

    # -- groups ----------------------------------------------------------------------------

    def open_group(self, name: str) -> TaskGroup:
        """A group of this manager's tasks: ``async with tm.open_group("thumbnails") as g``.

        The block's exit waits for all of the group's tasks; ``await g.wait_all()`` returns their
        results in start order. The tasks run in the manager's nursery and are visible in
        ``active_tasks``.
        """
        return TaskGroup._create(self, name)

    # -- periodic tasks --------------------------------------------------------------------

    def start_periodic_named(
        self,
        name: str,
        fn: Callable[[Unpack[PosArgsT]], Awaitable[Any]] | Callable[[Unpack[PosArgsT]], Any],
        *args: Unpack[PosArgsT],
        every: float | None = None,
        cron: str | None = None,
        tz: str | None = None,
        overlap: Literal["skip", "allow"] = "skip",
        shield: bool = False,
        timeout: float | None = None,
        retry: Retry | None = None,
        on_error: ErrorHandler | None = None,
    ) -> TaskHandle[None]:
        """Run ``fn(*args)`` periodically in this process: ``every=30`` seconds, or at the
        instants of ``cron="0 3 * * *"`` in time zone ``tz`` (default UTC; the ``cron`` extra).

        Each run is a task of its own called ``name``, started with ``shield``, ``timeout``,
        ``retry`` and ``on_error`` as a start would be. ``every`` counts from now (the first run
        ``every`` seconds after this call); with ``overlap="skip"`` an instant that comes while
        the previous run is still active is skipped. This schedule is per process: N Hypercorn
        workers run it N times (a durable queue's ``@queue.periodic`` runs each instant once).

        Returns the schedule's own handle (a task called ``"<name> (every 30 s)"``): cancelling
        it stops the schedule; a run already started goes on. The manager's close stops its
        schedules first, and its shutdown report does not name them.

        Raises:
            TypeError, ValueError: a wrong schedule (neither or both of ``every`` and ``cron``,
                a bad expression or zone), a bad option or arguments ``fn`` cannot take; nothing
                is started.
            RuntimeError: ``cron`` without the cronsim package.
            TaskRejected: the manager is closed.
        """
        method = "start_periodic_named"
        check_name("task name", name)
        schedule = make_schedule(every, cron, tz)
        if overlap not in ("skip", "allow"):
            raise ValueError(f"overlap must be 'skip' or 'allow', got {overlap!r}")
        if type(fn) is not _FunctionType or fn.__code__.co_flags & _CO_GENERATORS:
            reject_non_function(method, fn)
        check_arguments(method, name, fn, args)
        if shield is not False and shield is not True:
            raise TypeError(f"shield must be a bool, got {type(shield).__name__}")
        given = timeout is not None or retry is not None or on_error is not None
        if given:
            task_options(timeout, retry, on_error, None, False).validate()

        def options() -> TaskOptions | None:
            return task_options(timeout, retry, on_error, None, False) if given else None

        body = functools.partial(
            run_schedule, self, name=name, fn=fn, args=args, schedule=schedule,
            overlap=overlap, shield=shield, options=options,
        )  # fmt: skip
        service = TaskOptions()
        service.service = True
        return self._spawn(method, f"{name} ({schedule.describe()})", body, (), False, service)


def check_instruments(instruments: object) -> InstrumentSet | None:
    """The instruments option: an iterable of :class:`trio_bg.Instrument` (exact messages)."""
    if isinstance(instruments, Instrument) or not isinstance(instruments, Iterable):
        raise TypeError(
            "instruments must be an iterable of trio_bg.Instrument, "
            f"got {type(instruments).__name__}"
        )
    found = InstrumentSet(cast("Iterable[Instrument]", instruments))
    return found or None


def create_manager(
    *,
    name: str,
    max_running: int | None,
    max_pending: int | None,
    grace_period: float,
    shield_timeout: float,
    on_error: ErrorHandler | None,
    recent_limit: int,
    instruments: InstrumentSet | None,
    max_threads: int | None = None,
) -> TaskManager:
    """A manager, not yet open, from options already checked: what
    :func:`open_task_manager` opens, and the ASGI layer's app manager (``TaskMiddleware``
    checks its options when it is made; its manager shares one :class:`InstrumentSet` with
    its request managers). ``TaskManagerContext(manager)`` opens it.
    """
    return TaskManager._create(
        name=name,
        max_running=max_running,
        max_pending=max_pending,
        grace_period=grace_period,
        shield_timeout=shield_timeout,
        on_error=on_error,
        max_threads=max_threads,
        recent_limit=recent_limit,
        instruments=instruments,
    )


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
    instruments: Iterable[Instrument] = (),
) -> TaskManagerContext:
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
        instruments: :class:`trio_bg.Instrument` objects for this manager only, called after
            the process-wide ones (:func:`trio_bg.add_instrument`).

    Raises:
        TypeError, ValueError: an option of the wrong kind or value, before anything starts.
    """
    check_name("task manager name", name)
    max_running = check_cap("max_running", max_running, 1)
    max_pending = check_cap("max_pending", max_pending, 0)
    max_threads = check_cap("max_threads", max_threads, 1)
    checked_recent = check_count("recent_limit", recent_limit, 0)
    grace = check_seconds("grace_period", grace_period, allow_inf=True)
    shield = check_seconds("shield_timeout", shield_timeout, allow_inf=True)
    if math.isfinite(grace) and shield < grace:
        raise ValueError(
            f"shield_timeout ({shield!r}) must be >= grace_period ({grace!r}): "
            "shielded tasks get at least the grace period"
        )
    check_handler("on_error", on_error)
    return TaskManagerContext(
        create_manager(
            name=name,
            max_running=max_running,
            max_pending=max_pending,
            grace_period=grace,
            shield_timeout=shield,
            on_error=on_error,
            max_threads=max_threads,
            recent_limit=checked_recent,
            instruments=check_instruments(instruments),
        )
    )
