"""A task's life in one place: the manager's tables, its counters, and the instrument hooks.

Every transition goes through one method here, which moves the task between tables, updates the
counters and calls the instruments, in that order:

- :meth:`TaskLifecycle._task_created`: a start was accepted; the handle is PENDING.
- :meth:`TaskLifecycle._task_started`: it got a running slot; RUNNING.
- :meth:`TaskLifecycle._task_retrying`: an attempt failed and will be tried again.
- :meth:`TaskLifecycle._task_finished`: SUCCEEDED, FAILED or CANCELLED, from either state.
- :meth:`TaskLifecycle._task_rejected`: a refused start (no handle exists).

The counters move only here, so ``started == pending + running + succeeded + failed + cancelled``
holds after every method. The manager (:mod:`trio_bg._core._manager`) decides *when* a transition
happens; the runner (:mod:`trio_bg._core._runner`) drives a RUNNING task to its end.
"""

from __future__ import annotations

import time
from collections import deque
from typing import Any

import trio

from . import _registry
from ._exceptions import TaskRejected
from ._handle import TaskHandle
from ._instruments import NO_HOOKS, Hooks, InstrumentSet, call_hooks
from ._log import logger
from ._state import TaskState
from ._statistics import TaskStatistics

_now = time.time
_PENDING = TaskState.PENDING
_RUNNING = TaskState.RUNNING
_SUCCEEDED = TaskState.SUCCEEDED
_FAILED = TaskState.FAILED


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

    def _task_finished(self, handle: TaskHandle[Any], state: TaskState, *, report: bool) -> None:
        """Move an active handle to its terminal ``state`` and out of every table.

        ``report``: a CANCELLED task that nobody asked to cancel (the close or an outer
        cancellation did) is named in the shutdown report. The handle lets go of its function,
        scope and manager, so a finished handle holds no reference cycle and is freed by
        reference counting alone (once it leaves the histories).
        """
        if handle._state is _RUNNING:
            self._running -= 1
        else:
            self._pending_finished(handle)
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
        handle._fn = handle._args = None  # it never ran (the runner lets go of them itself)

    def _task_rejected(self, name: str, reason: str, message: str) -> TaskRejected:
        """Count a refused start and return the exception for the caller to raise."""
        self._rejected += 1
        if "task_rejected" in self._hooks:
            call_hooks(self._hooks, self, "task_rejected", self, name, reason)
        return TaskRejected(message)

    def _fill_slots(self) -> None:
        """Launch queued tasks while running slots are free (the manager's scheduling)."""
        raise NotImplementedError
