"""Progress: what a running task or durable job says of how far it is (a value).

``trio_bg.report_progress`` (:mod:`._reporting`) makes one and hands it to the task's manager;
:data:`reporter` is where it goes when trio's task tree cannot tell (a sync task's worker thread,
a durable job).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import final

import trio

from ._text import clean

MAX_MESSAGE = 200
"""Characters of a progress message kept (a longer one is cut, with an ellipsis)."""


@final
@dataclass(frozen=True, slots=True)
class Progress:
    """What a task said last about how far it is.

    Attributes:
        fraction: between 0.0 and 1.0, or None if the task gave only a message.
        message: a short text (at most :data:`MAX_MESSAGE` characters), or None.
        at: when it said so (UTC).
    """

    fraction: float | None
    message: str | None
    at: datetime


Reporter = Callable[[Progress], None]


@final
@dataclass(frozen=True, slots=True)
class Sink:
    """Where progress goes for the trio task ``task`` and the tasks under it (a durable job's
    task), or for the worker thread of a sync task (``task`` is then the task it runs for)."""

    report: Reporter
    task: object


def sink(report: Reporter) -> Sink:
    """A :class:`Sink` for the current trio task."""
    return Sink(report, trio.lowlevel.current_task())


reporter: ContextVar[Sink | None] = ContextVar("trio_bg_progress_reporter", default=None)
"""Where progress goes when the trio task tree cannot tell (a sync task's worker thread), or
where a durable worker wants it for the tasks of each job it runs. Inside trio, the nearest of
the two wins: the sink's task or a trio_bg task, walking up from the caller."""


def make_progress(fraction: object, message: object, *, now: float | None = None) -> Progress:
    """A checked :class:`Progress` (exact messages for a wrong kind or value)."""
    if fraction is not None:
        if isinstance(fraction, bool) or not isinstance(fraction, int | float):
            raise TypeError(
                f"progress fraction must be a number between 0 and 1 or None, "
                f"got {type(fraction).__name__}"
            )
        if not 0.0 <= fraction <= 1.0 or math.isnan(fraction):
            raise ValueError(f"progress fraction must be between 0 and 1, got {fraction!r}")
        fraction = float(fraction)
    if message is not None:
        if not isinstance(message, str):
            raise TypeError(f"progress message must be a str or None, got {type(message).__name__}")
        message = clean(message, MAX_MESSAGE)
    if fraction is None and message is None:
        raise ValueError("report_progress() needs a fraction, a message, or both")
    at = datetime.now(UTC) if now is None else datetime.fromtimestamp(now, UTC)
    return Progress(fraction, message, at)
