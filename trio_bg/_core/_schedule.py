"""When a periodic task or job is due: ``every=`` seconds or a ``cron=`` expression in a time zone.

A :class:`Schedule` answers one question, :meth:`Schedule.next_after`: the first instant strictly
after a given one, in seconds since the epoch. It holds no clock, so a test can ask it about any
day (a DST change included) without waiting.

- ``every=S``: the instants are the multiples of ``S`` seconds since the epoch (``every=60`` is
  each full minute, UTC), so every process computes the same instants: what a durable schedule
  needs to enqueue each one exactly once. (An in-process schedule counts ``every`` from its own
  start on trio's clock instead: :mod:`._periodic`.)
- ``cron="0 3 * * *", tz="Europe/Berlin"``: cron's five fields, evaluated in the time zone by
  `cronsim <https://github.com/cuu508/cronsim>`_ (the ``cron`` extra), which follows Debian's
  cron across DST changes: a job at a fixed time that does not exist on the spring-forward day
  (02:30 in Berlin) runs once, at the first instant after the gap (03:00); one at a fixed time
  that occurs twice on the fall-back day runs once, at the first of the two; a job whose hour
  field is a wildcard or a range (``*/30 * * * *``) runs at every instant that comes, the
  repeated hour included. cronsim was chosen over croniter for that rule, written down and
  tested in its own suite, and for its size (one module, no dependencies).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, final
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

if TYPE_CHECKING:
    from collections.abc import Iterator


@final
@dataclass(frozen=True, slots=True)
class Schedule:
    """``every`` seconds, or a ``cron`` expression in the time zone ``tz`` (one of the two)."""

    every: float | None
    cron: str | None
    tz: str

    def next_after(self, moment: float) -> float:
        """The first instant of the schedule strictly after ``moment`` (seconds since the epoch)."""
        if self.every is not None:
            return (math.floor(moment / self.every) + 1) * self.every
        return next(self.instants_after(moment))

    def instants_after(self, moment: float) -> Iterator[float]:
        """The instants strictly after ``moment``, in order, without end."""
        if self.every is not None:
            k = math.floor(moment / self.every) + 1
            while True:
                yield k * self.every
                k += 1
        from cronsim import CronSim  # checked importable when the schedule was made

        assert self.cron is not None
        zone = ZoneInfo(self.tz)
        start = datetime.fromtimestamp(moment, zone)
        for due in CronSim(self.cron, start):
            instant = due.timestamp()
            if instant > moment:  # cronsim starts at the same second when it matches
                yield instant

    def latest_at_or_before(self, moment: float) -> float | None:
        """The last instant of the schedule at or before ``moment`` (None if it has none in the
        year before it: a cron expression for a day that does not come, such as Feb 30)."""
        if self.every is not None:
            return math.floor(moment / self.every) * self.every
        from cronsim import CronSim

        assert self.cron is not None
        zone = ZoneInfo(self.tz)
        # cronsim's reverse walk starts strictly before its start: a second past the moment
        # (cron instants are whole minutes) lets the moment itself come out.
        start = datetime.fromtimestamp(moment + 1, zone)
        for due in CronSim(self.cron, start, reverse=True):
            instant = due.timestamp()
            if instant <= moment:
                return instant
        return None  # pragma: no cover - cronsim raises for a schedule that never comes

    def describe(self) -> str:
        """``every 30 s`` or ``cron '0 3 * * *' (Europe/Berlin)``: for names, logs and pages."""
        if self.every is not None:
            return f"every {self.every:g} s"
        return f"cron {self.cron!r} ({self.tz})"


def make_schedule(every: object, cron: object, tz: object) -> Schedule:
    """A checked :class:`Schedule` (exact messages; nothing is started on a refusal).

    Raises:
        TypeError, ValueError: neither or both of ``every`` and ``cron``; ``every`` not a
            positive finite number; ``cron`` not a valid five-field expression; ``tz`` not a
            known time zone, or given with ``every``.
        RuntimeError: ``cron`` without the cronsim package installed.
    """
    if (every is None) == (cron is None):
        raise TypeError("give exactly one of every= (seconds) or cron= (an expression)")
    if every is not None:
        if isinstance(every, bool) or not isinstance(every, int | float):
            raise TypeError(f"every must be a number of seconds, got {type(every).__name__}")
        if not math.isfinite(every) or every <= 0:
            raise ValueError(f"every must be a positive, finite number of seconds, got {every!r}")
        if tz is not None:
            raise TypeError("tz= goes with cron=, not every= (every counts seconds, in no zone)")
        return Schedule(float(every), None, "UTC")
    if not isinstance(cron, str):
        raise TypeError(f"cron must be a str, got {type(cron).__name__}")
    zone = "UTC" if tz is None else tz
    if not isinstance(zone, str):
        raise TypeError(f"tz must be a time zone name (str), got {type(zone).__name__}")
    try:
        ZoneInfo(zone)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone {zone!r}") from None
    try:
        from cronsim import CronSim, CronSimError
    except ImportError:
        raise RuntimeError("cron= needs the cronsim package: pip install 'trio-bg[cron]'") from None
    try:
        CronSim(cron, datetime.now(UTC))
    except CronSimError as exc:
        raise ValueError(f"invalid cron expression {cron!r}: {exc}") from None
    return Schedule(None, cron, zone)
