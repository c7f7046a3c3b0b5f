"""Durable periodic jobs: every instant enqueued exactly once, however many workers run.

``@queue.periodic(cron=..., tz=...)`` or ``@queue.periodic(every=...)`` registers a job with a
:class:`PeriodicSpec`. Every process that runs a worker of the queue runs :func:`run_periodic`
for it: it wakes at each instant and asks the backend to *take* the instants due, which the
backend does in one atomic step (a journal transaction, a Redis ``WATCH``/``MULTI``): read the
last instant taken, decide with :func:`plan`, enqueue the jobs (their ids derived from the queue,
the job and the instant), record the newest instant. Whoever comes second finds nothing left to
take. No leader, no lock held between instants; a process killed between two instants changes
nothing, and one killed inside the step took nothing.

The rule for instants that were missed (no worker ran at the time: every process stopped) is
``catch_up``. An instant is *on time* if a scheduler takes it within :data:`ON_TIME` seconds
(one that is up wakes within milliseconds of each instant); the others due since the last one
taken are *missed*: ``"latest"`` (the default) runs the most recent missed instant once,
``"all"`` runs each of them (at most :data:`MAX_CATCH_UP`, the newest), ``"none"`` runs none.
The on-time instant runs whatever ``catch_up`` says. ``overlap="skip"`` (the default) skips the
instants of a take while the job of an earlier take is still queued or running (the instants one
take enqueues together, a catch-up's, are one decision and not judged against each other:
``catch_up="all"`` runs them all); ``"allow"`` enqueues them anyway. A skip is logged once per
take, by the one process that took it. A queue's first scheduler ever runs the current instant
if it is on time, and nothing from before it.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Literal, final

import trio

if TYPE_CHECKING:
    from .._core._schedule import Schedule

logger = logging.getLogger("trio_bg.durable")

CatchUp = Literal["latest", "all", "none"]
Overlap = Literal["skip", "allow"]

ON_TIME = 1.0
"""Seconds after an instant within which taking it is on time (not a catch-up)."""
MAX_CATCH_UP = 1000
"""Most missed instants ``catch_up="all"`` runs (the newest; older ones are logged as dropped)."""
_SLACK = 0.002
"""Seconds past an instant at which a scheduler wakes (its clock must have passed it)."""


@final
@dataclass(frozen=True, slots=True)
class PeriodicSpec:
    """What ``@queue.periodic`` registered for a job, beside its :class:`JobSpec`."""

    schedule: Schedule
    catch_up: CatchUp
    overlap: Overlap


@final
@dataclass(frozen=True, slots=True)
class Plan:
    """What one take decides: the instants to enqueue, and the newest instant to record."""

    run: tuple[float, ...]
    newest: float | None
    dropped: int = 0
    """Missed instants ``catch_up="all"`` left out past :data:`MAX_CATCH_UP`."""


def plan(spec: PeriodicSpec, last: float | None, now: float) -> Plan:
    """The instants to enqueue at ``now``, given the ``last`` instant taken (None: never)."""
    schedule = spec.schedule
    if last is None:
        current = schedule.latest_at_or_before(now)
        if current is None:
            return Plan((), None)
        return Plan((current,) if now - current <= ON_TIME else (), current)
    due: list[float] = []
    dropped = 0
    for instant in schedule.instants_after(last):
        if instant > now:
            break
        due.append(instant)
        if len(due) > MAX_CATCH_UP + 1:  # keep the newest: the on-time one and the cap
            del due[0]
            dropped += 1
    if not due:
        return Plan((), None)
    on_time = due[-1:] if now - due[-1] <= ON_TIME else []
    missed = due[: len(due) - len(on_time)]
    if spec.catch_up == "all":
        run = [*missed[-MAX_CATCH_UP:], *on_time]
        dropped += max(0, len(missed) - MAX_CATCH_UP)
    elif spec.catch_up == "latest":
        run = [*missed[-1:], *on_time]
        dropped = 0
    else:
        run = on_time
        dropped = 0
    return Plan(tuple(run), due[-1], dropped)


@final
@dataclass(frozen=True, slots=True)
class ScheduleState:
    """A periodic job as its store has it: ``await queue.schedules()``.

    Attributes:
        job: the job's name.
        schedule: ``every 60 s`` or ``cron '0 3 * * *' (Europe/Berlin)``.
        next_at: the next instant after now (UTC).
        last_at: the last instant taken (run, or skipped for overlap), or None before the first.
        last_job: the id of the job of the last instant run (``find_job`` gives its handle),
            or None.
    """

    job: str
    schedule: str
    next_at: datetime
    last_at: datetime | None
    last_job: str | None


def schedule_state(
    job: str, spec: PeriodicSpec, now: float, last: float | None, last_job: str | None
) -> ScheduleState:
    return ScheduleState(
        job=job,
        schedule=spec.schedule.describe(),
        next_at=datetime.fromtimestamp(spec.schedule.next_after(now), UTC),
        last_at=None if last is None else datetime.fromtimestamp(last, UTC),
        last_job=last_job,
    )


def instant_job_id(queue: str, job: str, instant: float) -> str:
    """The id of the job of one instant: the same in every process (``job-`` and 32 hex)."""
    digest = hashlib.blake2b(
        f"{queue}\0{job}\0{instant!r}".encode(), digest_size=16, person=b"trio_bg periodic"
    )
    return "job-" + digest.hexdigest()


@final
@dataclass(frozen=True, slots=True)
class Taken:
    """What one take did: the instants enqueued, those skipped for overlap, and the plan."""

    enqueued: tuple[float, ...]
    skipped: tuple[float, ...]
    dropped: int


TakeFn = Callable[[str, PeriodicSpec, float], Awaitable[Taken]]
"""A backend's atomic step: ``take(job, spec, now)``."""


async def run_periodic(
    *, queue: str, job: str, spec: PeriodicSpec, now: Callable[[], float], take: TakeFn
) -> None:
    """Take the instants of one periodic job as they come, until cancelled (the worker's
    stop). ``take(job, spec, now)`` is the backend's atomic step (an awaitable of
    :class:`Taken`); an error in it (a lost store) is logged once per outage and the next
    instant tries again."""
    failing = False
    while True:
        moment = now()
        try:
            taken = await take(job, spec, moment)
        except Exception as exc:
            if not failing:
                logger.warning(
                    "durable queue %r: cannot schedule periodic job %r: %s", queue, job, exc
                )
            failing = True
        else:
            failing = False
            _log(queue, job, taken)
        following = spec.schedule.next_after(moment)
        await trio.sleep(max(0.0, following - now()) + _SLACK)


def _log(queue: str, job: str, taken: Taken) -> None:
    if taken.skipped:
        # One line per take (a long catch-up skipped whole would otherwise flood the log).
        logger.info(
            "durable queue %r: periodic job %r skipped its run of %s: the previous run is still "
            "queued or running (overlap='skip')",
            queue, job, _skipped(taken.skipped),
        )  # fmt: skip
    if taken.dropped:
        logger.warning(
            "durable queue %r: periodic job %r: %d missed instant(s) older than the newest %d "
            "were not run (catch_up='all' runs at most %d)",
            queue, job, taken.dropped, MAX_CATCH_UP, MAX_CATCH_UP,
        )  # fmt: skip


def _skipped(instants: tuple[float, ...]) -> str:
    if len(instants) == 1:
        return _when(instants[0])
    return f"{len(instants)} instants, {_when(instants[0])} to {_when(instants[-1])}"


def _when(instant: float) -> str:
    return datetime.fromtimestamp(instant, UTC).isoformat()
