"""Ids from outside are data: any string (or other object) that is not an id trio_bg gave is
not found, in bounded time, at every lookup entry point (no ValueError from Python's
int-digit limit, no 500 from the dashboard)."""

from __future__ import annotations

from typing import Any

import pytest
import trio
from hypothesis import given, settings
from hypothesis import strategies as st

import trio_bg
from trio_bg.dashboard import Dashboard
from trio_bg.testing import serve_app

HOSTILE_IDS: list[Any] = [
    "task-" + "1" * 4301,  # past Python's int-digit limit
    "task-" + "9" * 21,  # longer than any count a process reaches
    "task-\uff10\uff11",  # full-width digits
    "task-²",
    "task--1",
    "task-+1",
    "task-1 ",
    " task-1",
    "task-1\x00",
    "task-\udcff",
    "task-",
    "task-07",
    "TASK-1",
    "",
    b"task-1",
    1,
    None,
]


async def _check_not_found(tm: trio_bg.TaskManager, task_id: Any) -> None:
    assert tm.get(task_id) is None
    assert tm.cancel(task_id) is False
    assert trio_bg.find_task(task_id) is None


async def test_hostile_ids_are_not_found_at_every_core_entry_point() -> None:
    async with trio_bg.open_task_manager() as tm:
        handle = tm.start_soon_named("sleeper", trio.sleep_forever)
        for task_id in HOSTILE_IDS:
            await _check_not_found(tm, task_id)
        assert tm.get(handle.id) is handle  # the real id still works
        assert trio_bg.find_task(handle.id) is handle
        assert tm.cancel(handle.id) is True


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=60) | st.text(max_size=40).map(lambda s: "task-" + s))
def test_any_text_finds_nothing_or_the_task_with_that_id(text: str) -> None:
    async def main() -> None:
        async with trio_bg.open_task_manager(grace_period=0) as tm:
            tm.start_soon_named("sleeper", trio.sleep_forever)
            # An earlier test's task may own a valid-looking id: only that task may be found.
            for found in (tm.get(text), trio_bg.find_task(text)):
                assert found is None or found.id == text
            assert tm.cancel(text) is (tm.get(text) is not None)

    trio.run(main)


@pytest.mark.parametrize(
    "task_id",
    ["task-" + "1" * 4301, "task-\uff10\uff11", "task-1%00", "task-%ED%B3%BF"],
    ids=["4301-digits", "fullwidth-digits", "nul", "lone-surrogate"],
)
async def test_the_dashboard_answers_404_for_hostile_ids(
    dashboards: list[Dashboard], task_id: str
) -> None:
    dashboard = Dashboard(local_only=True)
    dashboards.append(dashboard)
    async with serve_app(dashboard) as served:
        got = await served.client.get(f"/api/tasks/{task_id}")
        assert got.status_code == 404, got.text[:200]
        assert got.json()["error"].startswith("no task ")
        cancel = await served.client.post(
            f"/api/tasks/{task_id}/cancel", headers={"Origin": served.url}
        )
        assert cancel.status_code == 404, cancel.text[:200]


@pytest.mark.parametrize("task_id", ["task-²", "task-٣", "task-07", "task-"])
async def test_ids_trio_bg_never_gives_are_not_found_rather_than_errors(task_id: str) -> None:
    async with trio_bg.open_task_manager() as tm:
        assert tm.get(task_id) is None
        assert tm.cancel(task_id) is False
        assert trio_bg.find_task(task_id) is None
