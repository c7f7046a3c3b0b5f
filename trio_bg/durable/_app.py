"""Durable queues in an ASGI app's lifespan: ``TaskMiddleware(queues=[...], queue_concurrency=N)``.

Kept here, not in the middleware, so that ``trio_bg.asgi`` imports nothing of the durable extra
until an app passes queues.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from contextlib import AsyncExitStack
from typing import TYPE_CHECKING, cast

import trio

from ._exceptions import QueueUnavailable
from ._queue import DurableQueue

if TYPE_CHECKING:
    from .._core._manager import TaskManager

logger = logging.getLogger("trio_bg.durable")


def check_queues(queues: Iterable[DurableQueue]) -> tuple[DurableQueue, ...]:
    """The queues as a tuple; TypeError for anything but DurableQueue objects, ValueError for
    one given twice."""
    if isinstance(cast(object, queues), str | bytes) or not isinstance(
        cast(object, queues), Iterable
    ):
        raise TypeError(
            f"queues must be an iterable of DurableQueue, got {type(cast(object, queues)).__name__}"
        )
    checked: list[DurableQueue] = []
    for queue in queues:
        if not isinstance(cast(object, queue), DurableQueue):
            raise TypeError(f"queues must hold DurableQueue objects, got {type(queue).__name__}")
        if queue in checked:
            raise ValueError(f"queues holds durable queue {queue.name!r} twice")
        checked.append(queue)
    return tuple(checked)


async def open_queues(stack: AsyncExitStack, queues: Iterable[DurableQueue]) -> None:
    """Open each queue on ``stack`` (closed when it unwinds). A queue that cannot be opened is
    logged in one line and left closed, remembering why (its enqueues raise that): the app
    still starts and serves its in-process tasks."""
    for queue in queues:
        if queue.is_open:
            continue
        try:
            await stack.enter_async_context(queue)
        except QueueUnavailable as exc:  # the queue remembers it: its enqueues raise it
            logger.error("%s; the app goes on without it", exc)


def start_workers(
    manager: TaskManager,
    queues: Iterable[DurableQueue],
    concurrency: int,
    grace: float,
    stop: trio.Event,
) -> None:
    """Start a worker of ``concurrency`` jobs per open queue, as app tasks that stop taking
    jobs when ``stop`` is set and give running jobs ``grace`` seconds."""
    for queue in queues:
        if queue.is_open:
            manager.start_soon_named(
                f"durable worker {queue.name}", _run_jobs, queue, concurrency, grace, stop
            )


_LONGEST_GRACE = 365 * 86400.0
"""The grace a worker gets for the app's ``grace_period=math.inf`` (a worker's grace is finite:
streaq takes whole seconds)."""


async def _run_jobs(queue: DurableQueue, concurrency: int, grace: float, stop: trio.Event) -> None:
    """Run ``queue``'s jobs until ``stop`` is set, then stop gracefully."""
    async with queue.open_worker(concurrency=concurrency, grace=min(grace, _LONGEST_GRACE)):
        await stop.wait()
