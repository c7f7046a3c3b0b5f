"""A worker's outbox of progress reports: ``report_progress`` inside a durable job, to the store.

A job reports as often as it likes; the outbox keeps the last report per job and writes what it
holds at most once per ``interval`` (a second by default), in one write for all of them (a
journal statement, a Redis pipeline). The app's handles read it with their results
(``handle.progress``). A report may come from the job's own trio task or from a thread it
started (``trio.to_thread``): the outbox is woken through the trio token, which any thread may
use.
"""

from __future__ import annotations

import functools
import json
import logging
import math
import weakref
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any, cast, final

import trio

from .._core._progress import Progress, Reporter

logger = logging.getLogger("trio_bg.durable")

INTERVAL = 1.0
"""Seconds between two writes of a job's progress (the issue's "about once a second")."""


def encode_progress(progress: Progress) -> str:
    """``{"f": fraction, "m": message, "at": unix seconds}`` as JSON."""
    return json.dumps(
        {"f": progress.fraction, "m": progress.message, "at": progress.at.timestamp()},
        ensure_ascii=False,
    )


def decode_progress(text: object) -> Progress | None:
    """The :class:`~trio_bg.Progress` of :func:`encode_progress`'s JSON; None for anything else
    (a store may hold what another version wrote, or damage)."""
    if not isinstance(text, str | bytes):
        return None
    try:
        data: Any = json.loads(text)
    except ValueError:
        return None
    if not isinstance(data, dict):
        return None
    fields = cast("dict[str, Any]", data)
    fraction: Any = fields.get("f")
    message: Any = fields.get("m")
    at: Any = fields.get("at")
    if fraction is not None and (
        isinstance(fraction, bool)
        or not isinstance(fraction, int | float)
        or not 0 <= fraction <= 1
    ):
        return None
    if message is not None and not isinstance(message, str):
        return None
    if isinstance(at, bool) or not isinstance(at, int | float) or not math.isfinite(at):
        return None
    try:
        moment = datetime.fromtimestamp(at, UTC)
    except (OverflowError, OSError, ValueError):
        return None
    return Progress(None if fraction is None else float(fraction), message, moment)


def progress_key(worker: Any, job_id: str) -> str:
    """The Redis key of a job's last report (beside its result; it expires with it)."""
    key: str = worker.results_key + job_id + ":progress"
    return key


_OUTBOXES: weakref.WeakKeyDictionary[Any, ProgressOutbox] = weakref.WeakKeyDictionary()


def outbox_for(worker: Any, ttl: int) -> ProgressOutbox:
    """The outbox of a streaq worker, made at its first job and written by a system task of the
    trio run (it ends with the run): one pipeline of SETs with the result's TTL per write."""
    outbox = _OUTBOXES.get(worker)
    if outbox is None:

        async def write(pending: dict[str, str]) -> None:
            try:
                async with worker.redis.pipeline(transaction=False) as pipe:
                    for job_id, text in pending.items():
                        pipe.set(progress_key(worker, job_id), text, ex=ttl)
            except Exception as exc:  # a lost Redis: the next report tries again
                logger.warning("worker %s: cannot store progress: %s", worker.id, exc)

        outbox = _OUTBOXES[worker] = ProgressOutbox(write)
        trio.lowlevel.spawn_system_task(outbox.run, name="trio_bg durable progress")
    return outbox


@final
class ProgressOutbox:
    """See the module docstring. ``write`` stores ``{job id: JSON}``; :meth:`run` is the loop."""

    def __init__(
        self,
        write: Callable[[dict[str, str]], Awaitable[None]],
        *,
        interval: float = INTERVAL,
        local: Callable[[str, Progress], None] | None = None,
    ) -> None:
        self._write = write
        self._interval = interval
        self._local = local
        self._pending: dict[str, str] = {}
        self._token = trio.lowlevel.current_trio_token()
        self._wake = trio.Event()

    def reporter(self, job_id: str) -> Reporter:
        """What ``report_progress`` calls inside job ``job_id`` (``_progress.reporter``)."""
        return functools.partial(self._report, job_id)

    def _report(self, job_id: str, progress: Progress) -> None:
        # run_sync_soon: safe from any thread, and from the trio thread itself; the outbox is
        # then only ever touched in the trio thread.
        self._token.run_sync_soon(self._woken, job_id, progress)

    def _woken(self, job_id: str, progress: Progress) -> None:
        self._pending[job_id] = encode_progress(progress)
        if self._local is not None:
            self._local(job_id, progress)  # this process's own handles learn it at once
        self._wake.set()

    def take(self, job_id: str) -> str | None:
        """The job ended: its report still waiting to be written, if any (the worker stores it
        with the outcome, so the last report is kept)."""
        return self._pending.pop(job_id, None)

    async def run(self) -> None:
        """Write what has been reported, at most once per interval, until cancelled."""
        while True:
            await self._wake.wait()
            self._wake = trio.Event()
            pending, self._pending = self._pending, {}
            if pending:
                await self._write(pending)
            await trio.sleep(self._interval)
