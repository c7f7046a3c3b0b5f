"""Nursery ownership and the close policy of a manager.

:class:`TaskManagerContext` is what ``open_task_manager()`` returns: entering it opens the
manager's nursery and registers the manager (for :func:`trio_bg.find_task` and the instruments);
leaving it runs the manager's close (:class:`TaskClosing`: refuse new tasks, the grace period,
cancel, the shield cap, then name the tasks that outlive their cancellation), lets the nursery
exit, and logs the one shutdown report. The close policy is methods of the manager
(``TaskManager`` inherits them), and only they write the manager's close state.
"""

from __future__ import annotations

import math
import threading
from contextlib import AbstractAsyncContextManager
from typing import TYPE_CHECKING, Any, ClassVar, NoReturn, final

import trio

from . import _registry
from ._cancellation import all_cancelled, first_leaf
from ._instruments import call_hooks
from ._lifecycle import TaskLifecycle
from ._log import logger
from ._statistics import CloseDeadlines, ShutdownReport
from ._text import quoted
from ._trio_only import RUN_UNDER_TRIO, require_trio
from ._where import wait_points

if TYPE_CHECKING:
    from types import TracebackType

    from ._handle import TaskHandle
    from ._manager import TaskManager

_INF = math.inf


@final
class TaskManagerContext(AbstractAsyncContextManager["TaskManager"]):
    """The async context manager returned by :func:`trio_bg.open_task_manager`.

    It owns the manager's nursery: the body runs inside it, the close runs before it exits, and
    the body's exception (or an outer ``Cancelled`` caught during the close) comes out unchanged,
    never wrapped in an exception group. Enter it once, with ``async with``.
    """

    __slots__ = ("_manager", "_nursery_cm")

    def __init__(self, manager: TaskManager) -> None:
        self._manager = manager
        self._nursery_cm: AbstractAsyncContextManager[trio.Nursery] | None = None

    async def __aenter__(self) -> TaskManager:
        require_trio(self._manager._trio_advice)
        manager = self._manager
        if self._nursery_cm is not None or manager._closed:
            raise RuntimeError("this open_task_manager() was already entered")
        nursery_cm = trio.open_nursery()
        nursery = await nursery_cm.__aenter__()
        self._nursery_cm = nursery_cm
        manager._nursery_opened(nursery)
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
            manager._nursery_closed()
        if pending is None or pending is exc:
            return False  # the body's own exception, if any, propagates unchanged
        try:
            raise pending
        finally:
            pending = None

    if not TYPE_CHECKING:  # hidden from type checkers, so that `with` is a static error too

        def __enter__(self) -> NoReturn:
            raise TypeError("use 'async with trio_bg.open_task_manager(...)', not 'with'")

        def __getattr__(self, name: str) -> NoReturn:
            # Only reached for a name the context does not have (a manager's, most likely).
            raise AttributeError(
                f"'TaskManagerContext' object has no attribute {name!r}: open_task_manager() "
                "returns an async context manager; the manager is what "
                "'async with trio_bg.open_task_manager() as tm' gives you"
            )

        def __exit__(self, *exc_info: object) -> None:  # pragma: no cover - __enter__ raises
            return None


class TaskClosing(TaskLifecycle):
    """A manager's nursery and close policy: the part of :class:`~trio_bg.TaskManager` that
    opens it, closes it and reports on the close. It writes the close state (``_closed``,
    ``_close_started``, ``_shield_deadline``, ``_close_span``, ``_report``, ``_nursery``,
    ``_thread``); the tables and counters it changes through the lifecycle's transitions.
    """

    __slots__ = (
        "_close_span",
        "_close_started",
        "_closed",
        "_grace",
        "_nursery",
        "_report",
        "_shield_deadline",
        "_shield_timeout",
        "_thread",
    )
    _grace: float
    _shield_timeout: float
    _nursery: trio.Nursery | None
    _closed: bool
    _shield_deadline: float
    _close_started: float
    _close_span: tuple[float, float] | None
    _report: ShutdownReport | None
    _thread: int  # the trio thread's ident: starts from any other thread go through trio

    def _init_closing(self, grace_period: float, shield_timeout: float) -> None:
        """Not yet open (the manager's ``_create`` calls this after ``_init_lifecycle``)."""
        self._grace = grace_period
        self._shield_timeout = shield_timeout
        self._nursery = None
        self._closed = False
        self._shield_deadline = _INF
        self._close_started = 0.0
        self._close_span = self._report = None
        self._thread = threading.get_ident()

    _trio_advice: ClassVar[str] = RUN_UNDER_TRIO
    """What ``trio_bg needs trio, not asyncio`` advises when the manager is entered under another
    event loop (a request manager names the server option)."""
    _thread_advice: ClassVar[str] = ""
    """Appended to the message of a start from a thread trio did not start (a request manager
    names the usual source: a plain ``def`` endpoint)."""

    if TYPE_CHECKING:  # the manager's, used by the close

        def _drop_held(self, *, report: bool) -> list[TaskHandle[Any]]: ...

    @property
    def shutdown_report(self) -> ShutdownReport | None:
        """The report of the close, once the manager has closed."""
        if self._report is None and self._close_span is not None:
            began, ended = self._close_span
            self._report = ShutdownReport(manager=self._name, duration=ended - began, cancelled=())
        return self._report

    def close_deadlines(self) -> CloseDeadlines | None:
        """When a closing manager cancels its unshielded and its shielded tasks (trio's clock);
        None while it is open, or while nothing will cancel them (a request manager whose
        handler returned waits for its tasks until the server cancels the request). Reads
        only: for dashboards and instruments."""
        if not self._closed:
            return None
        if self._grace == _INF and not math.isfinite(self._shield_deadline):
            return None
        began = self._close_started
        if math.isfinite(self._shield_deadline):  # the grace period is over
            return CloseDeadlines(began, trio.current_time(), self._shield_deadline)
        grace = began + self._grace
        cap = began + self._shield_timeout if math.isfinite(grace) else _INF
        return CloseDeadlines(began, grace, cap)

    def _nursery_opened(self, nursery: trio.Nursery) -> None:
        """The manager's nursery is open: note it and the trio thread, register the manager and
        tell the instruments."""
        self._nursery = nursery
        self._thread = threading.get_ident()
        self._refresh_hooks()
        _registry.open_managers.add(self)  # type: ignore[arg-type]  # a TaskManager
        if "manager_opened" in self._hooks:
            call_hooks(self._hooks, self, "manager_opened", self)

    async def _close(self, *, aborted: bool) -> BaseException | None:
        """Run the close sequence; return an outer ``Cancelled`` caught during the grace period,
        for the caller to re-raise once the nursery has exited.

        Order: refuse new starts; cancel the held tasks (named in the report; ``always`` ones
        run); unless ``aborted``, wait up to the grace period; cancel the unshielded tasks; cap
        the shielded ones at ``shield_timeout`` from the start of the close (from the end of an
        infinite grace period, when an outer cancellation ended it); wait for all of them.

        A task that outlives its cancellation by :data:`STUCK_AFTER` seconds (it shields
        itself, or catches ``Cancelled`` and goes on) is logged as stuck, and again every
        :data:`STUCK_INTERVAL` seconds (:meth:`_wait_stuck`). Trio cannot end it: the nursery
        holds it, so the close (and the ``async with``) returns only once it ends.
        """
        self._closed = True
        started = self._close_started = trio.current_time()
        if self._held:
            self._drop_held(report=True)
        if self._services:  # periodic schedules stop at once: the runs they started do not
            for handle in [h for h in self._active.values() if _is_service(h)]:
                self._cancel_task(handle, requested=True)
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
                        await self._wait_logged(started + self._grace, "")
                except trio.Cancelled as exc:  # the outer scope was cancelled meanwhile
                    caught = exc
            if self._active:
                with trio.CancelScope(shield=True):
                    await self._cancel_and_wait(started, aborted)
        return caught

    async def _cancel_and_wait(self, started: float, aborted: bool) -> None:
        """The end of the grace period: cancel the unshielded tasks, cap the shielded ones, and
        wait for them all (shielded by the caller: an outer cancellation does not end it)."""
        finite = math.isfinite(self._grace)
        begin = started if aborted or finite else trio.current_time()
        deadline = self._shield_deadline = begin + self._shield_timeout
        stopped = trio.current_time()
        for handle in tuple(self._active.values()):
            if not handle._shield:
                if not handle._state.done:
                    self._cancel_task(handle, requested=False)
            else:
                scope = handle._scope
                if scope is not None:
                    scope.deadline = min(scope.deadline, deadline)
        if self._shielded:
            await self._wait_logged(deadline, "shielded ")
        await self._wait_stuck(stopped=stopped, capped=deadline)

    async def _wait_logged(self, deadline: float, kind: str) -> None:
        """Wait until no task is active or trio's clock reaches ``deadline``, with an INFO line
        when the wait begins and every :data:`PROGRESS_INTERVAL` seconds naming what it waits
        for, so a shutdown is never silent. Cancellation ends the wait."""
        while self._active:
            now = trio.current_time()
            if now >= deadline:
                return
            waiting = (
                [h for h in self._active.values() if h._shield]
                if kind
                else [*self._active.values()]
            )
            if waiting:
                logger.info(
                    "task manager %s closing: waiting up to %.1f s for %d %stask(s): %s",
                    quoted(self._name), deadline - now, len(waiting), kind, _names(waiting),
                )  # fmt: skip
            with trio.move_on_at(min(deadline, now + PROGRESS_INTERVAL)):
                await self.wait_idle()

    async def _wait_stuck(self, *, stopped: float, capped: float) -> None:
        """Wait for the tasks the close cancelled (the unshielded at ``stopped``, the shielded
        at their cap ``capped``) to end.

        One still alive :data:`STUCK_AFTER` seconds into this wait shields itself or ignores
        cancellation: log one WARNING naming each such task, how long ago it was cancelled and
        where it waits; again every :data:`STUCK_INTERVAL` seconds while any remains. The wait
        has no limit, since trio's nursery waits for the task anyway. It runs shielded: an outer
        cancellation does not end it.
        """
        report_at = trio.current_time() + STUCK_AFTER
        while self._active:
            with trio.move_on_at(report_at):
                await self.wait_idle()
            if not self._active:
                return
            now = trio.current_time()
            points = wait_points(self._nursery)
            stuck: list[str] = []
            for handle in self._active.values():
                since = now - (capped if handle._shield else stopped)
                point = points.get(handle._n)
                where = "" if point is None else point.text
                stuck.append(
                    f"{quoted(handle._name)} ({handle.id}) cancelled {since:.1f} s ago"
                    + (f", waiting in {where}" if where else "")
                )
            logger.warning(
                "task manager %s closing: %d task(s) stuck, still running after they were "
                "cancelled (a task that shields itself or ignores cancellation; the close waits "
                "for it): %s",
                quoted(self._name), len(stuck), "; ".join(stuck),
            )  # fmt: skip
            report_at = now + STUCK_INTERVAL

    def _nursery_closed(self) -> None:
        """After the nursery has exited: record the close, log the report if any task was
        cancelled by it, unregister the manager and tell the instruments."""
        self._nursery = None
        started = self._close_started
        ended = trio.current_time()
        self._close_span = (started, ended)
        dropped = self._take_dropped()
        if dropped:
            report = self._report = ShutdownReport(
                manager=self._name, duration=ended - started, cancelled=tuple(dropped)
            )
            logger.warning("%s", report)
        _registry.open_managers.discard(self)
        if self._recent:
            _registry.finished.extend(self._recent)  # still findable once the manager is gone
        if "manager_closed" in self._hooks:
            call_hooks(self._hooks, self, "manager_closed", self, self.shutdown_report)


PROGRESS_INTERVAL = 2.0
"""Seconds between the INFO lines of a close that waits for tasks."""

STUCK_AFTER = 1.0
"""Seconds a cancelled task gets to end before the close logs it as stuck: a task that reaches
its next checkpoint ends within one scheduling pass, so one second is ample, and short enough for
the line to come before an operator gives up."""
STUCK_INTERVAL = 10.0
"""Seconds between the repeated WARNING lines while stuck tasks remain."""


def _is_service(handle: TaskHandle[Any]) -> bool:
    options = handle._options
    return options is not None and options.service


def _names(handles: list[TaskHandle[Any]], most: int = 5) -> str:
    shown = ", ".join(f"{quoted(h._name)} ({h.id})" for h in handles[:most])
    return shown if len(handles) <= most else f"{shown} and {len(handles) - most} more"
