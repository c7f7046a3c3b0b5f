"""Task logs: DEBUG lines per task with structured fields; a close that says what it waits for."""

from __future__ import annotations

import logging

import pytest
import trio
import trio.testing

import trio_bg
from tests.conftest import sleep_then_raise, sleep_then_return, trio_bg_records


def _fields(record: logging.LogRecord) -> dict[str, object]:
    names = ("task_id", "task_name", "task_manager", "task_state", "task_duration")
    return {name: getattr(record, name) for name in names if hasattr(record, name)}


async def test_debug_lines_name_each_step_of_a_task_with_structured_fields(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="trio_bg")
    async with trio_bg.open_task_manager("mail", max_running=1) as tm:
        first = tm.start_soon_named("send", sleep_then_return, 2, "ok")
        second = tm.start_soon_named("boom", sleep_then_raise, 1, ValueError("bad"))
        await tm.wait_idle()
    records = [r for r in trio_bg_records(caplog, logging.DEBUG) if hasattr(r, "task_id")]
    a, b = first.id, second.id
    # Durations are measured on the wall clock (like started_at / finished_at), which the
    # autojump clock does not move: check each one against the handle's own timestamps.
    durations: dict[str, float] = {}
    for record in records:
        if hasattr(record, "task_duration"):
            durations[record.task_id] = record.task_duration
    for handle in (first, second):
        assert handle.started_at is not None and handle.finished_at is not None
        spent = (handle.finished_at - handle.started_at).total_seconds()
        assert durations[handle.id] == pytest.approx(spent, abs=1e-5)
    lines = [(r.getMessage(), _fields(r)) for r in records]

    def step(name: str, task_id: str, state: str) -> dict[str, object]:
        fields: dict[str, object] = {
            "task_id": task_id,
            "task_name": name,
            "task_manager": "mail",
            "task_state": state,
        }
        if state in ("succeeded", "failed"):
            fields["task_duration"] = durations[task_id]
        return fields

    assert lines == [
        (f"task 'send' ({a}) created in 'mail'", step("send", a, "pending")),
        (f"task 'send' ({a}) started", step("send", a, "running")),
        (f"task 'boom' ({b}) created in 'mail'", step("boom", b, "pending")),
        (
            f"task 'send' ({a}) succeeded after {durations[a]:.3f} s",
            step("send", a, "succeeded"),
        ),
        (f"task 'boom' ({b}) started", step("boom", b, "running")),
        (f"task 'boom' ({b}) failed after {durations[b]:.3f} s", step("boom", b, "failed")),
    ]


async def test_no_debug_lines_when_the_logger_is_not_at_debug(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="trio_bg")
    async with trio_bg.open_task_manager() as tm:
        await tm.start_soon(trio.lowlevel.checkpoint).get()
    assert trio_bg_records(caplog, logging.DEBUG) == []


async def test_a_close_that_waits_says_what_for_and_how_long_every_two_seconds(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="trio_bg")
    async with trio_bg.open_task_manager("app", grace_period=4.5, shield_timeout=7) as tm:
        quick = tm.start_soon_named("quick", trio.sleep, 3)
        slow = tm.start_soon_named("slow", trio.sleep, 100)
        kept = tm.start_soon_named("kept", trio.sleep, 100, shield=True)
    q, s, k = quick.id, slow.id, kept.id
    assert [r.getMessage() for r in trio_bg_records(caplog, logging.INFO)] == [
        f"task manager 'app' closing: waiting up to 4.5 s for 3 task(s): "
        f"'quick' ({q}), 'slow' ({s}), 'kept' ({k})",
        f"task manager 'app' closing: waiting up to 2.5 s for 3 task(s): "
        f"'quick' ({q}), 'slow' ({s}), 'kept' ({k})",
        f"task manager 'app' closing: waiting up to 0.5 s for 2 task(s): "
        f"'slow' ({s}), 'kept' ({k})",
        f"task manager 'app' closing: waiting up to 2.5 s for 1 shielded task(s): 'kept' ({k})",
        f"task manager 'app' closing: waiting up to 0.5 s for 1 shielded task(s): 'kept' ({k})",
    ]
    assert trio.current_time() == 7
    assert (quick.state, slow.state, kept.state) == ("succeeded", "cancelled", "cancelled")


async def test_a_close_with_nothing_to_wait_for_logs_nothing(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="trio_bg")
    async with trio_bg.open_task_manager() as tm:
        await tm.start_soon(trio.lowlevel.checkpoint).get()
    assert trio_bg_records(caplog, logging.INFO) == []


async def test_many_waiting_tasks_are_named_five_then_counted(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="trio_bg")
    async with trio_bg.open_task_manager("app", grace_period=1) as tm:
        handles = [tm.start_soon_named(f"t{i}", trio.sleep, 10) for i in range(8)]
    shown = ", ".join(f"'t{i}' ({h.id})" for i, h in enumerate(handles[:5]))
    assert [r.getMessage() for r in trio_bg_records(caplog, logging.INFO)] == [
        f"task manager 'app' closing: waiting up to 1.0 s for 8 task(s): {shown} and 3 more"
    ]


async def test_a_progress_report_is_a_debug_line(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="trio_bg")

    async def imports() -> None:
        trio_bg.report_progress(0.4, "row 4,000 of 10,000")
        trio_bg.report_progress(message="done")

    async with trio_bg.open_task_manager("jobs") as tm:
        handle = tm.start_soon_named("import", imports)
    lines = [
        r.getMessage()
        for r in trio_bg_records(caplog, logging.DEBUG)
        if "progress" in r.getMessage()
    ]
    assert lines == [
        f"task 'import' ({handle.id}) progress 40% 'row 4,000 of 10,000'",
        f"task 'import' ({handle.id}) progress 'done'",
    ]
