"""Nursery ownership and the close policy of a manager.

:class:`TaskManagerContext` is what ``open_task_manager()`` returns: entering it opens the
manager's nursery and registers the manager (for :func:`trio_bg.find_task` and the instruments);
leaving it runs :func:`close` (refuse new tasks, the grace period, cancel, the shield cap, then
name the tasks that outlive their cancellation), lets the nursery exit, and logs the one shutdown
report.
"""

from __future__ import annotations

import math
import threading
from contextlib import AbstractAsyncContextManager
from typing import TYPE_CHECKING, Any, NoReturn, final

import trio

from . import _registry
from ._cancellation import all_cancelled, first_leaf
from ._instruments import call_hooks, hooks_for
from ._log import logger
from ._statistics import CloseDeadlines, ShutdownReport
from ._text import quoted
from ._trio_only import require_trio
from ._where import chain_text, task_coroutines

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
        require_trio()
        manager = self._manager
        if self._nursery_cm is not None or manager._closed:
            raise RuntimeError("this open_task_manager() was already entered")
        nursery_cm = trio.open_nursery()
        manager._nursery = await nursery_cm.__aenter__()
        self._nursery_cm = nursery_cm
        opened(manager)
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
                caught = await close(manager, aborted=exc is not None)
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
            closed(manager)
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


def opened(manager: TaskManager) -> None:
    """A manager's nursery is open: register it and tell the instruments."""
    manager._thread = threading.get_ident()  # the trio thread it runs in
    manager._hooks = hooks_for(manager._instruments)
    _registry.open_managers.add(manager)
    if "manager_opened" in manager._hooks:
        call_hooks(manager._hooks, manager, "manager_opened", manager)


async def close(manager: TaskManager, *, aborted: bool) -> BaseException | None:
    """Run the close sequence; return an outer ``Cancelled`` caught during the grace period,
    for the caller to re-raise once the nursery has exited.

    Order: refuse new starts; cancel the held tasks (named in the report; ``always`` ones run);
    unless ``aborted``, wait up to the grace period; cancel the unshielded tasks; cap the
    shielded ones at ``shield_timeout`` from the start of the close (from the end of an infinite
    grace period, when an outer cancellation ended it); wait for all of them.

    A task that outlives its cancellation by :data:`STUCK_AFTER` seconds (it shields itself, or
    catches ``Cancelled`` and goes on) is logged as stuck, and again every
    :data:`STUCK_INTERVAL` seconds (:func:`_wait_stuck`). Trio cannot end it: the nursery holds
    it, so the close (and the ``async with``) returns only once it ends.
    """
    manager._closed = True
    started = manager._close_started = trio.current_time()
    if manager._held:
        dropped = manager._drop_held()
        if dropped:
            manager._dropped = [*(manager._dropped or ()), *dropped]
    caught: BaseException | None = None
    if manager._active and not aborted and manager._grace == _INF and not manager._shielded:
        # Nothing to cap: the nursery's own exit waits for the tasks (one scheduling pass fewer
        # per request), and an outer cancellation reaches them there directly.
        return None
    if manager._active:
        if not aborted:
            try:
                if manager._grace == _INF:
                    await manager.wait_idle()
                else:
                    await _wait_logged(manager, started + manager._grace, "")
            except trio.Cancelled as exc:  # the outer scope was cancelled meanwhile
                caught = exc
        if manager._active:
            with trio.CancelScope(shield=True):
                finite = math.isfinite(manager._grace)
                begin = started if aborted or finite else trio.current_time()
                deadline = manager._shield_deadline = begin + manager._shield_timeout
                stopped = trio.current_time()
                for handle in tuple(manager._active.values()):
                    if not handle._shield:
                        if not handle._state.done:
                            manager._stop(handle)
                    elif handle._scope is not None:
                        handle._scope.deadline = min(handle._scope.deadline, deadline)
                if manager._shielded:
                    await _wait_logged(manager, deadline, "shielded ")
                await _wait_stuck(manager, stopped=stopped, capped=deadline)
    return caught


PROGRESS_INTERVAL = 2.0
"""Seconds between the INFO lines of a close that waits for tasks."""


async def _wait_logged(manager: TaskManager, deadline: float, kind: str) -> None:
    """Wait until no task is active or trio's clock reaches ``deadline``, with an INFO line when
    the wait begins and every :data:`PROGRESS_INTERVAL` seconds naming what it waits for, so a
    shutdown is never silent. Cancellation ends the wait."""
    while manager._active:
        now = trio.current_time()
        if now >= deadline:
            return
        waiting = (
            [h for h in manager._active.values() if h._shield]
            if kind
            else [*manager._active.values()]
        )
        if waiting:
            logger.info(
                "task manager %s closing: waiting up to %.1f s for %d %stask(s): %s",
                quoted(manager._name), deadline - now, len(waiting), kind, _names(waiting),
            )  # fmt: skip
        with trio.move_on_at(min(deadline, now + PROGRESS_INTERVAL)):
            await manager.wait_idle()


STUCK_AFTER = 1.0
"""Seconds a cancelled task gets to end before the close logs it as stuck: a task that reaches
its next checkpoint ends within one scheduling pass, so one second is ample, and short enough for
the line to come before an operator gives up."""
STUCK_INTERVAL = 10.0
"""Seconds between the repeated WARNING lines while stuck tasks remain."""


async def _wait_stuck(manager: TaskManager, *, stopped: float, capped: float) -> None:
    """Wait for the tasks the close cancelled (the unshielded at ``stopped``, the shielded at
    their cap ``capped``) to end.

    One still alive :data:`STUCK_AFTER` seconds into this wait shields itself or ignores
    cancellation: log one WARNING naming each such task, how long ago it was cancelled and where
    it waits; again every :data:`STUCK_INTERVAL` seconds while any remains. The wait has no limit,
    since trio's nursery waits for the task anyway. It runs shielded: an outer cancellation
    does not end it.
    """
    report_at = trio.current_time() + STUCK_AFTER
    while manager._active:
        with trio.move_on_at(report_at):
            await manager.wait_idle()
        if not manager._active:
            return
        now = trio.current_time()
        coros = task_coroutines(manager)
        stuck: list[str] = []
        for handle in manager._active.values():
            since = now - (capped if handle._shield else stopped)
            where = chain_text(coros[handle._n]) if handle._n in coros else ""
            stuck.append(
                f"{quoted(handle._name)} ({handle.id}) cancelled {since:.1f} s ago"
                + (f", waiting in {where}" if where else "")
            )
        logger.warning(
            "task manager %s closing: %d task(s) stuck, still running after they were cancelled "
            "(a task that shields itself or ignores cancellation; the close waits for it): %s",
            quoted(manager._name), len(stuck), "; ".join(stuck),
        )  # fmt: skip
        report_at = now + STUCK_INTERVAL


def _names(handles: list[TaskHandle[Any]], most: int = 5) -> str:
    shown = ", ".join(f"{quoted(h._name)} ({h.id})" for h in handles[:most])
    return shown if len(handles) <= most else f"{shown} and {len(handles) - most} more"


def close_deadlines(manager: TaskManager) -> CloseDeadlines | None:
    """The deadlines of a closing manager; None while it is open, or while nothing is going to
    cancel its tasks (a request whose handler returned waits until the server cancels it)."""
    if not manager._closed:
        return None
    if manager._grace == _INF and not math.isfinite(manager._shield_deadline):
        return None
    began = manager._close_started
    if math.isfinite(manager._shield_deadline):  # the grace period is over
        return CloseDeadlines(began, trio.current_time(), manager._shield_deadline)
    grace = began + manager._grace
    cap = began + manager._shield_timeout if math.isfinite(grace) else _INF
    return CloseDeadlines(began, grace, cap)


def closed(manager: TaskManager) -> None:
    """After the nursery has exited: record the close, log the report if any task was cancelled
    by it, unregister the manager and tell the instruments."""
    started = manager._close_started
    ended = trio.current_time()
    manager._close_span = (started, ended)
    if manager._dropped:
        dropped = sorted(manager._dropped, key=lambda handle: handle._n)
        report = manager._report = ShutdownReport(
            manager=manager._name, duration=ended - started, cancelled=tuple(dropped)
        )
        manager._dropped = None
        logger.warning("%s", report)
    _registry.open_managers.discard(manager)
    if manager._recent:
        _registry.finished.extend(manager._recent)  # still findable once the manager is gone
    if "manager_closed" in manager._hooks:
        call_hooks(manager._hooks, manager, "manager_closed", manager, manager.shutdown_report)
