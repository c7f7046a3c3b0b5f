"""Dead letters: what a Redis worker could not run, moved out of the way and kept for an operator.

A stream entry without a job id, task data that is no JSON object or lacks what a job needs
(its function's name ``f``, arguments ``a``, keywords ``k``, enqueue time ``t``), data that is
no JSON at all, a job whose function no worker of this deployment registered: the worker logs
one WARNING line naming the entry and why, acks it (streaq stores the failure as the job's
result, so its handle ends FAILED), and keeps it in the queue's dead-letter hash
``streaq:<queue>:trio_bg:dead`` (``id -> JSON {"job", "reason", "raw", "at"}``, the raw value
cut to :data:`MAX_RAW` characters). ``queue.statistics().dead`` counts them, the dashboard shows
the count, ``queue.dead_letters()`` lists them and ``queue.discard_dead(id)`` deletes one. No
message can stop a worker: every value read from Redis is checked before streaq or trio_bg
indexes it.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, cast, final

from .._core._text import clean, safe_str

logger = logging.getLogger("trio_bg.durable")

DEAD_KEY = ":trio_bg:dead"
"""After ``streaq:<queue>``: the hash of dead letters."""
MAX_RAW = 2000
"""Characters of a dead letter's raw value kept."""


def dead_key(worker: Any) -> str:
    """The Redis key of the queue's dead letters."""
    key: str = worker.prefix + DEAD_KEY
    return key


@final
@dataclass(frozen=True, slots=True)
class DeadLetter:
    """One message a worker could not run (``await queue.dead_letters()``).

    Attributes:
        id: the stream entry's id, or the job's id for bad task data.
        job: the job's id when the entry named one, else None.
        reason: why it could not run, as the worker's log line said.
        raw: what Redis held (the entry's fields, or the task data), cut to 2,000 characters.
        at: when the worker moved it out of the way (UTC).
    """

    id: str
    job: str | None
    reason: str
    raw: str
    at: datetime


def task_data_problem(data: object) -> str | None:
    """Why decoded task data cannot run, or None if it has what a job needs."""
    if not isinstance(data, dict):
        return f"task data is a JSON {type(data).__name__}, not an object"
    fields = cast("dict[str, Any]", data)
    if not isinstance(fields.get("f"), str):
        return "task data has no function name ('f')"
    if not isinstance(fields.get("a", []), list):
        return "task data's arguments ('a') are not a list"
    if not isinstance(fields.get("k"), dict):
        return "task data has no keyword arguments ('k')"
    enqueued = fields.get("t")
    if isinstance(enqueued, bool) or not isinstance(enqueued, int):
        return "task data has no enqueue time ('t')"
    return None


async def record(
    redis: Any, worker: Any, entry: str, job: str | None, reason: str, raw: object
) -> None:
    """Log one line and keep the dead letter (best effort: a failed write is logged too)."""
    text = raw if isinstance(raw, str) else safe_str(raw)
    logger.warning(
        "worker %s: dead letter %s%s: %s; kept in %s",
        worker.id, clean(entry, 120), "" if job is None or job == entry else f" (job {job})",
        reason, dead_key(worker),
    )  # fmt: skip
    letter = {"job": job, "reason": reason, "raw": clean(text, MAX_RAW), "at": time.time()}
    try:
        await redis.hset(dead_key(worker), {entry: json.dumps(letter, ensure_ascii=False)})
    except Exception as exc:  # the entry is acked anyway: a lost Redis must not stop the worker
        logger.warning("worker %s: cannot keep dead letter %s: %s", worker.id, entry, exc)


def parse(entry: str, text: object) -> DeadLetter | None:
    """A stored dead letter; None for a value this code did not write."""
    try:
        data: Any = json.loads(text)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    if not isinstance(data, dict):
        return None
    fields = cast("dict[str, Any]", data)
    at = fields.get("at")
    if isinstance(at, bool) or not isinstance(at, int | float):
        return None
    job = fields.get("job")
    return DeadLetter(
        id=entry,
        job=job if isinstance(job, str) else None,
        reason=str(fields.get("reason", "")),
        raw=str(fields.get("raw", "")),
        at=datetime.fromtimestamp(at, UTC),
    )
