"""``report_progress``: a task says how far it is, from anywhere inside itself.

Nothing on the task path records anything for this: the call finds its task when it is made,
walking trio's task tree up from the current task (:func:`._where.lineage`) to the nearest of a
trio_bg task (its coroutine is the runner's, :func:`._where.handle_of`: the report goes to its
manager, which stores it on the handle and calls the instruments' ``task_progress``) and a
durable job's task (the ``_progress.reporter`` sink its worker set: the report goes to the
worker's outbox). So a job run by a worker inside a trio_bg task reports for the job, and a
trio_bg task started inside a job reports for itself. In a sync task's worker thread, where
there is no task tree, the sink set around the thread's call takes it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import trio

from ._progress import make_progress, reporter
from ._where import handle_of, lineage

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
        current = trio.lowlevel.current_task()
    except RuntimeError:  # not in the trio thread: a sync task's worker thread, or no trio
        if to is None:
            raise RuntimeError(_OUTSIDE) from None
        to.report(progress)
        return
    for task in lineage(current):  # the nearest of a durable job's sink and a trio_bg task
        if to is not None and task is to.task:
            to.report(progress)
            return
        handle: TaskHandle[Any] | None = handle_of(task)
        if handle is not None:
            manager = handle.manager
            if manager is not None:  # None once finished: a late report changes nothing
                manager._task_progress(handle, progress)
            return
    if to is None:
        raise RuntimeError(_OUTSIDE)
    to.report(progress)


_OUTSIDE = (
    "report_progress() was called outside a trio_bg task or durable job: call it in the task's "
    "own code (or a task it started in a nursery of its own, or its worker thread)"
)
