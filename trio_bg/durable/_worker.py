"""run_worker: a streaq worker for a queue, kept running through Redis outages, stopped by signal.

streaq's worker exits with an error as soon as Redis goes away. ``run_worker`` supervises it:
a lost Redis is logged and the worker is built and started again after a backoff (0.1 s,
doubling up to ``max_backoff``), with a fresh client. Jobs the lost worker held stay in the
stream's pending list and are reclaimed after the reclaim timeout, by this worker or another.

Signals: while streaq runs, its own handler takes SIGTERM and SIGINT: it stops reading the
stream, gives running jobs up to ``grace`` seconds to finish (then cancels them; they are
re-delivered at once), and returns; ``run_worker`` then returns. Outside that (starting,
backing off) ``run_worker``'s own receiver takes them and returns at once.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import time
from itertools import count
from typing import TYPE_CHECKING, cast

import trio

from .._core._checks import check_count, check_seconds
from .._core._trio_only import require_trio

if TYPE_CHECKING:
    from ._queue import DurableQueue

logger = logging.getLogger("trio_bg.durable")

_STABLE = 10.0
"""A worker that ran this many seconds before losing Redis starts again at the first backoff."""


async def run_worker(
    queue: DurableQueue,
    *,
    concurrency: int = 16,
    grace: float = 30.0,
    max_backoff: float = 5.0,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run jobs of ``queue`` until SIGTERM or SIGINT; ``python -m trio_bg worker`` calls this.

    Args:
        queue: the queue whose jobs to run (its registered jobs, its Redis, its reclaim timeout).
        concurrency: jobs run at once in this process.
        grace: seconds running jobs get to finish after a signal (whole seconds, rounded up).
        max_backoff: the longest wait between two attempts to reach Redis.

    Returns after a signal, once running jobs have finished (or the grace ran out). Errors
    other than a lost Redis propagate. Cancelling the call cancels the worker at once: running
    jobs are re-delivered after the reclaim timeout.
    """
    require_trio()
    check_count("concurrency", concurrency, 1)
    check_seconds("grace", grace, allow_inf=False)
    check_seconds("max_backoff", max_backoff, allow_inf=False)
    if queue.is_journal:
        await _run_journal_worker(queue, concurrency, grace, task_status)
        return
    from ._connection import first_failure, is_connection_failure  # Redis: the durable extra
    from ._redis import run_streaq_worker

    prefix = f"{socket.gethostname()}-{os.getpid()}"
    backoff = 0.1
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        task_status.started()
        for attempt in count(1):
            worker = queue.streaq_worker(
                concurrency=concurrency,
                grace=grace,
                worker_id=f"{prefix}-{attempt}",
                register=True,
            )
            started = time.monotonic()
            try:
                await run_streaq_worker(worker, queue=queue.name)
            except (Exception, BaseExceptionGroup) as exc:
                if not is_connection_failure(exc):
                    raise
                if _stopped_by_signal(exc):
                    # streaq was already stopping for SIGTERM/SIGINT when a connection failed
                    # (a connect on the way out, on a loaded machine): a stop, not a lost Redis.
                    logger.info("worker %s stopped (a connection failed on the way out)", worker.id)
                    return
                if time.monotonic() - started > _STABLE:
                    backoff = 0.1
                logger.warning(
                    "worker %s lost Redis (%s); starting again in %.1f s",
                    worker.id,
                    first_failure(exc),
                    backoff,
                )
            else:
                logger.info("worker %s stopped", worker.id)
                return
            with trio.move_on_after(backoff):
                async for signum in signals:
                    name = signal.Signals(signum).name
                    logger.info("worker: %s while reconnecting; stopping", name)
                    return
            backoff = min(backoff * 2, max_backoff)


def _stopped_by_signal(exc: BaseException) -> bool:
    """Whether ``exc`` holds the cancellation streaq's signal handler makes for SIGTERM/SIGINT."""
    if isinstance(exc, BaseExceptionGroup):
        group = cast("BaseExceptionGroup[BaseException]", exc)
        return any(_stopped_by_signal(inner) for inner in group.exceptions)
    return isinstance(exc, trio.Cancelled) and "Signal handler received SIG" in str(exc)


async def _run_journal_worker(
    queue: DurableQueue, concurrency: int, grace: float, task_status: trio.TaskStatus[None]
) -> None:
    """A journal's worker: open the file, run jobs until SIGTERM or SIGINT, then stop
    gracefully. A file that cannot be opened raises QueueUnavailable (the command exits 1)."""
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async with queue, queue.open_worker(concurrency=concurrency, grace=grace):
            task_status.started()
            async for signum in signals:
                logger.info("worker: %s; stopping", signal.Signals(signum).name)
                break
