"""``trio_bg.report_progress`` in-process: from a task, a task of its own nursery and a sync
task's worker thread; ``handle.progress``; the instruments' ``task_progress``; the dashboard's
JSON; exact errors for bad values and for a call outside any task."""

from __future__ import annotations

import re
import threading
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import trio
import trio.testing

import trio_bg
from trio_bg import Progress, TaskState
from trio_bg.dashboard._recorder import RECORDER
from trio_bg.dashboard._schema import Snapshot


def exact(message: str) -> str:
    return f"^{re.escape(message)}$"


class Seen(trio_bg.Instrument):
    def __init__(self) -> None:
        self.events: list[tuple[str, str, Progress | None]] = []

    def task_started(self, handle: trio_bg.TaskHandle[Any]) -> None:
        self.events.append(("started", handle.name, handle.progress))

    def task_progress(self, handle: trio_bg.TaskHandle[Any]) -> None:
        self.events.append(("progress", handle.name, handle.progress))

    def task_finished(self, handle: trio_bg.TaskHandle[Any]) -> None:
        self.events.append(("finished", handle.name, handle.progress))


async def import_rows(rows: int, reached: trio.Event) -> int:
    for n in range(1, rows + 1):
        await trio.sleep(1)
        trio_bg.report_progress(n / rows, f"row {n:,} of {rows:,}")
    reached.set()
    await trio.sleep(1)
    return rows


async def test_a_task_reports_and_its_handle_and_instruments_see_each_report(
    autojump_clock: trio.testing.MockClock,
) -> None:
    seen = Seen()
    reached = trio.Event()
    before = datetime.now(UTC)
    async with trio_bg.open_task_manager(instruments=[seen]) as tm:
        handle = tm.start_soon_named("import", import_rows, 4, reached)
        assert handle.progress is None
        await trio.sleep(2.5)
        assert handle.progress is not None
        assert (handle.progress.fraction, handle.progress.message) == (0.5, "row 2 of 4")
        await reached.wait()
        assert await handle.get() == 4
    progress = handle.progress
    assert progress == Progress(1.0, "row 4 of 4", progress.at)  # kept once finished
    assert before - timedelta(seconds=1) <= progress.at <= datetime.now(UTC)
    assert progress.at.tzinfo is UTC
    assert [(kind, p and (p.fraction, p.message)) for kind, _, p in seen.events] == [
        ("started", None),
        ("progress", (0.25, "row 1 of 4")),
        ("progress", (0.5, "row 2 of 4")),
        ("progress", (0.75, "row 3 of 4")),
        ("progress", (1.0, "row 4 of 4")),
        ("finished", (1.0, "row 4 of 4")),
    ]


async def test_a_task_of_the_tasks_own_nursery_and_a_sync_tasks_thread_report_to_it() -> None:
    async def parent() -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(child)

    async def child() -> None:
        await trio.lowlevel.checkpoint()
        trio_bg.report_progress(message="from the child")

    thread_ids: list[int] = []

    def export() -> str:
        thread_ids.append(threading.get_ident())
        trio_bg.report_progress(0.9)
        return "done"

    async with trio_bg.open_task_manager() as tm:
        outer = tm.start_soon_named("parent", parent)
        sync = tm.start_soon_named("export", export)
        assert await sync.get() == "done"
        await outer.wait()
    assert thread_ids and thread_ids[0] != threading.get_ident()
    assert outer.progress is not None and outer.progress.message == "from the child"
    assert outer.progress.fraction is None
    assert sync.progress is not None and (sync.progress.fraction, sync.progress.message) == (
        0.9,
        None,
    )


NOT_A_NUMBER = "progress fraction must be a number between 0 and 1 or None, got "


@pytest.mark.parametrize(
    ("fraction", "message", "error", "text"),
    [
        (1.5, None, ValueError, "progress fraction must be between 0 and 1, got 1.5"),
        (-0.1, None, ValueError, "progress fraction must be between 0 and 1, got -0.1"),
        (float("nan"), None, ValueError, "progress fraction must be between 0 and 1, got nan"),
        (
            True,
            None,
            TypeError,
            "progress fraction must be a number between 0 and 1 or None, got bool",
        ),
        (
            "40%",
            None,
            TypeError,
            "progress fraction must be a number between 0 and 1 or None, got str",
        ),
        (None, 7, TypeError, "progress message must be a str or None, got int"),
        (None, None, ValueError, "report_progress() needs a fraction, a message, or both"),
    ],
)
async def test_bad_values_raise_exactly_and_change_nothing(
    fraction: object, message: object, error: type[Exception], text: str
) -> None:
    raised: list[BaseException] = []

    async def job() -> None:
        trio_bg.report_progress(0.1, "fine")
        try:
            trio_bg.report_progress(fraction, message)  # type: ignore[arg-type]
        except Exception as exc:
            raised.append(exc)

    async with trio_bg.open_task_manager() as tm:
        handle = tm.start_soon_named("job", job)
    assert handle.state is TaskState.SUCCEEDED
    assert len(raised) == 1 and type(raised[0]) is error
    assert str(raised[0]) == text
    assert handle.progress is not None and handle.progress.message == "fine"


OUTSIDE = (
    "report_progress() was called outside a trio_bg task or durable job: call it in the task's "
    "own code (or a task it started in a nursery of its own, or its worker thread)"
)


async def test_outside_a_task_it_raises_runtime_error() -> None:
    with pytest.raises(RuntimeError, match=exact(OUTSIDE)):
        trio_bg.report_progress(0.5)
    async with trio.open_nursery() as nursery:  # a plain trio task is no trio_bg task
        errors: list[BaseException] = []

        async def plain() -> None:
            try:
                trio_bg.report_progress(0.5)
            except RuntimeError as exc:
                errors.append(exc)

        nursery.start_soon(plain)
    assert [str(e) for e in errors] == [OUTSIDE]
    with pytest.raises(RuntimeError, match=exact(OUTSIDE)):
        await trio.to_thread.run_sync(trio_bg.report_progress, 0.5)


def test_without_trio_it_raises_runtime_error() -> None:
    with pytest.raises(RuntimeError, match=exact(OUTSIDE)):
        trio_bg.report_progress(message="no trio here")


async def test_a_long_message_is_cut_and_the_dashboard_json_shows_the_progress() -> None:
    shown: list[dict[str, object]] = []

    async def job(tm: trio_bg.TaskManager, handle_box: list[trio_bg.TaskHandle[None]]) -> None:
        trio_bg.report_progress(0.3, "x" * 1000)
        await trio.lowlevel.checkpoint()
        shown.append(Snapshot(RECORDER, show_args=False).task(handle_box[0]))

    box: list[trio_bg.TaskHandle[None]] = []
    async with trio_bg.open_task_manager() as tm:
        box.append(tm.start_soon_named("job", job, tm, box))
    progress = box[0].progress
    assert progress is not None and progress.message is not None
    assert len(progress.message) == 200 and progress.message.endswith("…")
    data = shown[0]["progress"]
    assert data == {"fraction": 0.3, "message": progress.message, "at": progress.at.isoformat()}
