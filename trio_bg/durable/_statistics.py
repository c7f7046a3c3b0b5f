"""QueueStatistics: one reading of a durable queue's numbers, whichever backend keeps it."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class QueueStatistics:
    """One reading of a queue's numbers: ``depth`` (jobs runnable now, not taken), ``delayed``
    (waiting for their time: ``delay=``, a retry's backoff), ``in_flight`` (taken by a worker,
    not finished), the outcome counts since the queue's store was created (``succeeded``,
    ``failed``, ``cancelled``) and the live ``workers``. How Redis keeps each is in
    ``trio_bg/durable/_stats.py``; the journal counts rows (docs/journal.md)."""

    depth: int
    delayed: int
    in_flight: int
    succeeded: int
    failed: int
    cancelled: int
    workers: int
    dead: int = 0
    """Messages a Redis worker could not run and kept as dead letters
    (``queue.dead_letters()``); always 0 for the journal, whose rows are written only by
    trio_bg."""
