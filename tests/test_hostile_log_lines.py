"""The core's log lines and shutdown report stay one readable, bounded line whatever a task is
called: a megabyte name is cut (with an ellipsis), a lone surrogate is escaped, and a handler
writing strict UTF-8 never fails on them."""

from __future__ import annotations

import logging

import pytest
import trio
import trio.testing

import trio_bg

HUGE = "n" * 1_000_000


class StrRaises(Exception):
    def __str__(self) -> str:
        raise RuntimeError("no str for you")


async def boom() -> None:
    raise StrRaises


async def forever() -> None:
    await trio.sleep_forever()


@pytest.mark.parametrize("name", [HUGE, "\udcff" * 1000, "a\x00b\x1b[31m"])
async def test_failure_log_and_shutdown_report_are_bounded_and_utf8(
    name: str, caplog: pytest.LogCaptureFixture, autojump_clock: trio.testing.MockClock
) -> None:
    caplog.set_level(logging.INFO, logger="trio_bg")
    async with trio_bg.open_task_manager(name, grace_period=0.1) as tm:
        tm.start_soon_named(name, boom)
        tm.start_soon_named(name, forever)
        await trio.sleep(0.01)
    report = tm.shutdown_report
    assert report is not None
    lines = [str(report), *(r.getMessage() for r in caplog.records)]
    assert any(" failed" in line for line in lines)
    assert any("cancelled by the shutdown" in line for line in lines)
    for line in lines:
        line.encode("utf-8")  # strict: no lone surrogate reaches a handler
        assert len(line) < 2_000
    failure = next(r for r in caplog.records if r.getMessage().endswith(" failed"))
    assert failure.exc_info is not None  # the traceback is kept (logging prints str() safely)


def test_short_names_read_as_before() -> None:
    from trio_bg._core._text import quoted

    assert quoted("email") == "'email'"
    assert quoted("\udcff") == "'\\udcff'"
    assert quoted(HUGE) == "'" + "n" * 198 + "\u2026"
