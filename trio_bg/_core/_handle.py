"""TaskHandle: one task's identity, state and result, awaitable by any number of tasks."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar, final

import outcome
import trio

from ._exceptions import TaskCancelled
from ._state import TaskState, Timing

if TYPE_CHECKING:
    from ._options import TaskOptions
    from ._progress import Progress

T_co = TypeVar("T_co", covariant=True)

ErrorHandler = Callable[["TaskHandle[Any]", BaseException], "Awaitable[None] | None"]
"""``handler(handle, exc)``: called once per failed task; may be sync or async."""


class TaskOwner(Protocol):
    """What a handle knows of the manager that runs it: its name, and the one call a handle
    makes into it (``cancel()`` asks the manager, which owns the task's cancel scope). A
    :class:`~trio_bg.TaskManager` is one; the handle does not import the manager module, so the
    manager can be read and changed without the handle (the import contracts in pyproject.toml).
    """

    @property
    def name(self) -> str: ...

    def _cancel_handle(self, handle: TaskHandle[Any], /) -> None: ...

    def _task_progress(self, handle: TaskHandle[Any], progress: Progress, /) -> None: ...


_now = time.time
# Module constants: reading an Enum member through its class costs ~50 ns (an EnumType lookup).
_PENDING = TaskState.PENDING
_SUCCEEDED = TaskState.SUCCEEDED
_FAILED = TaskState.FAILED


def _timestamp(seconds: float | None) -> datetime | None:
    return None if seconds is None else datetime.fromtimestamp(seconds, UTC)


@final
class TaskHandle(Generic[T_co]):
    """A started task: what it is, where it is in its life, and its result once it has one.

    Handles are made by a :class:`~trio_bg.TaskManager`; they are never constructed by hand. A
    handle holds no reference to its function or arguments once the task has started, and none
    to its manager once the task is done, so finished handles are freed by reference counting.
    """

    # Only what every task needs is set at creation; the rarely used options live in one
    # ``_options`` object (a TaskOptions, or None), and the slots filled on the way (_started,
    # _finished, _result, _attempts, _cancel_requested, _in_queue) are read with a default.
    # Fewer stores and objects per task keep the start -> run -> finish path close to a raw trio
    # task (TaskHandle.__init__ 1.56 -> ~1.0 us when the options moved out; docs/performance.md).
    __slots__ = (
        "_args",
        "_attempts",
        "_cancel_requested",
        "_created",
        "_event",
        "_finished",
        "_fn",
        "_in_queue",
        "_is_async",
        "_manager",
        "_n",
        "_name",
        "_options",
        "_progress",
        "_result",
        "_scope",
        "_shield",
        "_started",
        "_state",
        "_timing",
    )

    _manager: TaskOwner | None
    _n: int
    _name: str
    _fn: Callable[..., Any] | None
    _args: tuple[Any, ...] | None
    _scope: trio.CancelScope | None
    _event: trio.Event | None
    _options: TaskOptions | None
    _started: float
    _finished: float
    # One slot for the result: the value (SUCCEEDED), its outcome.Error (FAILED), or the
    # trio.Cancelled that ended a RUNNING task (CANCELLED; the cause of get()'s TaskCancelled).
    _result: Any
    _attempts: int
    _cancel_requested: bool
    _in_queue: bool
    _progress: Progress

    def __init__(
        self,
        manager: TaskOwner,
        n: int,
        name: str,
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        is_async: bool,
        shield: bool,
        timing: Timing,
        options: TaskOptions | None,
    ) -> None:
        self._manager = manager
        self._n = n
        self._name = name
        self._fn = fn
        self._args = args
        self._is_async = is_async
        self._shield = shield
        self._timing = timing
        self._options = options
        self._state = _PENDING
        self._created = _now()
        self._event = None
        self._scope = None

    # -- identity --------------------------------------------------------------------------

    @property
    def id(self) -> str:
        """Unique in the process: ``"task-<n>"``."""
        return f"task-{self._n}"

    @property
    def number(self) -> int:
        """The ``<n>`` of :attr:`id`, as an int: a cheap key for an instrument's own tables."""
        return self._n

    @property
    def name(self) -> str:
        """The name given at start, or the function's qualified name."""
        return self._name

    @property
    def manager(self) -> TaskOwner | None:
        """The manager that runs the task, while it is active (and during the instruments'
        ``task_finished``); None once it has finished, so a finished handle keeps no manager
        alive. Typed as :class:`TaskOwner` (its ``name``); it is a :class:`~trio_bg.TaskManager`
        (``isinstance`` narrows it)."""
        return self._manager

    @property
    def shielded(self) -> bool:
        """Whether the task was started with ``shield=True``."""
        return self._shield

    @property
    def timing(self) -> Timing:
        """When the task is started relative to its request (IMMEDIATE outside requests)."""
        return self._timing

    @property
    def group(self) -> str | None:
        """The name of the group the task belongs to, if any."""
        options = self._options
        return None if options is None or options.group is None else options.group.name

    @property
    def always(self) -> bool:
        """Started with ``always=True``: a deferred task that runs even if its timing point
        never comes (a request's handler failed or sent a 5xx response)."""
        return self._options is not None and self._options.always

    @property
    def key(self) -> str | None:
        """The de-duplication key given at start, if any."""
        return None if self._options is None else self._options.key

    @property
    def pending_call(self) -> tuple[Callable[..., Any], tuple[Any, ...]] | None:
        """The function and positional arguments the task is to be called with, until its first
        step; None from then on (the handle lets go of them, so a running or finished handle
        keeps no argument alive). An instrument's ``task_created`` can read them (the
        dashboard's opt-in arguments column does)."""
        fn = self._fn
        return None if fn is None or self._args is None else (fn, self._args)

    # -- life ------------------------------------------------------------------------------

    @property
    def state(self) -> TaskState:
        """The current :class:`~trio_bg.TaskState`."""
        return self._state

    @property
    def done(self) -> bool:
        """True once the task is SUCCEEDED, FAILED or CANCELLED."""
        return self._state.done

    @property
    def cancel_requested(self) -> bool:
        """True once this task's cancellation was asked for: its ``cancel()``, the manager's
        ``cancel(id)`` or ``cancel_all()``, or the manager's close. The task may still have
        ended otherwise (it finished first, or it was shielded)."""
        requested: bool = getattr(self, "_cancel_requested", False)
        return requested

    @property
    def attempts(self) -> int:
        """How many times the function has been called (0 before it started; retries count)."""
        # A plain task that ran was called once; only retried or timed tasks count here.
        return getattr(self, "_attempts", 1 if hasattr(self, "_started") else 0)

    @property
    def progress(self) -> Progress | None:
        """What the task last said of how far it is (``trio_bg.report_progress``): a
        :class:`~trio_bg.Progress` with ``fraction``, ``message`` and ``at``; None until it
        says anything. Kept once the task has finished."""
        progress: Progress | None = getattr(self, "_progress", None)
        return progress

    @property
    def created_at(self) -> datetime:
        """When the start was accepted (UTC)."""
        created = _timestamp(self._created)
        assert created is not None
        return created

    @property
    def started_at(self) -> datetime | None:
        """When the task began to run (UTC), or None if it has not (or never will)."""
        return _timestamp(getattr(self, "_started", None))

    @property
    def finished_at(self) -> datetime | None:
        """When the task reached its terminal state (UTC), or None while active."""
        return _timestamp(getattr(self, "_finished", None))

    @property
    def created_time(self) -> float:
        """:attr:`created_at` as seconds since the epoch (``time.time()``), for arithmetic."""
        return self._created

    @property
    def started_time(self) -> float | None:
        """:attr:`started_at` as seconds since the epoch, or None."""
        started: float | None = getattr(self, "_started", None)
        return started

    @property
    def finished_time(self) -> float | None:
        """:attr:`finished_at` as seconds since the epoch, or None while active."""
        finished: float | None = getattr(self, "_finished", None)
        return finished

    @property
    def outcome(self) -> outcome.Outcome[T_co] | None:
        """``outcome.Value`` or ``outcome.Error`` once SUCCEEDED or FAILED; None otherwise.

        Read ``.value`` / ``.error`` on it; do not ``unwrap()`` it, which works only once. A
        SUCCEEDED task's ``Value`` is made on each access (equal, not identical); a FAILED task's
        ``Error`` is always the same object, holding the task's own exception.
        """
        state = self._state
        if state is _SUCCEEDED:
            value: outcome.Outcome[T_co] = outcome.Value(self._result)
            return value
        if state is _FAILED:
            error: outcome.Error = self._result
            return error
        return None

    # -- waiting ---------------------------------------------------------------------------

    async def wait(self) -> None:
        """Return once the task is done, whatever its result.

        Cancelling the caller stops the wait; it does not cancel the task.
        """
        if self._state.done:
            await trio.lowlevel.checkpoint()
            return
        if self._event is None:
            self._event = trio.Event()
        await self._event.wait()

    async def get(self) -> T_co:
        """Wait for the task and return its value, or raise its exception.

        Any number of callers may wait, before or after the task finished; each gets the same
        value or the same exception object. A cancelled or discarded task raises
        :class:`~trio_bg.TaskCancelled`, raised ``from`` the ``trio.Cancelled`` that stopped it
        (its traceback shows where the task was waiting), or from nothing if it never ran.
        Cancelling the caller stops the wait; it does not cancel the task.
        """
        await self.wait()
        state = self._state
        if state is _SUCCEEDED:
            value: T_co = self._result
            return value
        if state is _FAILED:
            raise self._result.error
        cause: BaseException | None = getattr(self, "_result", None)
        raise TaskCancelled(f"task {self._name!r} ({self.id}) was cancelled") from cause

    # -- control ---------------------------------------------------------------------------

    def cancel(self) -> bool:
        """Cancel the task; return False if it was already done.

        A PENDING task ends CANCELLED at once, without running. A RUNNING task is cancelled at
        its next checkpoint, shielded or not (explicit beats implicit), and ends CANCELLED unless
        it returns or raises before reaching one.
        """
        manager = self._manager
        if manager is None or self._state.done:
            return False
        manager._cancel_handle(self)
        return True

    def __repr__(self) -> str:
        return f"<TaskHandle {self.id} {self._name!r} {self._state.value}>"
