"""The journal's statements: plain functions of a connection, run on the journal's thread.

Each runs inside the commit group's transaction (see :mod:`._journal_file`); none commits.
Times are unix seconds (floats), as the queue's clock gives them.
"""

from __future__ import annotations

import json
import sqlite3
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from ._periodic import Plan, Taken, instant_job_id

_T = TypeVar("_T")

FINISHED = ("succeeded", "failed", "cancelled")

ROW_COLUMNS = (
    "id, function, state, attempts, result, error, created_at, started_at, finished_at, progress"
)
"""What a handle needs of a job row (see :class:`JobRow`)."""


@dataclass(frozen=True, slots=True)
class JobRow:
    """A job as a handle sees it."""

    id: str
    function: str
    state: str
    attempts: int
    result: str | None
    error: str | None
    created_at: float
    started_at: float | None
    finished_at: float | None
    progress: str | None = None
    """JSON ``{"f": fraction, "m": message, "at": unix seconds}`` of the last report, or None."""


@dataclass(frozen=True, slots=True)
class NewJob:
    id: str
    function: str
    args: str
    run_at: float
    key: str | None
    created_at: float
    max_attempts: int
    lease_owner: str | None = None
    """Set: the job is handed to that worker of the enqueuing process as it is written (state
    running, attempt 1, leased until ``lease_expires``): no claim round trip."""
    lease_expires: float | None = None


@dataclass(frozen=True, slots=True)
class Claimed:
    id: str
    function: str
    args: list[Any]
    attempts: int
    max_attempts: int
    created_at: float
    started_at: float


@dataclass(frozen=True, slots=True)
class Reclaimed:
    id: str
    function: str
    owner: str
    held: float
    requeued: bool


_INSERT = """
INSERT INTO jobs (id, queue, function, args, state, max_attempts, run_at, key, created_at)
VALUES (?, ?, ?, ?, 'queued', ?, ?, ?, ?)
ON CONFLICT (id) DO UPDATE SET
    function = excluded.function, args = excluded.args, state = 'queued', attempts = 0,
    max_attempts = excluded.max_attempts, run_at = excluded.run_at, key = excluded.key,
    lease_owner = NULL, lease_expires = NULL, cancel_requested = 0, result = NULL,
    error = NULL, created_at = excluded.created_at, started_at = NULL, finished_at = NULL
WHERE jobs.state IN ('succeeded', 'failed', 'cancelled')
"""


def insert(connection: sqlite3.Connection, queue: str, jobs: Sequence[NewJob]) -> list[bool]:
    """Insert the jobs; per job, False if its id (its key) names a job still active."""
    inserted: list[bool] = []
    for job in jobs:
        cursor = connection.execute(
            _INSERT,
            (
                job.id,
                queue,
                job.function,
                job.args,
                job.max_attempts,
                job.run_at,
                job.key,
                job.created_at,
            ),
        )
        inserted.append(cursor.rowcount == 1)
    return inserted


_INSERT_ROW = "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
_CHUNK = 256
"""Most rows per multi-row statement (13 parameters a row, well under SQLite's 32,766)."""


def chunks(items: Sequence[_T]) -> Iterator[Sequence[_T]]:
    """``items`` in slices of a power of two long (at most :data:`_CHUNK`): a multi-row
    statement then has one of 9 shapes, which stay in the connection's statement cache.
    Preparing a fresh 100-row statement costs ~1.3 ms, running a cached one ~0.15 ms."""
    start = 0
    while start < len(items):
        size = min(_CHUNK, 1 << ((len(items) - start).bit_length() - 1))
        yield items[start : start + size]
        start += size


def insert_many(
    connection: sqlite3.Connection, queue: str, batches: Sequence[Sequence[NewJob]]
) -> list[list[bool]]:
    """:func:`insert` for the enqueues of a commit group: the jobs without a key (fresh random
    ids) in multi-row statements, each keyed one on its own (it may name an active job)."""
    plain = [job for jobs in batches for job in jobs if job.key is None]
    for chunk in chunks(plain):
        values: list[Any] = []
        for job in chunk:
            handed = job.lease_owner is not None
            values += (
                job.id,
                queue,
                job.function,
                job.args,
                "running" if handed else "queued",
                1 if handed else 0,
                job.max_attempts,
                job.run_at,
                job.key,
                job.lease_owner,
                job.lease_expires,
                job.created_at,
                job.created_at if handed else None,
            )
        connection.execute(
            "INSERT INTO jobs (id, queue, function, args, state, attempts, max_attempts, run_at, "
            "key, lease_owner, lease_expires, created_at, started_at) VALUES "
            f"{','.join([_INSERT_ROW] * len(chunk))}",
            values,
        )
    results: list[list[bool]] = []
    for jobs in batches:
        keyed = [job for job in jobs if job.key is not None]
        inserted = iter(insert(connection, queue, keyed) if keyed else [])
        results.append([True if job.key is None else next(inserted) for job in jobs])
    return results


_PICK = """
SELECT json_group_array(json_array(seq, id, function,
    CASE WHEN json_valid(args) THEN json(args) ELSE json_quote(args) END, attempts, max_attempts,
    CAST(created_at * 1000 AS INTEGER)))
FROM (SELECT seq, id, function, args, attempts, max_attempts, created_at FROM jobs
      WHERE queue = ? AND state = 'queued' AND run_at <= ? ORDER BY run_at, seq LIMIT ?)
"""
_TAKE = """
UPDATE jobs SET state = 'running', attempts = attempts + 1, lease_owner = ?,
    lease_expires = ?, started_at = ?
WHERE seq IN (SELECT value FROM json_each(?))
"""


def claim(
    connection: sqlite3.Connection,
    queue: str,
    owner: str,
    limit: int,
    now: float,
    lease_expires: float,
) -> tuple[list[Claimed], float | None]:
    """Lease up to ``limit`` runnable jobs to ``owner``; with none, when the next one is due.

    Two statements of one row each however many jobs (the picked rows travel as one JSON
    array): the thread takes the GIL back twice, not once per job.
    """
    picked = json.loads(connection.execute(_PICK, (queue, now, limit)).fetchone()[0])
    if picked:
        seqs = json.dumps([row[0] for row in picked])
        connection.execute(_TAKE, (owner, lease_expires, now, seqs))
        return [
            Claimed(
                id=row[1],
                function=row[2],
                args=row[3],
                attempts=row[4] + 1,
                max_attempts=row[5],
                created_at=row[6] / 1000,  # JSON has 15 digits: exact in ms, not in s
                started_at=now,
            )
            for row in picked
        ], None
    due = connection.execute(
        "SELECT min(run_at) FROM jobs WHERE queue = ? AND state = 'queued'", (queue,)
    ).fetchone()[0]
    return [], due


def _count(connection: sqlite3.Connection, queue: str, outcome: str, by: int = 1) -> None:
    connection.execute(
        "INSERT INTO outcomes (queue, outcome, count) VALUES (?, ?, ?) "
        "ON CONFLICT (queue, outcome) DO UPDATE SET count = count + excluded.count",
        (queue, outcome, by),
    )


# Dead letters: a claimed row that cannot run (its arguments no JSON array, its function
# registered nowhere in the worker) is kept in state 'dead' (read as failed by handles, never
# pruned); the outcome 'dead' of ``outcomes`` counts them, so statistics reads no row.


def dead(
    connection: sqlite3.Connection, queue: str, owner: str, job_id: str, error: str, now: float
) -> None:
    """Move a job leased to ``owner`` to the dead letters."""
    cursor = connection.execute(
        "UPDATE jobs SET state = 'dead', error = ?, finished_at = ?, lease_owner = NULL, "
        "lease_expires = NULL WHERE id = ? AND queue = ? AND state = 'running' "
        "AND lease_owner = ?",
        (error, now, job_id, queue, owner),
    )
    if cursor.rowcount:
        _count(connection, queue, "dead")


def dead_letters(
    connection: sqlite3.Connection, queue: str
) -> list[tuple[str, str, str, str | None, float]]:
    """``(id, function, args, error, finished_at)`` of the dead rows of ``queue``, oldest
    first (a scan: an operator's occasional read)."""
    return list(
        connection.execute(
            "SELECT id, function, args, error, finished_at FROM jobs "
            "WHERE queue = ? AND state = 'dead' ORDER BY finished_at",
            (queue,),
        )
    )


def requeue_dead(connection: sqlite3.Connection, queue: str, job_id: str, now: float) -> bool:
    """Queue a dead job again from its first attempt; False if there is none."""
    cursor = connection.execute(
        "UPDATE jobs SET state = 'queued', attempts = 0, run_at = ?, error = NULL, "
        "started_at = NULL, finished_at = NULL WHERE id = ? AND queue = ? AND state = 'dead'",
        (now, job_id, queue),
    )
    if cursor.rowcount:
        _count(connection, queue, "dead", -1)
    return cursor.rowcount == 1


def discard_dead(connection: sqlite3.Connection, queue: str, job_id: str) -> bool:
    """Delete a dead job; False if there is none."""
    cursor = connection.execute(
        "DELETE FROM jobs WHERE id = ? AND queue = ? AND state = 'dead'", (job_id, queue)
    )
    if cursor.rowcount:
        _count(connection, queue, "dead", -1)
    return cursor.rowcount == 1


def finish_many(
    connection: sqlite3.Connection,
    key: tuple[str, str],
    items: Sequence[tuple[str, str, str | None, str | None, float]],
) -> list[bool]:
    """:func:`finish` for the outcomes ``(id, state, result, error, now)`` a worker ``owner``
    stores in one commit group: per item whether it still held the job (and stored it)."""
    queue, owner = key
    lost: set[str] = set()
    for chunk in chunks(items):
        ids = [item[0] for item in chunk]
        marks = ",".join("?" * len(chunk))
        found = connection.execute(
            f"SELECT json_group_array(id) FROM jobs WHERE id IN ({marks}) "
            "AND (lease_owner IS NOT ? OR state != 'running')",
            (*ids, owner),
        ).fetchone()[0]
        lost.update(json.loads(found))
        values: list[Any] = [value for item in chunk if item[0] not in lost for value in item]
        if values:
            rows = len(values) // 5
            connection.execute(
                "UPDATE jobs SET state = v.column2, result = v.column3, error = v.column4, "
                "finished_at = v.column5, lease_owner = NULL, lease_expires = NULL "
                f"FROM (VALUES {','.join(['(?, ?, ?, ?, ?)'] * rows)}) AS v "
                "WHERE jobs.id = v.column1",
                values,
            )
    counts = Counter(item[1] for item in items if item[0] not in lost)
    if counts:
        connection.execute(
            "INSERT INTO outcomes (queue, outcome, count) VALUES "
            f"{','.join(['(?, ?, ?)'] * len(counts))} "
            "ON CONFLICT (queue, outcome) DO UPDATE SET count = count + excluded.count",
            [value for outcome, n in counts.items() for value in (queue, outcome, n)],
        )
    return [item[0] not in lost for item in items]


def retry(
    connection: sqlite3.Connection, job_id: str, owner: str, run_at: float, error: str
) -> None:
    """Queue a failed run again from ``run_at`` (its backoff), if ``owner`` still holds it."""
    connection.execute(
        "UPDATE jobs SET state = 'queued', run_at = ?, error = ?, lease_owner = NULL, "
        "lease_expires = NULL WHERE id = ? AND lease_owner = ? AND state = 'running'",
        (run_at, error, job_id, owner),
    )


def release(connection: sqlite3.Connection, job_ids: Sequence[str], owner: str) -> None:
    """Hand jobs a stopping worker did not finish back to the queue (this run not counted)."""
    connection.executemany(
        "UPDATE jobs SET state = 'queued', attempts = max(attempts - 1, 0), lease_owner = NULL, "
        "lease_expires = NULL WHERE id = ? AND lease_owner = ? AND state = 'running'",
        [(job_id, owner) for job_id in job_ids],
    )


def heartbeat(
    connection: sqlite3.Connection, queue: str, owner: str, now: float, lease_expires: float
) -> list[str]:
    """Renew ``owner``'s leases and say it is alive; the ids of its jobs asked to cancel."""
    connection.execute(
        "UPDATE jobs SET lease_expires = ? WHERE lease_owner = ? AND state = 'running'",
        (lease_expires, owner),
    )
    connection.execute(
        "INSERT INTO workers (id, queue, seen_at) VALUES (?, ?, ?) "
        "ON CONFLICT (id) DO UPDATE SET seen_at = excluded.seen_at",
        (owner, queue, now),
    )
    rows = connection.execute(
        "SELECT id FROM jobs WHERE lease_owner = ? AND state = 'running' AND cancel_requested",
        (owner,),
    ).fetchall()
    return [str(row[0]) for row in rows]


def leave(connection: sqlite3.Connection, owner: str) -> None:
    connection.execute("DELETE FROM workers WHERE id = ?", (owner,))


def reclaim(
    connection: sqlite3.Connection, queue: str, now: float, stale_workers: float
) -> list[Reclaimed]:
    """Take back the jobs whose lease expired: queued again, or failed past max_attempts."""
    rows = connection.execute(
        "SELECT id, function, lease_owner, started_at, attempts, max_attempts, cancel_requested "
        "FROM jobs WHERE queue = ? AND state = 'running' AND lease_expires < ?",
        (queue, now),
    ).fetchall()
    reclaimed: list[Reclaimed] = []
    for job_id, function, owner, started, attempts, max_attempts, cancel in rows:
        held = now - (started or now)
        if cancel:
            connection.execute(
                "UPDATE jobs SET state = 'cancelled', finished_at = ?, lease_owner = NULL, "
                "lease_expires = NULL WHERE id = ?",
                (now, job_id),
            )
            _count(connection, queue, "cancelled")
            requeued = False
        elif attempts >= max_attempts:
            error = (
                '{"type": "trio_bg.durable.JobLost", "message": "the worker running it was '
                f'lost {attempts} times", "traceback": ""}}'
            )
            connection.execute(
                "UPDATE jobs SET state = 'failed', error = ?, finished_at = ?, "
                "lease_owner = NULL, lease_expires = NULL WHERE id = ?",
                (error, now, job_id),
            )
            _count(connection, queue, "failed")
            requeued = False
        else:
            # Its run_at is kept (it was due already): it goes first, not behind the queue.
            connection.execute(
                "UPDATE jobs SET state = 'queued', lease_owner = NULL, lease_expires = NULL "
                "WHERE id = ?",
                (job_id,),
            )
            requeued = True
        reclaimed.append(Reclaimed(job_id, function, str(owner), held, requeued))
    connection.execute(
        "DELETE FROM workers WHERE queue = ? AND seen_at < ?", (queue, now - stale_workers)
    )
    return reclaimed


def cancel(connection: sqlite3.Connection, queue: str, job_id: str, now: float) -> str | None:
    """``cancelled`` (it was queued), ``requested`` (it runs: its worker will), or None."""
    cursor = connection.execute(
        "UPDATE jobs SET state = 'cancelled', finished_at = ? WHERE id = ? AND state = 'queued'",
        (now, job_id),
    )
    if cursor.rowcount:
        _count(connection, queue, "cancelled")
        return "cancelled"
    cursor = connection.execute(
        "UPDATE jobs SET cancel_requested = 1 WHERE id = ? AND state = 'running'", (job_id,)
    )
    return "requested" if cursor.rowcount else None


def set_progress(connection: sqlite3.Connection, items: Sequence[tuple[str, str]]) -> None:
    """Store the last progress report ``(id, json)`` of running jobs."""
    connection.executemany(
        "UPDATE jobs SET progress = ? WHERE id = ? AND state = 'running'",
        [(text, job_id) for job_id, text in items],
    )


def take_instants(
    connection: sqlite3.Connection,
    queue: str,
    job: str,
    max_attempts: int,
    decide: Callable[[float | None], Plan],
    skip_overlap: bool,
    now: float,
) -> Taken:
    """A periodic job's atomic step (inside the commit group's ``BEGIN IMMEDIATE``: no other
    process writes between the read and the writes): read the last instant taken, ``decide``
    what to run, insert those jobs (ids from the instant: the same in every process), record
    the newest instant. With ``skip_overlap``, the instants are skipped (recorded, not run)
    while the job of an earlier take is still queued or running."""
    row = connection.execute(
        "SELECT instant, job FROM schedules WHERE queue = ? AND name = ?", (queue, job)
    ).fetchone()
    last, last_job = (None, None) if row is None else (float(row[0]), row[1])
    chosen = decide(last)
    if chosen.newest is None:
        return Taken((), (), 0)
    enqueued: list[float] = []
    skipped: list[float] = []
    # Overlap is judged once, against the run left by an earlier take: the instants of one
    # take are one decision (catch_up="all" would otherwise run only the first missed one).
    busy = skip_overlap and last_job is not None and _active(connection, last_job)
    for instant in chosen.run:
        if busy:
            skipped.append(instant)
            continue
        job_id = instant_job_id(queue, job, instant)
        connection.execute(
            "INSERT INTO jobs (id, queue, function, args, state, max_attempts, run_at, "
            "created_at) VALUES (?, ?, ?, '[]', 'queued', ?, ?, ?) ON CONFLICT (id) DO NOTHING",
            (job_id, queue, job, max_attempts, now, now),
        )
        enqueued.append(instant)
        last_job = job_id
    connection.execute(
        "INSERT INTO schedules (queue, name, instant, job) VALUES (?, ?, ?, ?) "
        "ON CONFLICT (queue, name) DO UPDATE SET instant = excluded.instant, job = excluded.job",
        (queue, job, chosen.newest, last_job),
    )
    return Taken(tuple(enqueued), tuple(skipped), chosen.dropped)


def _active(connection: sqlite3.Connection, job_id: str) -> bool:
    found = connection.execute(
        "SELECT 1 FROM jobs WHERE id = ? AND state IN ('queued', 'running')", (job_id,)
    ).fetchone()
    return found is not None


def last_progress(
    connection: sqlite3.Connection, key: None, items: Sequence[tuple[str, str]]
) -> list[None]:
    """The last report ``(id, json)`` of jobs that just ended in this worker, written whatever
    their state now (the outcome may be committed first)."""
    connection.executemany(
        "UPDATE jobs SET progress = ? WHERE id = ?", [(text, job_id) for job_id, text in items]
    )
    return [None] * len(items)


def schedules(connection: sqlite3.Connection, queue: str) -> dict[str, tuple[float, str | None]]:
    """Each periodic job's last instant taken and the id of its last job run."""
    return {
        name: (float(instant), job)
        for name, instant, job in connection.execute(
            "SELECT name, instant, job FROM schedules WHERE queue = ?", (queue,)
        )
    }


def running(connection: sqlite3.Connection, queue: str, limit: int) -> list[JobRow]:
    """The oldest ``limit`` running jobs of ``queue`` (for a dashboard)."""
    return [
        JobRow(*row)
        for row in connection.execute(
            f"SELECT {ROW_COLUMNS} FROM jobs WHERE queue = ? AND state = 'running' "
            "ORDER BY lease_expires LIMIT ?",
            (queue, limit),
        )
    ]


def read(connection: sqlite3.Connection, queue: str, job_ids: Sequence[str]) -> list[JobRow]:
    """The rows of those of the jobs the file still has."""
    rows: list[JobRow] = []
    for chunk in chunks(job_ids):
        marks = ",".join("?" * len(chunk))
        rows.extend(
            JobRow(*row)
            for row in connection.execute(
                f"SELECT {ROW_COLUMNS} FROM jobs WHERE queue = ? AND id IN ({marks})",
                (queue, *chunk),
            )
        )
    return rows


def prune(connection: sqlite3.Connection, queue: str, before: float, limit: int) -> int:
    """Delete up to ``limit`` jobs of ``queue`` that finished before ``before``."""
    cursor = connection.execute(
        "DELETE FROM jobs WHERE seq IN (SELECT seq FROM jobs WHERE queue = ? AND state IN "
        "('succeeded', 'failed', 'cancelled') AND finished_at < ? LIMIT ?)",
        (queue, before, limit),
    )
    return cursor.rowcount


def statistics(
    connection: sqlite3.Connection, queue: str, now: float, alive_since: float
) -> dict[str, int]:
    counts: dict[str, int] = dict.fromkeys(
        ("depth", "delayed", "in_flight", *FINISHED, "workers", "dead"), 0
    )
    # Two counts, each within its partial index (jobs_ready, jobs_leased): one query over
    # state IN ('queued', 'running') can use neither and reads every row of the table,
    # finished jobs included.
    row: Any = connection.execute(
        "SELECT count(*) FILTER (WHERE run_at <= ?), count(*) FROM jobs "
        "WHERE queue = ? AND state = 'queued'",
        (now, queue),
    ).fetchone()
    counts["depth"] = int(row[0])
    counts["delayed"] = int(row[1]) - int(row[0])
    row = connection.execute(
        "SELECT count(*) FROM jobs WHERE queue = ? AND state = 'running'", (queue,)
    ).fetchone()
    counts["in_flight"] = int(row[0])
    for outcome, count in connection.execute(
        "SELECT outcome, count FROM outcomes WHERE queue = ?", (queue,)
    ):
        counts[str(outcome)] = int(count)
    row = connection.execute(
        "SELECT count(*) FROM workers WHERE queue = ? AND seen_at >= ?", (queue, alive_since)
    ).fetchone()
    counts["workers"] = int(row[0])
    return counts
