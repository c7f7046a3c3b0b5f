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
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, cast, final

from .._core._text import clean, safe_str

logger = logging.getLogger("trio_bg.durable")

DEAD_KEY = ":trio_bg:dead"
"""After ``streaq:<queue>``: the hash of dead letters."""
MAX_RAW = 2000
"""Characters of a dead letter's raw value shown (``DeadLetter.raw``)."""
MAX_KEPT = 1_000_000
"""Characters of task data kept whole with its dead letter, so ``requeue_dead`` can run it."""
CHAINING = ("A", "F", "O", "T")
"""streaq's task-chaining fields of task data."""


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
    if "a" not in fields:
        return "task data has no arguments ('a')"
    if not isinstance(fields["a"], list):
        return "task data's arguments ('a') are not a list"
    if not isinstance(fields.get("k"), dict):
        return "task data has no keyword arguments ('k')"
    enqueued = fields.get("t")
    if isinstance(enqueued, bool) or not isinstance(enqueued, int):
        return "task data has no enqueue time ('t')"
    # streaq's chaining fields, which trio_bg never writes: streaq would read other keys
    # through them, outside the code that fails a job cleanly.
    chained = [key for key in CHAINING if fields.get(key) is not None]
    if chained:
        return f"task data uses streaq's task chaining ({chained[0]!r}), which trio_bg never writes"
    return None


def stream_entry_problem(fields: object) -> tuple[str | None, str | None]:
    """(the job id, why the entry cannot run or None) for a stream entry's fields."""
    if not isinstance(fields, Mapping):
        return None, "stream entry names no job ('task_id')"
    values = cast("Mapping[object, object]", fields)
    job = values.get("task_id")
    if not isinstance(job, str) or not job:
        return None, "stream entry names no job ('task_id')"
    enqueued = values.get("enqueue_time", "0")
    if not isinstance(enqueued, str) or not enqueued.isascii() or not enqueued.isdigit():
        return job, "stream entry's enqueue time is not a whole number ('enqueue_time')"
    return job, None


async def record(
    worker: Any,
    *,
    letter: str,
    job: str | None,
    reason: str,
    raw: object,
    entry: str | None = None,
    task_data: bool = False,
) -> None:
    """Log one line and keep the dead letter ``letter`` (best effort: a failed write is logged
    too). ``entry``: the stream entry's id when ``letter`` is the job's; ``task_data``: ``raw``
    is the job's whole task data (kept whole up to :data:`MAX_KEPT`, for ``requeue_dead``)."""
    text = raw if isinstance(raw, str) else safe_str(raw)
    named = [clean(entry if entry is not None else letter, 120)]
    if job is not None:
        named.append(f"job {clean(job, 120)}")
    logger.warning(
        "worker %s: dead letter (%s): %s; kept in %s",
        worker.id, ", ".join(named), reason, dead_key(worker),
    )  # fmt: skip
    kept: dict[str, object] = {
        "job": job, "reason": reason, "raw": clean(text, MAX_RAW), "at": time.time()
    }  # fmt: skip
    if task_data and isinstance(raw, str) and len(raw) <= MAX_KEPT:
        kept["data"] = raw
    try:
        await worker.redis.hset(dead_key(worker), {letter: json.dumps(kept, ensure_ascii=False)})
    except Exception as exc:  # the entry is acked anyway: a lost Redis must not stop the worker
        logger.warning("worker %s: cannot keep dead letter %s: %s", worker.id, letter, exc)


def kept_data(text: object) -> str | None:
    """The whole task data a stored dead letter kept, or None."""
    try:
        data: Any = json.loads(text)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    kept = cast("dict[str, Any]", data).get("data") if isinstance(data, dict) else None
    return kept if isinstance(kept, str) else None


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
