"""The app the journal's crash test kills: ``python -m tests.journal_crash_app DB LEDGER
EFFECTS LEASE MODE``. It runs the queue's jobs in this process (``open_worker``): with MODE
``serve`` until it is killed (the test SIGKILLs it at random moments while jobs flow and starts
it again), with ``drain`` until the queue is empty, then it exits 0.

Each run of ``apply(n)`` leaves two traces:

- a line ``n`` appended to EFFECTS, a plain side effect that is *not* idempotent: it counts
  every run of every job (at-least-once shows as ``>= 1`` per job);
- the effect made idempotent as docs/journal.md says: in LEDGER (an SQLite file of its own), one
  transaction records ``n`` in ``applied`` (``ON CONFLICT DO NOTHING``) and, only if the row was
  new, adds 1 to ``total``: so ``total`` counts each job exactly once, however often it ran.
"""

from __future__ import annotations

import os
import sqlite3
import sys

import trio

from trio_bg.durable import DurableQueue

DB, LEDGER, EFFECTS, LEASE, MODE = (
    sys.argv[1:6] if __name__ == "__main__" else ("x", "x", "x", "1", "drain")
)

queue = DurableQueue(f"sqlite:///{DB}", name="crash", lease_timeout=float(LEASE))
_ledger: sqlite3.Connection | None = None


def open_ledger(path: str) -> sqlite3.Connection:
    connection = sqlite3.connect(path, timeout=30, isolation_level=None)
    connection.execute("PRAGMA journal_mode=WAL")
    connection.execute("CREATE TABLE IF NOT EXISTS applied (n INTEGER PRIMARY KEY)")
    connection.execute("CREATE TABLE IF NOT EXISTS total (v INTEGER NOT NULL)")
    if connection.execute("SELECT count(*) FROM total").fetchone()[0] == 0:
        connection.execute("INSERT INTO total VALUES (0)")
    return connection


@queue.task
async def apply(n: int) -> int:
    global _ledger
    fd = os.open(EFFECTS, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, f"{n}\n".encode())
    finally:
        os.close(fd)
    await trio.sleep(0.005)  # a job that takes a moment: kills land in the middle of some
    if _ledger is None:
        _ledger = open_ledger(LEDGER)
    ledger = _ledger
    ledger.execute("BEGIN IMMEDIATE")
    try:
        new = ledger.execute("INSERT INTO applied VALUES (?) ON CONFLICT DO NOTHING", (n,))
        if new.rowcount == 1:
            ledger.execute("UPDATE total SET v = v + 1")
        ledger.execute("COMMIT")
    except BaseException:
        ledger.execute("ROLLBACK")
        raise
    return n


async def main() -> None:
    async with queue.open_worker(concurrency=16, grace=1):
        while True:
            stats = await queue.statistics()
            if MODE == "drain" and stats.depth == stats.delayed == stats.in_flight == 0:
                return
            await trio.sleep(0.1)


if __name__ == "__main__":
    trio.run(main)
