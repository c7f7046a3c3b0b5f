"""A task's life in one place: the manager's tables, its counters, and the instrument hooks.

Every transition goes through one method here, which moves the task between tables, updates the
counters and calls the instruments, in that order:

- :meth:`TaskLifecycle._task_created`: a start was accepted; the handle is PENDING.
- :meth:`TaskLifecycle._task_started`: it got a running slot; RUNNING.
- :meth:`TaskLifecycle._task_began`: a RUNNING task's first step (its start time, its scope).
- :meth:`TaskLifecycle._task_attempt` / :meth:`TaskLifecycle._task_retrying`: an attempt
  begins; an attempt failed and will be tried again.
- :meth:`TaskLifecycle._task_finished`: SUCCEEDED, FAILED or CANCELLED with its result, from
  either state.
- :meth:`TaskLifecycle._task_rejected`: a refused start (no handle exists).

Around them, the small steps that move a PENDING handle between the tables (queued, dequeued,
held, released), give a task its cancel scope, and cancel it. After a handle is constructed,
this module is the only one that writes its fields, and the only one that writes the tables and
counters (docs/architecture.md has the table of writers). The counters move only here, so
``started == pending + running + succeeded + failed + cancelled`` holds after every method. The
manager (:mod:`trio_bg._core._manager`) decides *when* a transition happens; the runner
(:mod:`trio_bg._core._runner`) drives a RUNNING task to its end and reports each step here.
"""

from __future__ import annotations

import contextvars
import time
from collections import deque
from typing import TYPE_CHECKING, Any

import trio

from . import _registry
from ._exceptions import TaskRejected
from ._handle import TaskHandle
from ._instruments import NO_HOOKS, Hooks, InstrumentSet, call_hooks, hooks_for
from ._log import logger
from ._state import TaskState
from ._statistics import TaskStatistics

if TYPE_CHECKING:
    from ._progress import Progress

_now = time.time
_PENDING = TaskState.PENDING
_RUNNING = TaskState.RUNNING
_SUCCEEDED = TaskState.SUCCEEDED
_FAILED = TaskState.FAILED
_CANCELLED = TaskState.CANCELLED


class TaskLifecycle:
    """The tables and counters of a manager, and the transitions that keep them exact.

    Tables: ``_active`` (PENDING and RUNNING handles by number, oldest first), ``_queue``
    (PENDING handles waiting for a running slot, FIFO), ``_held`` (PENDING handles held until
    released, e.g. a request's deferred tasks), ``_keys`` (active handle per key), ``_recent``
    (finished handles, bounded), ``_dropped`` (handles the close cancelled, for its report).
    """

    # Slots, not an instance dict with class-level defaults: every attribute read on the task
    # path is a slot read the interpreter specialises.
    __slots__ = (
        "_active",
        "_cancelled",
        "_dropped",
        "_failed",
        "_held",
        "_hooks",
        "_idle",
        "_instruments",
        "_keys",
        "_max_running",
        "_name",
        "_pending",
        "_queue",
        "_queued",
        "_recent",
        "_rejected",
        "_running",
        "_services",
        "_shielded",
        "_started",
        "_succeeded",
    )
    _name: str
    _max_running: int | None
    _active: dict[int, TaskHandle[Any]]
    _queue: deque[TaskHandle[Any]] | None
    _held: dict[int, TaskHandle[Any]] | None
    _keys: dict[str, TaskHandle[Any]] | None
    _recent: deque[TaskHandle[Any]] | None
    _dropped: list[TaskHandle[Any]] | None
    _idle: trio.Event | None
    _shielded: int
    _services: int
    _hooks: Hooks
    _instruments: InstrumentSet | None
    _started: int
    _pending: int
    _queued: int
    _running: int
    _succeeded: int
    _failed: int
    _cancelled: int
    _rejected: int

    def _init_lifecycle(
        self,
        name: str,
        max_running: int | None,
        recent_limit: int,
        instruments: InstrumentSet | None,
    ) -> None:
        """Empty tables and zero counters (the manager's ``_create`` calls this first)."""
        self._name = name
        self._max_running = max_running
        self._active = {}
        self._queue = None if max_running is None else deque()
        self._held = self._keys = self._dropped = self._idle = None
        self._recent = deque(maxlen=recent_limit) if recent_limit else None
        self._hooks = NO_HOOKS
        self._instruments = instruments
        self._started = self._pending = self._queued = self._running = 0
        self._succeeded = self._failed = self._cancelled = self._rejected = self._shielded = 0
        self._services = 0

    def statistics(self) -> TaskStatistics:
        """A frozen snapshot of the counters."""
        return TaskStatistics(
            started=self._started,
            pending=self._pending,
            running=self._running,
            succeeded=self._succeeded,
            failed=self._failed,
            cancelled=self._cancelled,
            rejected=self._rejected,
        )

    # -- the transitions ----------------------------------------------------------------------

    def _task_created(self, handle: TaskHandle[Any], *, running: bool) -> None:
        """A start was accepted: the handle is PENDING and active; with ``running``, it got a
        running slot at once and is RUNNING too (both hooks are called, in order)."""
        self._active[handle._n] = handle
        self._started += 1
        if handle._shield:
            self._shielded += 1
        options = handle._options
        if options is not None:
            if options.key is not None:
                if self._keys is None:
                    self._keys = {}
                self._keys[options.key] = handle
            if options.group is not None:
                options.group._add(handle)
            if options.service:
                self._services += 1
        hooks = self._hooks
        if running and not hooks:
            # Straight to RUNNING: with no instrument to see it, the PENDING step is only two
            # counter updates that cancel out.
            handle._state = _RUNNING
            self._running += 1
            return
        self._pending += 1
        if "task_created" in hooks:
            call_hooks(hooks, self, "task_created", handle)
        if running:
            self._task_started(handle)

    def _task_started(self, handle: TaskHandle[Any]) -> None:
        """A PENDING handle got its running slot: it is RUNNING."""
        handle._state = _RUNNING
        self._pending -= 1
        self._running += 1
        if "task_started" in self._hooks:
            call_hooks(self._hooks, self, "task_started", handle)

    def _task_retrying(self, handle: TaskHandle[Any], exc: BaseException, delay: float) -> None:
        """A RUNNING task's attempt failed; the next one begins in ``delay`` seconds."""
        options = handle._options
        attempts = (
            options.retry.attempts if options is not None and options.retry is not None else 0
        )
        logger.info(
            "task %r (%s) attempt %d of %d failed with %r; retrying in %.3g s",
            handle._name, handle.id, handle.attempts, attempts, exc, delay,
        )  # fmt: skip
        if "task_retrying" in self._hooks:
            call_hooks(self._hooks, self, "task_retrying", handle, exc, delay)

    def _task_began(self, handle: TaskHandle[Any]) -> bool:
        """A RUNNING task takes its first step: the runner holds its function and arguments
        now, so the handle lets go of them; a plain task gets its cancel scope here (not at
        launch: tasks waiting in trio's run queue hold no scope, docs/performance.md). Returns
        whether its function is to be called: False for a task whose scope was cancelled before
        this step (cancelled before it ran, or shielded and past the shield cap); True, with
        its start time noted, otherwise."""
        handle._fn = handle._args = None
        scope = handle._scope
        if scope is None:
            handle._scope = trio.CancelScope()
        elif scope.cancel_called:
            return False
        handle._started = _now()
        return True

    def _task_attempt(self, handle: TaskHandle[Any], attempt: int) -> None:
        """Attempt number ``attempt`` of a timed or retried task begins (1 for the first)."""
        handle._attempts = attempt

    def _task_scope(self, handle: TaskHandle[Any], scope: trio.CancelScope) -> trio.CancelScope:
        """The task runs in ``scope`` from now on: a shielded task's (made at launch, for the
        close to cap it) or the one its error handler runs in. Returns ``scope``."""
        handle._scope = scope
        return scope

    def _cancel_task(self, handle: TaskHandle[Any], *, requested: bool) -> None:
        """Cancel one active task: a PENDING one ends CANCELLED now, a RUNNING one at its next
        checkpoint (a launched task that has not run yet enters its scope already cancelled).

        ``requested``: somebody asked (``handle.cancel()``, ``cancel(id)``, ``cancel_all()``),
        so the shutdown report does not name it; the close cancels with ``requested=False``.
        """
        if requested:
            handle._cancel_requested = True
        if handle._state is _RUNNING:
            scope = handle._scope
            if scope is None:
                scope = handle._scope = trio.CancelScope()
            scope.cancel()
            return
        self._task_finished(handle, _CANCELLED, None, True)

    def _task_progress(self, handle: TaskHandle[Any], progress: Progress) -> None:
        """A RUNNING task reported how far it is (``trio_bg.report_progress``)."""
        if handle._state is not _RUNNING:
            return  # a report from a task's leftover child after it ended: nothing to update
        handle._progress = progress
        if "task_progress" in self._hooks:
            call_hooks(self._hooks, self, "task_progress", handle)

    def _task_finished(
        self, handle: TaskHandle[Any], state: TaskState, result: Any, report: bool
    ) -> None:
        """Move an active handle to its terminal ``state`` with its ``result`` (the value, an
        ``outcome.Error``, the ``trio.Cancelled`` that stopped a RUNNING task, or None) and out
        of every table.

        ``report``: a CANCELLED task that nobody asked to cancel (the close or an outer
        cancellation did) is named in the shutdown report. The handle lets go of its function,
        scope and manager, so a finished handle holds no reference cycle and is freed by
        reference counting alone (once it leaves the histories). Arguments by position: this is
        called once per task, and keywords would cost it (docs/performance.md).
        """
        if handle._state is _RUNNING:
            self._running -= 1
        else:
            self._pending_finished(handle)
        handle._result = result
        handle._state = state
        handle._finished = _now()
        handle._scope = None
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
        options = handle._options
        if options is not None:
            options.context = None
            key = options.key
            keys = self._keys
            if key is not None and keys is not None and keys.get(key) is handle:
                del keys[key]
            if options.group is not None:
                options.group._task_done()
            if options.service:
                self._services -= 1
        recent = self._recent
        if recent is not None:
            recent.append(handle)  # handed to the process-wide history when the manager closes
        else:
            # Kept once, not twice: a handle held by a second, longer history survives more
            # young collections and is promoted.
            _registry.finished.append(handle)
        event = handle._event
        if event is not None:
            event.set()
        if "task_finished" in self._hooks:
            call_hooks(self._hooks, self, "task_finished", handle)
        handle._manager = None  # after the hooks, which may still ask for it
        if self._queued:
            self._fill_slots()
        if not self._active and self._idle is not None:
            self._idle.set()
            self._idle = None

    def _pending_finished(self, handle: TaskHandle[Any]) -> None:
        """The part of :meth:`_task_finished` for a task that ends PENDING (cancelled before it
        ran): out of the queue or the held gate, and its function let go."""
        self._pending -= 1
        if getattr(handle, "_in_queue", False):
            handle._in_queue = False
            self._queued -= 1
            queue = self._queue
            if queue is not None and len(queue) > 2 * self._queued + 64:
                # Cancelled entries are skipped when their turn comes; once they outnumber the
                # live ones, drop them, so a cancelled queued handle is not kept alive by the
                # queue (amortised O(1) per cancel).
                self._queue = deque(h for h in queue if h._in_queue)
        held = self._held
        if held is not None:
            held.pop(handle._n, None)
        handle._fn = handle._args = None  # it never ran (one that ran let go at _task_began)

    def _task_rejected(self, name: str, reason: str, message: str) -> TaskRejected:
        """Count a refused start and return the exception for the caller to raise."""
        self._rejected += 1
        if "task_rejected" in self._hooks:
            call_hooks(self._hooks, self, "task_rejected", self, name, reason)
        return TaskRejected(message)

    # -- the queue and the held gate -----------------------------------------------------------

    def _task_queued(self, handle: TaskHandle[Any]) -> None:
        """A PENDING handle waits in the FIFO queue for a running slot."""
        queue = self._queue
        assert queue is not None  # only a manager with max_running queues
        handle._in_queue = True
        queue.append(handle)
        self._queued += 1

    def _next_queued(self) -> TaskHandle[Any] | None:
        """The oldest handle still waiting in the queue, taken out of it; None if none is."""
        queue = self._queue
        while queue:
            waiting = queue.popleft()
            if waiting._state is _PENDING and waiting._in_queue:
                waiting._in_queue = False
                self._queued -= 1
                return waiting
        return None

    def _task_held(self, handle: TaskHandle[Any]) -> None:
        """A PENDING handle is held until released (a request's deferred task)."""
        if self._held is None:
            self._held = {}
        self._held[handle._n] = handle

    def _task_released(self, handle: TaskHandle[Any]) -> bool:
        """Take a handle out of the held gate; False if it was not held."""
        held = self._held
        return held is not None and held.pop(handle._n, None) is not None

    def _take_held(self) -> list[TaskHandle[Any]]:
        """Every handle still held, oldest first; the gate is empty (and closed) after this."""
        held, self._held = self._held, None
        return [] if held is None else [*held.values()]

    def _take_context(self, handle: TaskHandle[Any]) -> contextvars.Context | None:
        """The context a task started later runs in (its starter's), taken from its options;
        options that carried nothing else are let go."""
        options = handle._options
        if options is None or options.context is None:
            return None
        context, options.context = options.context, None
        if options.spent():
            handle._options = None
        return context

    def _take_dropped(self) -> list[TaskHandle[Any]]:
        """The handles the close cancelled, in task order, for its report; the list is empty
        after this."""
        dropped, self._dropped = self._dropped, None
        return [] if dropped is None else sorted(dropped, key=_number)

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

    def _refresh_hooks(self) -> None:
        """Rebuild the hook table from the instruments (at open, and when they change)."""
        self._hooks = hooks_for(self._instruments)

    def _fill_slots(self) -> None:
        """Launch queued tasks while running slots are free (the manager's scheduling)."""
        raise NotImplementedError


def _number(handle: TaskHandle[Any]) -> int:
    return handle._n
