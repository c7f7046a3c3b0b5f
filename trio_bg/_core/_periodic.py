"""In-process periodic tasks: the body of a schedule's own task (``tm.start_periodic_named``).

A schedule is a task of its manager that sleeps until each instant and then starts one run: an
ordinary task named as the schedule, with the start's options (timeout, retry, on_error,
shield). It belongs to this process only: N Hypercorn workers run it N times; a durable queue's
``@queue.periodic`` enqueues each instant once across processes.

``every=S`` counts from the schedule's start on trio's clock (the first run S seconds after it);
``cron=`` instants are wall-clock times in ``tz``, slept on trio's clock from the wall-clock time
read once at the start (so ``autojump_clock`` drives them in tests, and a wall-clock step does
not make a schedule run twice).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import trio

from ._exceptions import TaskRejected
from ._log import logger
from ._options import TaskOptions
from ._text import quoted

if TYPE_CHECKING:
    from ._handle import TaskHandle
    from ._manager import TaskManager
    from ._schedule import Schedule

MakeOptions = Callable[[], "TaskOptions | None"]


async def run_schedule(
    manager: TaskManager,
    *,
    name: str,
    fn: Callable[..., Any],
    args: tuple[Any, ...],
    schedule: Schedule,
    overlap: str,
    shield: bool,
    options: MakeOptions,
) -> None:
    """Start a run of ``fn(*args)`` at each instant of ``schedule`` until cancelled.

    ``overlap="skip"``: an instant that comes while the previous run is still active is skipped
    (one INFO line); ``"allow"``: it starts anyway. Cancellation (``cancel(handle)`` of the
    schedule, ``cancel_all()``, the manager's close, which stops schedules first) ends the
    schedule only; a run already started goes on as the task it is. The schedule also ends
    when the manager refuses a run because it is closing.
    """
    previous: TaskHandle[Any] | None = None
    for due in _due_times(schedule):
        await trio.sleep_until(due)
        if overlap == "skip" and previous is not None and not previous.done:
            logger.info(
                "periodic task %s: the run due now is skipped, the previous one (%s) is still "
                "running",
                quoted(name), previous.id,
            )  # fmt: skip
            continue
        try:
            previous = manager._spawn("start_periodic_named", name, fn, args, shield, options())
        except TaskRejected as exc:
            if manager.closed:
                return
            logger.warning("periodic task %s: a run was refused: %s", quoted(name), exc)


def _due_times(schedule: Schedule) -> Iterator[float]:
    """The instants of ``schedule`` on trio's clock, from now on."""
    start = trio.current_time()
    if schedule.every is not None:
        k = 1
        while True:
            yield start + k * schedule.every
            k += 1
    wall = time.time()
    for instant in schedule.instants_after(wall):
        yield start + (instant - wall)
