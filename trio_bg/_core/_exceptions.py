"""The two exceptions trio_bg raises on its own account."""

from __future__ import annotations


class TaskCancelled(Exception):
    """Raised by ``await handle.get()`` when the task was cancelled or discarded.

    It is an ordinary ``Exception``, not ``trio.Cancelled``: waiting on a cancelled task does not
    cancel the waiter.
    """


class TaskRejected(Exception):
    """A start was refused: the manager is closed, its pending queue is full, or a cap is reached.

    Nothing was started and no handle exists for the refused task; the function was not called.
    """
