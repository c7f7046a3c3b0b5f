"""The life cycle of a task, and the point of a request at which it starts."""

from __future__ import annotations

import enum


class TaskState(enum.StrEnum):
    """Where a task is in its life: one of two active states, then one of three terminal ones.

    Every task goes PENDING -> RUNNING -> one terminal state, or PENDING -> CANCELLED when it is
    cancelled (or discarded) before it ever ran. A terminal state never changes again.
    """

    PENDING = "pending"
    """Accepted, not running yet: waiting for a free slot (``max_running``) or its timing point."""
    RUNNING = "running"
    """Holds a running slot; its function has been (or is about to be) called."""
    SUCCEEDED = "succeeded"
    """Returned a value; ``await handle.get()`` returns it."""
    FAILED = "failed"
    """Raised an exception (after its last retry); ``await handle.get()`` raises it."""
    CANCELLED = "cancelled"
    """Cancelled, or discarded before it ran; ``await handle.get()`` raises TaskCancelled."""

    @property
    def done(self) -> bool:
        """True for the three terminal states."""
        return self in _TERMINAL


_TERMINAL = frozenset({TaskState.SUCCEEDED, TaskState.FAILED, TaskState.CANCELLED})


class Timing(enum.StrEnum):
    """When, relative to an HTTP request, a request task is started."""

    IMMEDIATE = "immediate"
    """At once, while the handler is still running."""
    AFTER_ROUTE = "after_route"
    """When the handler sends ``http.response.start``, before that message goes on."""
    AFTER_RESPONSE = "after_response"
    """Once the final ``http.response.body`` has been handed to the server."""
