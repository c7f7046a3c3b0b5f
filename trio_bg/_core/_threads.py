"""Worker threads of sync tasks, and the ones a cancellation abandoned.

A sync task runs in a worker thread with ``trio.to_thread.run_sync(abandon_on_cancel=True)``.
Python cannot interrupt a thread: when the task is cancelled, trio returns at once and abandons
the thread, which runs its function to the end and only then gives its token back to the thread
limiter. trio says nothing about it, so :func:`run_in_thread` counts and logs it: the limiter it
hands trio is a small proxy per call that notes when the token is taken and given back, all in
the trio thread (trio calls both there), so no lock is needed. The count is per trio run
(:func:`abandoned_threads`).
"""

from __future__ import annotations

import contextlib
import functools
from typing import TYPE_CHECKING, Any, cast, final

import trio

from ._log import logger
from ._progress import Progress, reporter, sink

if TYPE_CHECKING:
    from collections.abc import Callable

    from ._handle import TaskHandle
    from ._manager import TaskManager

_ABANDONED: trio.lowlevel.RunVar[set[_Borrow]] = trio.lowlevel.RunVar("trio_bg_abandoned")
"""The abandoned threads still running, per trio run: a thread that outlives its run is never
reported back to trio, so a process-wide set would keep it forever."""


def abandoned_threads() -> int:
    """How many worker threads that trio_bg abandoned in this trio run are still running (0
    outside a run)."""
    try:
        return len(_ABANDONED.get())
    except (LookupError, RuntimeError):  # none yet in this run; no run
        return 0


def _abandoned() -> set[_Borrow]:
    try:
        return _ABANDONED.get()
    except LookupError:
        abandoned: set[_Borrow] = set()
        _ABANDONED.set(abandoned)
        return abandoned


async def run_in_thread(
    manager: TaskManager, handle: TaskHandle[Any], fn: Callable[..., Any], args: tuple[Any, ...]
) -> Any:
    """``fn(*args)`` in a worker thread, bounded by the manager's thread limiter.

    Cancellation ends the call at once; if the thread was already running, it is abandoned: one
    WARNING names the task, another says so when abandoned threads hold every token of the
    limiter (later sync tasks then wait for a thread until one ends), and an INFO line when the
    thread ends at last.
    """
    borrow = _Borrow(manager._limiter or trio.to_thread.current_default_thread_limiter())
    # The thread runs in a copy of this context: report_progress there finds its task here.
    reporting = reporter.set(sink(functools.partial(_report_from_thread, manager, handle)))
    try:
        # trio takes any object with the two *_on_behalf_of methods as its limiter.
        return await trio.to_thread.run_sync(
            fn, *args, limiter=cast("trio.CapacityLimiter", borrow), abandon_on_cancel=True
        )
    except trio.Cancelled:
        if borrow.holding:  # the thread was started and has not ended: abandoned
            borrow.abandon(manager, handle)
        raise
    finally:
        reporter.reset(reporting)


def _report_from_thread(manager: TaskManager, handle: TaskHandle[Any], progress: Progress) -> None:
    """A sync task's ``report_progress``, in its worker thread: handed to the trio thread. An
    abandoned thread whose trio run has ended reports to nobody."""
    with contextlib.suppress(trio.RunFinishedError):
        trio.from_thread.run_sync(manager._task_progress, handle, progress)


@final
class _Borrow:
    """The limiter trio sees for one call: the manager's own, noting when the token is held."""

    __slots__ = ("abandoned_at", "holding", "label", "limiter")

    def __init__(self, limiter: trio.CapacityLimiter) -> None:
        self.limiter = limiter
        self.holding = False
        self.abandoned_at = 0.0
        self.label = ""

    async def acquire_on_behalf_of(self, borrower: object) -> None:
        await self.limiter.acquire_on_behalf_of(borrower)
        self.holding = True  # nothing between: a cancellation came before the token, or never

    def release_on_behalf_of(self, borrower: object) -> None:
        self.holding = False
        self.limiter.release_on_behalf_of(borrower)
        if self.label:  # abandoned
            abandoned = _abandoned()
            abandoned.discard(self)
            logger.info(
                "the abandoned worker thread of %s ended after %.1f s (%d abandoned thread(s) "
                "still running)",
                self.label, trio.current_time() - self.abandoned_at, len(abandoned),
            )  # fmt: skip

    def abandon(self, manager: TaskManager, handle: TaskHandle[Any]) -> None:
        self.label = f"task {handle._name!r} ({handle.id})"
        self.abandoned_at = trio.current_time()
        abandoned = _abandoned()
        abandoned.add(self)
        logger.warning(
            "%s was cancelled while its sync function ran in a worker thread: the thread is "
            "abandoned and runs on, holding a thread token until it ends (%d abandoned thread(s) "
            "running)",
            self.label, len(abandoned),
        )  # fmt: skip
        limiter = self.limiter
        held = sum(1 for borrow in abandoned if borrow.limiter is limiter)
        if held >= limiter.total_tokens:
            owner = (
                f"task manager {manager._name!r} (max_threads)"
                if limiter is manager._limiter
                else "trio's default thread limiter"
            )
            logger.warning(
                "abandoned threads hold all %d thread tokens of %s: sync tasks wait for a thread "
                "until one of them ends",
                limiter.total_tokens, owner,
            )  # fmt: skip
