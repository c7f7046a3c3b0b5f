"""Tasks that outlive their cancellation: the close names them as stuck.

A close cannot end a task that shields itself or ignores cancellation (trio's nursery waits for
it), so it names it: one WARNING once the task has outlived its cancellation by ``STUCK_AFTER``,
then one every ``STUCK_INTERVAL``. Abandoned threads: ``tests/test_stuck_threads.py``.
"""

from __future__ import annotations

import logging
import re
from types import FunctionType

import pytest
import trio
import trio.testing

import trio_bg
from tests.conftest import trio_bg_records
from trio_bg import TaskState
from trio_bg._core._closing import STUCK_AFTER


async def shields_itself(seconds: float) -> None:
    with trio.CancelScope(shield=True):
        await trio.sleep(seconds)


async def catches_cancelled_then_cleans_up(seconds: float) -> None:
    try:
        await trio.sleep_forever()
    except trio.Cancelled:
        with trio.CancelScope(shield=True):
            await trio.sleep(seconds)  # a clean-up that takes its time
        raise


def _at(function: FunctionType, offset: int) -> str:
    """``name (file:line)`` of the line ``offset`` lines below the ``def`` of ``function``."""
    code = function.__code__
    return re.escape(f"{code.co_qualname} ({code.co_filename}:{code.co_firstlineno + offset})")


def _stuck(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in trio_bg_records(caplog, logging.WARNING)
        if "stuck" in r.getMessage()
    ]


async def test_a_task_that_shields_itself_is_named_as_stuck_every_ten_seconds(
    caplog: pytest.LogCaptureFixture, autojump_clock: trio.testing.MockClock
) -> None:
    async with trio_bg.open_task_manager("app", grace_period=1, shield_timeout=3) as tm:
        stubborn = tm.start_soon_named("stubborn", shields_itself, 25)
        quick = tm.start_soon_named("quick", trio.sleep, 100)
    # Cancelled at t=1 (the grace period): named at 2, 12 and 22; it ends at 25 on its own.
    assert trio.current_time() == 25
    assert (stubborn.state, quick.state) == (TaskState.SUCCEEDED, TaskState.CANCELLED)
    stuck = _stuck(caplog)
    assert len(stuck) == 3, stuck
    for line, since in zip(stuck, ("1.0", "11.0", "21.0"), strict=True):
        assert re.fullmatch(
            r"task manager 'app' closing: 1 task\(s\) stuck, still running after they were "
            r"cancelled \(a task that shields itself or ignores cancellation; the close waits for "
            rf"it\): 'stubborn' \({stubborn.id}\) cancelled {since} s ago, waiting in "
            + _at(shields_itself, 2) + r" -> sleep \(.*/trio/_timeouts\.py:\d+\)",
            line,
        ), line  # fmt: skip


async def test_a_shielded_task_is_stuck_counting_from_its_cap(
    caplog: pytest.LogCaptureFixture, autojump_clock: trio.testing.MockClock
) -> None:
    async with trio_bg.open_task_manager("app", grace_period=1, shield_timeout=3) as tm:
        ledger = tm.start_soon_named("ledger", catches_cancelled_then_cleans_up, 5, shield=True)
    # Cancelled at the cap (t=3), named at 4, ended at 8.
    assert trio.current_time() == 8
    (line,) = _stuck(caplog)
    assert f"'ledger' ({ledger.id}) cancelled 1.0 s ago, waiting in " in line
    assert re.search(_at(catches_cancelled_then_cleans_up, 5) + r" -> sleep \(", line), line


async def test_a_clean_up_shorter_than_the_stuck_wait_is_not_named(
    caplog: pytest.LogCaptureFixture, autojump_clock: trio.testing.MockClock
) -> None:
    async with trio_bg.open_task_manager("app", grace_period=1, shield_timeout=3) as tm:
        tm.start_soon_named("tidy", catches_cancelled_then_cleans_up, STUCK_AFTER - 0.01)
    assert trio.current_time() == pytest.approx(1 + STUCK_AFTER - 0.01)
    assert _stuck(caplog) == []


async def test_an_outer_cancellation_does_not_end_the_wait_for_a_stuck_task(
    caplog: pytest.LogCaptureFixture, autojump_clock: trio.testing.MockClock
) -> None:
    with trio.move_on_after(2) as outer:
        async with trio_bg.open_task_manager("app", grace_period=1, shield_timeout=3) as tm:
            stubborn = tm.start_soon_named("stubborn", shields_itself, 15)
    # Cancelled at t=1; the outer deadline (t=2) passes during the close, which waits on.
    assert outer.cancel_called
    assert trio.current_time() == 15
    assert stubborn.state == TaskState.SUCCEEDED
    assert len(_stuck(caplog)) == 2  # at 2 and 12
