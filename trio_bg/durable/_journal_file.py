"""JournalFile: one SQLite connection to a journal file, owned by a thread of its own.

Every statement of a process's queue runs on that thread, so the trio run loop never blocks on
the file. Callers put requests (a function of the connection) on a queue; the thread takes all
the requests waiting, runs them in **one transaction** and commits once (group commit: enqueues,
claims and completions that arrive together share a commit and its fsync), then hands the
results back to trio with one ``run_sync_soon`` per group. A request that raises makes the
thread roll the group back and run its requests again one transaction each, so one bad request
fails alone.

While no request waits, the thread watches the file for commits of other connections (other
processes, other queues on the same file): ``PRAGMA data_version`` changes when another
connection committed. It asks every millisecond while the file is busy and backs off to
``idle_poll`` seconds after a second without a change; a change calls ``on_change`` in trio.

Measured against sqlite-anyio (which hops to a worker thread per statement): see
docs/journal.md; a thread of our own batches a whole group for one hop each way.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import queue
import sqlite3
import threading
import time
from collections.abc import Callable
from typing import Any, Final, final

import trio

logger = logging.getLogger("trio_bg.durable")

SCHEMA_VERSION: Final = 2
"""``PRAGMA user_version`` of a journal this code writes (see docs/journal.md, the schema)."""

SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS jobs (
    seq INTEGER PRIMARY KEY,             -- claim order among jobs runnable at the same time
    id TEXT NOT NULL UNIQUE,             -- job-<32 hex>, the handle's id
    queue TEXT NOT NULL,                 -- DurableQueue(name=...)
    function TEXT NOT NULL,              -- the registered job name
    args TEXT NOT NULL,                  -- JSON array of the arguments
    state TEXT NOT NULL,                 -- queued|running|succeeded|failed|cancelled
    attempts INTEGER NOT NULL DEFAULT 0, -- deliveries so far (a reclaimed run counts)
    max_attempts INTEGER NOT NULL,       -- deliveries allowed (retries + lost workers)
    run_at REAL NOT NULL,                -- unix seconds: runnable from then (delay, backoff)
    key TEXT,                            -- enqueue(key=...): one active job per key
    lease_owner TEXT,                    -- the worker running it
    lease_expires REAL,                  -- unix seconds: reclaimed after this
    cancel_requested INTEGER NOT NULL DEFAULT 0,
    result TEXT,                         -- JSON of the return value
    error TEXT,                          -- JSON {"type", "message", "traceback"}
    created_at REAL NOT NULL,
    started_at REAL,
    finished_at REAL,
    progress TEXT                        -- JSON {"f", "m", "at"}: what the job last reported
);
CREATE INDEX IF NOT EXISTS jobs_ready ON jobs (queue, run_at, seq) WHERE state = 'queued';
CREATE INDEX IF NOT EXISTS jobs_leased ON jobs (queue, lease_expires) WHERE state = 'running';
CREATE INDEX IF NOT EXISTS jobs_finished ON jobs (queue, finished_at)
    WHERE state IN ('succeeded', 'failed', 'cancelled');
CREATE TABLE IF NOT EXISTS outcomes (
    queue TEXT NOT NULL,
    outcome TEXT NOT NULL,               -- succeeded|failed|cancelled
    count INTEGER NOT NULL,
    PRIMARY KEY (queue, outcome)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS workers (
    id TEXT PRIMARY KEY,                 -- host-pid-random
    queue TEXT NOT NULL,
    seen_at REAL NOT NULL                -- unix seconds of its last heartbeat
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS schedules (
    queue TEXT NOT NULL,
    name TEXT NOT NULL,                  -- the periodic job's name
    instant REAL NOT NULL,               -- unix seconds: the last instant taken (run or skipped)
    job TEXT,                            -- the id of the job of the last instant enqueued
    PRIMARY KEY (queue, name)
) WITHOUT ROWID;
"""

MIGRATIONS: Final = {
    1: (
        "ALTER TABLE jobs ADD COLUMN progress TEXT",
        SCHEMA[SCHEMA.index("CREATE TABLE IF NOT EXISTS schedules") :],
    ),
}
"""Per older ``user_version``: the statements that bring a journal from it to the next."""

_GROUP = 2000
"""Most requests committed in one transaction."""
_BUSY_POLL = 0.001
_BUSY_FOR = 1.0


class JournalError(Exception):
    """The file could not be opened or written; ``cause`` says why in a few words."""

    def __init__(self, cause: str, error: BaseException) -> None:
        super().__init__(f"{cause}: {error}")
        self.cause = cause
        self.error = error


def describe(error: BaseException) -> str:
    """A few words for what went wrong with the file, from SQLite's or the OS's error."""
    text = str(error).lower()
    if isinstance(error, OSError) and error.errno == errno.ENOSPC:
        return "is on a full disk"
    if "locked" in text or "busy" in text:
        return "is locked by another program"
    if "readonly" in text or "read-only" in text:
        return "is read-only"
    if "full" in text or "no space" in text:
        return "is on a full disk"
    if "not a database" in text or "malformed" in text or "corrupt" in text:
        return "is corrupted (not an SQLite database)"
    if "unable to open" in text or isinstance(error, OSError):
        return "cannot be opened or created"
    if "disk i/o" in text:
        return "could not be read or written (disk I/O error)"
    return "failed"


def _read_only(path: str) -> bool:
    """Whether ``path`` exists and cannot be written (its mode, or a read-only file system)."""
    try:
        read_only_fs = bool(
            os.statvfs(os.path.dirname(os.path.abspath(path))).f_flag & os.ST_RDONLY
        )
        return os.path.exists(path) and (read_only_fs or not os.access(path, os.W_OK))
    except OSError:
        return False


@final
class _Request:
    __slots__ = ("args", "detached", "error", "event", "fn", "result")

    def __init__(
        self, fn: Callable[..., Any], args: tuple[Any, ...], *, detached: bool = False
    ) -> None:
        self.fn = fn
        self.args = args
        self.result: Any = None
        self.error: BaseException | None = None
        self.event = trio.Event()
        self.detached = detached
        """Nobody waits for it: an error is logged."""


@final
class _Batch:
    """Requests of one kind gathered on the trio side into one request for the thread.

    Items join it until the thread seals it (under the file's lock) and runs
    ``fn(connection, key, items)``, which returns one result per item: one statement for many
    jobs, so the thread (which lets go of the GIL at every SQLite step) takes the GIL back far
    fewer times while the run loop is busy.
    """

    __slots__ = ("fn", "items", "key", "request", "results", "sealed")

    def __init__(self, fn: Callable[..., list[Any]], key: Any) -> None:
        self.fn = fn
        self.key = key
        self.items: list[Any] = []
        self.results: list[Any] = []
        self.sealed = False
        self.request: _Request | None = None


@final
class JournalFile:
    """A connection to ``path`` on a thread of its own (see the module docstring)."""

    def __init__(
        self,
        path: str,
        *,
        synchronous: str,
        busy_timeout: float,
        idle_poll: float,
        on_change: Callable[[], None],
    ) -> None:
        self.path = path
        self._synchronous = synchronous
        self._busy_timeout = busy_timeout
        self._idle_poll = idle_poll
        self._on_change = on_change
        self._requests: queue.SimpleQueue[_Request | None] = queue.SimpleQueue()
        self._token = trio.lowlevel.current_trio_token()
        self._thread: threading.Thread | None = None
        self._connection: sqlite3.Connection | None = None
        self._lock = threading.Lock()
        self._batches: dict[tuple[Any, Any], _Batch] = {}

    # -- trio side ----------------------------------------------------------------------------

    async def open(self) -> None:
        """Start the thread, open the file, create or check the schema.

        Raises :class:`JournalError` (within the busy timeout for a locked file). Cancelling the
        call leaves the thread to finish opening, then closes it.
        """
        self._thread = threading.Thread(
            target=self._serve, name=f"trio_bg journal {self.path}", daemon=True
        )
        self._thread.start()
        try:
            await self.call(self._open_connection)
        except BaseException:
            await self.close()
            raise

    async def call(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Run ``fn(connection, *args)`` on the thread in the next commit group; its result.

        Returns once the group committed. Raises what ``fn`` raised, or :class:`JournalError`
        if the commit failed. Cancelling the caller stops its wait only: the request runs.
        """
        request = _Request(fn, args)
        self._requests.put(request)
        await request.event.wait()
        if request.error is not None:
            raise request.error
        return request.result

    async def call_many(self, fn: Callable[..., list[Any]], key: Any, item: Any) -> Any:
        """Like :meth:`call` for ``fn(connection, key, items)``: ``item`` joins the batch of
        ``(fn, key)`` not yet taken by the thread; returns ``item``'s result."""
        batch, index = self._join(fn, key, item, detached=False)
        request = batch.request
        assert request is not None
        await request.event.wait()
        if request.error is not None:
            raise request.error
        return batch.results[index]

    def submit_many(self, fn: Callable[..., list[Any]], key: Any, item: Any) -> None:
        """:meth:`call_many` without waiting: an error is logged (by the thread's delivery)."""
        self._join(fn, key, item, detached=True)

    def _join(
        self, fn: Callable[..., list[Any]], key: Any, item: Any, *, detached: bool
    ) -> tuple[_Batch, int]:
        with self._lock:
            batch = self._batches.get((fn, key))
            if batch is None or batch.sealed:
                batch = self._batches[fn, key] = _Batch(fn, key)
                batch.request = _Request(self._run_batch, (batch,), detached=detached)
                self._requests.put(batch.request)
            index = len(batch.items)
            batch.items.append(item)
        return batch, index

    def _run_batch(self, connection: sqlite3.Connection, batch: _Batch) -> None:
        batch.results = batch.fn(connection, batch.key, batch.items)

    def _seal(self, group: list[_Request]) -> None:
        """No more items join the batches of ``group``: it runs now (whatever comes of it)."""
        with self._lock:
            for request in group:
                if request.fn == self._run_batch:
                    batch: _Batch = request.args[0]
                    batch.sealed = True
                    if self._batches.get((batch.fn, batch.key)) is batch:
                        del self._batches[batch.fn, batch.key]

    def submit(self, fn: Callable[..., Any], *args: Any) -> None:
        """Run ``fn(connection, *args)`` in the next group without waiting for it."""
        self._requests.put(_Request(fn, args))

    async def close(self) -> None:
        """Finish the requests already given, close the connection, end the thread.

        Shielded: a cancelled caller still waits for the thread (bounded by the busy timeout).
        """
        thread, self._thread = self._thread, None
        if thread is None:
            return
        self._requests.put(None)
        with trio.CancelScope(shield=True):
            await trio.to_thread.run_sync(thread.join)

    # -- the thread ---------------------------------------------------------------------------

    def _open_connection(self, _: sqlite3.Connection | None) -> None:
        try:
            self._connect()
        except sqlite3.Error as exc:
            if _read_only(self.path):
                raise JournalError("is read-only", exc) from exc
            raise

    def _connect(self) -> None:
        connection = sqlite3.connect(
            self.path,
            timeout=self._busy_timeout,
            isolation_level=None,
            check_same_thread=False,
            cached_statements=128,  # the multi-row shapes (see _journal_sql.chunks) and the rest
        )
        try:
            mode = connection.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise sqlite3.OperationalError(f"cannot use WAL (journal_mode is {mode})")
            connection.execute(f"PRAGMA synchronous={self._synchronous}")
            version = connection.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise sqlite3.DatabaseError(
                    f"schema version {version} is newer than this trio_bg's {SCHEMA_VERSION}"
                )
            if version < SCHEMA_VERSION:
                connection.execute("BEGIN IMMEDIATE")
                # Read again inside the write lock: another process may have just migrated it.
                version = connection.execute("PRAGMA user_version").fetchone()[0]
                if version == 0:
                    statements = SCHEMA.split(";\n")
                else:
                    statements = [s for v in range(version, SCHEMA_VERSION) for s in MIGRATIONS[v]]
                for statement in statements:
                    if statement.strip():
                        connection.execute(statement)
                connection.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
                connection.execute("COMMIT")
            else:
                connection.execute("SELECT count(*) FROM sqlite_schema").fetchone()
        except BaseException:
            connection.close()
            raise
        self._connection = connection

    def _serve(self) -> None:
        requests = self._requests
        last_version = -1
        busy_until = 0.0
        try:
            while True:
                wait = _BUSY_POLL if time.monotonic() < busy_until else self._idle_poll
                try:
                    first = requests.get(timeout=wait) if self._connection else requests.get()
                except queue.Empty:
                    first = None
                    if self._connection is not None:
                        version = self._data_version()
                        if version != last_version:
                            if last_version != -1:
                                busy_until = time.monotonic() + _BUSY_FOR
                                self._notify_change()
                            last_version = version
                    continue
                if first is None:
                    return
                group = [first]
                stop = False
                while len(group) < _GROUP:
                    try:
                        more = requests.get_nowait()
                    except queue.Empty:
                        break
                    if more is None:
                        stop = True
                        break
                    group.append(more)
                self._run_group(group)
                busy_until = time.monotonic() + _BUSY_FOR
                if self._connection is not None:
                    version = self._data_version()
                    if last_version not in (-1, version):
                        self._notify_change()
                    last_version = version
                if stop:
                    return
        finally:
            if self._connection is not None:
                with contextlib.suppress(sqlite3.Error):
                    self._connection.close()
                self._connection = None
            self._fail_waiting()

    def _data_version(self) -> int:
        assert self._connection is not None
        try:
            return int(self._connection.execute("PRAGMA data_version").fetchone()[0])
        except sqlite3.Error:
            return -1

    def _run_group(self, group: list[_Request]) -> None:
        self._seal(group)
        connection = self._connection
        if connection is None:  # the open request
            for request in group:
                self._run_alone(request)
            self._deliver(group)
            return
        try:
            connection.execute("BEGIN IMMEDIATE")
            try:
                for request in group:
                    request.result = request.fn(connection, *request.args)
                connection.execute("COMMIT")
            except BaseException:
                if connection.in_transaction:
                    connection.execute("ROLLBACK")
                raise
        except Exception:
            if len(group) == 1:
                self._run_alone(group[0])
            else:
                for request in group:
                    self._run_alone(request)
        self._deliver(group)

    def _run_alone(self, request: _Request) -> None:
        connection = self._connection
        request.result = None
        try:
            if connection is None:
                request.result = request.fn(None, *request.args)
                return
            connection.execute("BEGIN IMMEDIATE")
            try:
                request.result = request.fn(connection, *request.args)
                connection.execute("COMMIT")
            except BaseException:
                if connection.in_transaction:
                    connection.execute("ROLLBACK")
                raise
        except (sqlite3.Error, OSError) as exc:
            request.error = JournalError(describe(exc), exc)
        except Exception as exc:
            request.error = exc

    def _deliver(self, group: list[_Request]) -> None:
        def wake() -> None:
            for request in group:
                request.event.set()
                if request.detached and request.error is not None:
                    logger.error("journal %s: a write failed: %s", self.path, request.error)

        with contextlib.suppress(trio.RunFinishedError):  # the run is over: nobody waits
            self._token.run_sync_soon(wake)

    def _notify_change(self) -> None:
        with contextlib.suppress(trio.RunFinishedError):
            self._token.run_sync_soon(self._on_change)

    def _fail_waiting(self) -> None:
        waiting: list[_Request] = []
        while True:
            try:
                request = self._requests.get_nowait()
            except queue.Empty:
                break
            if request is not None:
                request.error = JournalError("is closed", RuntimeError("journal closed"))
                waiting.append(request)
        if waiting:
            self._deliver(waiting)
