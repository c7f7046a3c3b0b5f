"""The FIFO queue of a capped manager under cancellations: slots are released and the order
is kept."""

from __future__ import annotations

import gc
import re

import trio
import trio.testing

import trio_bg
from trio_bg.testing import check_accounting


def exact(message: str) -> str:
    return f"^{re.escape(message)}$"


async def test_cancelled_queued_tasks_are_released_while_the_slot_stays_busy() -> None:
    def live_handles() -> int:
        gc.collect()
        return sum(type(o) is trio_bg.TaskHandle for o in gc.get_objects())

    async with trio_bg.open_task_manager(max_running=1, recent_limit=0) as tm:
        busy = tm.start_soon(trio.sleep_forever)
        before = live_handles()
        for _ in range(5_000):
            tm.start_soon(trio.sleep_forever).cancel()  # queued behind `busy`, then cancelled
        trio_bg.set_recent_limit(trio_bg.set_recent_limit(0))  # empty the finished history
        # Without compaction the queue would still hold all 5,000 cancelled handles.
        assert live_handles() - before < 200
        stats = tm.statistics()
        assert (stats.pending, stats.running, stats.cancelled) == (0, 1, 5_000)
        check_accounting(stats)
        busy.cancel()


async def test_a_queue_keeps_its_order_through_cancellations(
    autojump_clock: trio.testing.MockClock,
) -> None:
    order: list[int] = []

    async def note(i: int) -> None:
        order.append(i)
        await trio.sleep(1)

    async with trio_bg.open_task_manager(max_running=1) as tm:
        handles = [tm.start_soon(note, i) for i in range(400)]
        for handle in handles[1:300]:
            handle.cancel()
        await tm.wait_idle()
    assert order == [0, *range(300, 400)]
