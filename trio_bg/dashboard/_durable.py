"""The dashboard's durable queues: each queue's numbers, read from Redis by one shared reader.

A dashboard built with ``queues=`` shows each of them (``queues`` in the JSON, the "Durable
queues" table on the page). Redis is read at most once per :data:`MAX_AGE` seconds per dashboard,
however many clients and event streams ask: the first request that finds the reading older
reads (each queue concurrently, each bounded by :data:`READ_TIMEOUT`), the others wait for that
reading. A queue whose Redis cannot be reached, or does not answer in time, is shown
``unavailable`` with the reason; the rest of the snapshot is unaffected. A queue that is not
open in this process (``async with queue:``) is shown ``closed``, without a Redis read.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, cast, final
from urllib.parse import urlsplit, urlunsplit

import outcome
import trio

from ._recorder import short_str

if TYPE_CHECKING:
    from ..durable import DurableHandle, DurableQueue, QueueStatistics, ScheduleState

logger = logging.getLogger("trio_bg.dashboard")

MAX_AGE = 1.0
"""Seconds a reading is served before Redis is read again."""
MAX_RUNNING = 20
"""Running jobs listed per queue (with their progress)."""
READ_TIMEOUT = 2.0
"""Seconds one queue's reading may take before the queue is shown unavailable."""

Json = dict[str, Any]
NUMBERS = ("depth", "delayed", "in_flight", "succeeded", "failed", "cancelled", "workers", "dead")
"""The numbers of a queue's entry, null unless its status is ``ok``."""


def check_queues(queues: object) -> tuple[DurableQueue, ...]:
    """``queues`` as a tuple of distinct DurableQueue; TypeError naming what else it got."""
    if isinstance(queues, str | bytes) or not isinstance(queues, Iterable):
        raise TypeError(
            "queues must be an iterable of trio_bg.durable.DurableQueue, "
            f"got {type(queues).__name__}"
        )
    listed = list(cast("Iterable[object]", queues))
    if not listed:
        return ()
    from ..durable import DurableQueue  # only with queues: streaq is an optional extra

    checked: list[DurableQueue] = []
    for queue in listed:
        if not isinstance(queue, DurableQueue):
            raise TypeError(
                f"queues must hold trio_bg.durable.DurableQueue objects, got {type(queue).__name__}"
            )
        if queue in checked:
            raise ValueError(f"queues holds durable queue {queue.name!r} twice")
        checked.append(queue)
    return tuple(checked)


def public_url(url: str) -> str:
    """``url`` without its user name and password."""
    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port is not None else host
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


@final
class DurableSection:
    """The queues of one dashboard and their last reading (see the module docstring)."""

    __slots__ = ("_read_at", "_reader", "_readings", "queues")

    def __init__(self, queues: tuple[DurableQueue, ...]) -> None:
        self.queues = queues
        self._readings: list[Json | None] = [None] * len(queues)
        self._read_at = -math.inf
        self._reader: trio.Event | None = None

    async def refresh(self) -> None:
        """Make the reading at most :data:`MAX_AGE` seconds old: read, or wait for the read in
        progress. Returns at once when it is fresh, or when there is no queue. Never raises for
        Redis (a queue that could not be read gets an ``unavailable`` entry). Cancelling the
        call abandons its wait; a read it was doing is dropped and the next caller reads."""
        while self._stale():
            reader = self._reader
            if reader is not None:
                await reader.wait()
                continue
            self._reader = done = trio.Event()
            try:
                readings: list[Json | None] = [None] * len(self.queues)
                async with trio.open_nursery() as nursery:
                    for index, queue in enumerate(self.queues):
                        nursery.start_soon(self._read_one, queue, index, readings)
                self._readings = readings
                self._read_at = time.monotonic()
            finally:
                self._reader = None
                done.set()

    def _stale(self) -> bool:
        """The reading is too old, or a queue opened since it was taken."""
        if time.monotonic() - self._read_at >= MAX_AGE:
            return bool(self.queues)
        return any(
            q.is_open and r is None for q, r in zip(self.queues, self._readings, strict=True)
        )

    @staticmethod
    async def _read_one(queue: DurableQueue, index: int, readings: list[Json | None]) -> None:
        if not queue.is_open:
            return
        now = time.time()
        error: str | None = None
        stats: QueueStatistics | None = None
        running: list[Json] = []
        schedules: list[Json] = []
        try:
            with trio.fail_after(READ_TIMEOUT):
                stats = await queue.statistics()
                running = [_job(handle) for handle in await queue.running_jobs(MAX_RUNNING)]
                schedules = [await _schedule(queue, state) for state in await queue.schedules()]
        except trio.TooSlowError:
            error = f"Redis did not answer within {READ_TIMEOUT:g} s"
        except Exception as exc:  # a broken queue must not break the dashboard
            from ..durable import QueueUnavailable

            if not isinstance(exc, QueueUnavailable):
                logger.exception("dashboard: reading durable queue %r failed", queue.name)
            error = short_str(exc)
        entry = _entry(queue, now, stats, error)
        if stats is not None:
            entry["running"] = running
            entry["schedules"] = schedules
        readings[index] = entry

    def json(self) -> list[Json]:
        """The ``queues`` list of the snapshot, from the last reading (no I/O)."""
        entries: list[Json] = []
        for queue, reading in zip(self.queues, self._readings, strict=True):
            if not queue.is_open:
                entries.append(_entry(queue, None, None, None))
            elif reading is None:  # opened since refresh() returned
                entries.append(_entry(queue, None, None, "not read yet"))
            else:
                entries.append(reading)
        return entries


def _job(handle: DurableHandle[Any]) -> Json:
    """A running job: its id, name, and what it last said of how far it is."""
    progress = handle.progress
    return {
        "id": handle.id,
        "name": short_str(handle.name),
        "started_at": None if handle.started_at is None else handle.started_at.isoformat(),
        "progress": None
        if progress is None
        else {
            "fraction": progress.fraction,
            "message": progress.message,
            "at": progress.at.isoformat(),
        },
    }


async def _schedule(queue: DurableQueue, state: ScheduleState) -> Json:
    """A periodic job: its schedule, next instant, last instant and its last run's outcome."""
    last_state: str | None = None
    last_error: str | None = None
    if state.last_job is not None:
        handle = await queue.find_job(state.last_job)
        if handle is not None:
            last_state = handle.state.value
            result = handle.outcome
            if isinstance(result, outcome.Error):
                last_error = short_str(result.error)
    return {
        "job": short_str(state.job),
        "schedule": short_str(state.schedule),
        "next_at": state.next_at.isoformat(),
        "last_at": None if state.last_at is None else state.last_at.isoformat(),
        "last_job": state.last_job,
        "last_state": last_state,
        "last_error": last_error,
    }


def _entry(
    queue: DurableQueue, at: float | None, stats: QueueStatistics | None, error: str | None
) -> Json:
    if stats is not None:
        status = "ok"
    elif queue.is_open:
        status = "unavailable"
    else:
        status = "closed"
    entry: Json = {
        "running": [],
        "schedules": [],
        "name": queue.name,
        "redis": queue.url if queue.is_journal else public_url(queue.url),
        "status": status,
        "error": error,
        "read_at": None if at is None else datetime.fromtimestamp(at, UTC).isoformat(),
    }
    for field in NUMBERS:
        entry[field] = None if stats is None else getattr(stats, field)
    return entry
