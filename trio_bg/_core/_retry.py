"""Retry policy: how often a failed task is tried again, and how long to wait in between."""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Any, cast, final


@final
@dataclass(frozen=True, slots=True)
class Retry:
    """Try a failing task again, with exponential backoff.

    Attempt ``k`` (1-based) that fails with one of ``on`` is followed, unless it was the last, by a
    sleep of ``min(max_backoff, backoff * 2 ** (k - 1))`` seconds; with ``jitter`` the sleep is
    drawn uniformly from half to all of that. An exception outside ``on`` fails the task at once.
    Cancelling the task during the sleep cancels the task: nothing is retried after a cancel.
    A ``timeout=`` on the task applies to each attempt, and its ``trio.TooSlowError`` is retried
    like any other ``Exception``.

    Args:
        attempts: how many attempts in all, at least 1 (1 means no retry).
        backoff: the first sleep, in seconds.
        max_backoff: the longest sleep, in seconds.
        jitter: spread sleeps randomly over half to all of their length.
        on: the exception classes that are retried (subclasses of ``Exception``).
    """

    attempts: int = 3
    backoff: float = 0.1
    max_backoff: float = 10.0
    jitter: bool = True
    on: tuple[type[Exception], ...] = (Exception,)

    def __post_init__(self) -> None:
        attempts = cast(object, self.attempts)
        if isinstance(attempts, bool) or not isinstance(attempts, int):
            raise TypeError(f"Retry attempts must be an int, got {type(attempts).__name__}")
        if self.attempts < 1:
            raise ValueError(f"Retry attempts must be >= 1, got {self.attempts}")
        for field in ("backoff", "max_backoff"):
            value: Any = getattr(self, field)
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise TypeError(f"Retry {field} must be a number, got {type(value).__name__}")
            if not (value >= 0 and math.isfinite(value)):
                raise ValueError(f"Retry {field} must be a finite number >= 0, got {value!r}")
        jitter = cast(object, self.jitter)
        if not isinstance(jitter, bool):
            raise TypeError(f"Retry jitter must be a bool, got {type(jitter).__name__}")
        on: Any = self.on
        if isinstance(on, type):
            on = (on,)
            object.__setattr__(self, "on", on)
        if not isinstance(on, tuple):
            raise TypeError(
                "Retry on must be an Exception subclass or a tuple of them, "
                f"got {type(on).__name__}"
            )
        if not on:
            raise ValueError("Retry on must be a non-empty tuple of Exception subclasses")
        classes = cast("tuple[object, ...]", on)
        for cls in classes:
            if not (isinstance(cls, type) and issubclass(cls, Exception)):
                raise TypeError(f"Retry on must hold Exception subclasses, got {cls!r}")

    def delay(self, attempt: int) -> float:
        """The sleep after failed attempt number ``attempt`` (1-based), in seconds."""
        # The exponent stops growing where 2.0 ** k would overflow a float (k = 1024): by then
        # any backoff above 0 is far past max_backoff.
        delay = min(self.max_backoff, self.backoff * 2.0 ** min(attempt - 1, 1023))
        if self.jitter:
            delay *= random.uniform(0.5, 1.0)
        return delay
