"""``report_progress``: a task says how far it is, from anywhere inside itself.

Nothing on the task path records anything for this: the call finds its task when it is made
(:func:`._where.current_handle` walks trio's task tree up from the current task to the one whose
coroutine is trio_bg's runner) and reports to that task's manager, which stores it on the handle
and calls the instruments' ``task_progress``. Where the task tree cannot tell (a sync task's
worker thread; a durable job, which is no trio_bg task), the context can: ``_progress.reporter``
is set around the thread's call and by a durable worker around each job.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import trio

from ._progress import Progress, make_progress, reporter
from ._where import current_handle

if TYPE_CHECKING:
    from ._handle import TaskHandle


def report_progress(fraction: float | None = None, message: str | None = None) -> None:
    """Say how far the current trio_bg task or durable job is: ``report_progress(0.4, "row 4,000
    of 10,000")``. It is stored on the task's handle (``handle.progress``; a durable job's, by its
    worker, at most about once a second) and passed to the instruments' ``task_progress``.

    Call it from the task itself, from a task of a nursery the task opened, or from a sync
    task's worker thread. It does not block and is no checkpoint: cancellation does not reach it.

    Raises:
        TypeError, ValueError: ``fraction`` is not a number between 0 and 1, ``message`` is no
            str, or both are None.
        RuntimeError: not called inside a trio_bg task or durable job.
    """
    progress = make_progress(fraction, message)
    to = reporter.get()
    try:
        trio.lowlevel.current_task()
    except RuntimeError:  # not in the trio thread: a sync task's worker thread, or no trio
        in_trio = False
    else:
        in_trio = True
    if in_trio and _report_in_trio(progress):
        return
    if to is None:
        raise RuntimeError(_OUTSIDE)
    to(progress)


_OUTSIDE = (
    "report_progress() was called outside a trio_bg task or durable job: call it in the task's "
    "own code (or a task it started in a nursery of its own, or its worker thread)"
)


def _report_in_trio(progress: Progress) -> bool:
    """Report ``progress`` for the trio_bg task the current trio task belongs to; False if it
    belongs to none. Runs in the trio thread."""
    handle: TaskHandle[Any] | None = current_handle()
    if handle is None:
        return False
    manager = handle.manager
    if manager is not None:  # None once finished: a late report changes nothing
        manager._task_progress(handle, progress)
    return True
