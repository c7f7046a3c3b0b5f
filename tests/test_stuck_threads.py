"""Sync tasks whose worker thread is abandoned: counted, logged, and holding their thread token.

These use real threads, so the real clock; each thread waits on a ``threading.Event`` the test
sets, so nothing depends on timing.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Iterator

import outcome
import pytest
import trio
import trio.testing

import trio_bg
from trio_bg import TaskState
from trio_bg._core._threads import abandoned_threads


def blocks(entered: threading.Event, release: threading.Event) -> str:
    entered.set()
    release.wait(10)
    return "done"


def answer() -> int:
    return 42


@pytest.fixture
def release() -> Iterator[threading.Event]:
    """Set when the test ends, so that no worker thread outlives it."""
    event = threading.Event()
    yield event
    event.set()


async def _entered(event: threading.Event) -> None:
    await trio.to_thread.run_sync(event.wait, 5, limiter=trio.CapacityLimiter(1))


def _lines(caplog: pytest.LogCaptureFixture) -> list[tuple[str, str]]:
    return [(r.levelname, r.getMessage()) for r in caplog.records if r.name == "trio_bg"]


async def test_a_cancelled_sync_task_abandons_its_thread_which_keeps_its_token(
    caplog: pytest.LogCaptureFixture, release: threading.Event
) -> None:
    caplog.set_level(logging.INFO, "trio_bg")
    entered = threading.Event()
    async with trio_bg.open_task_manager("app", max_threads=1) as tm:
        export = tm.start_soon_named("export", blocks, entered, release)
        await _entered(entered)
        assert abandoned_threads() == 0
        assert export.cancel()
        await export.wait()
        assert export.state == TaskState.CANCELLED  # at once: the thread runs on
        assert abandoned_threads() == 1
        later = tm.start_soon_named("later", answer)
        await trio.testing.wait_all_tasks_blocked()
        assert later.state == TaskState.RUNNING  # waiting for the token the thread holds
        release.set()
        assert await later.get() == 42
        assert abandoned_threads() == 0
    lines = _lines(caplog)
    assert lines[:2] == [
        ("WARNING",
         f"task 'export' ({export.id}) was cancelled while its sync function ran in a worker "
         "thread: the thread is abandoned and runs on, holding a thread token until it ends "
         "(1 abandoned thread(s) running)"),
        ("WARNING",
         "abandoned threads hold all 1 thread tokens of task manager 'app' (max_threads): sync "
         "tasks wait for a thread until one of them ends"),
    ]  # fmt: skip
    level, message = lines[2]
    assert level == "INFO"
    assert re.fullmatch(
        rf"the abandoned worker thread of task 'export' \({export.id}\) ended after \d+\.\d s "
        r"\(0 abandoned thread\(s\) still running\)",
        message,
    ), message


async def test_a_timeout_abandons_the_thread_in_trios_default_limiter(
    caplog: pytest.LogCaptureFixture, release: threading.Event
) -> None:
    trio.to_thread.current_default_thread_limiter().total_tokens = 2  # this trio run's only
    async with trio_bg.open_task_manager("app") as tm:
        slow = [
            tm.start_soon_named(f"slow-{n}", blocks, threading.Event(), release, timeout=0.05)
            for n in range(2)
        ]
        for handle in slow:
            await handle.wait()
            assert handle.state == TaskState.FAILED
            result = handle.outcome
            assert isinstance(result, outcome.Error)
            assert isinstance(result.error, trio.TooSlowError)
        assert abandoned_threads() == 2
        release.set()
        assert await tm.start_soon(answer).get() == 42  # a token came back
    warnings = [message for level, message in _lines(caplog) if level == "WARNING"]
    assert sorted(message.split(" was cancelled")[0] for message in warnings[:2]) == [
        f"task 'slow-0' ({slow[0].id})",
        f"task 'slow-1' ({slow[1].id})",
    ]  # in the order their timeouts fired
    assert warnings[1].endswith("(2 abandoned thread(s) running)")
    assert warnings[2] == (
        "abandoned threads hold all 2 thread tokens of trio's default thread limiter: sync "
        "tasks wait for a thread until one of them ends"
    )


async def test_a_sync_task_cancelled_while_it_waits_for_a_token_abandons_nothing(
    caplog: pytest.LogCaptureFixture, release: threading.Event
) -> None:
    entered = threading.Event()
    async with trio_bg.open_task_manager("app", max_threads=1) as tm:
        busy = tm.start_soon_named("busy", blocks, entered, release)
        await _entered(entered)
        waiting = tm.start_soon_named("waiting", answer)
        await trio.testing.wait_all_tasks_blocked()
        assert waiting.cancel()
        await waiting.wait()
        assert waiting.state == TaskState.CANCELLED
        assert abandoned_threads() == 0
        release.set()
        assert await busy.get() == "done"
    assert [line for line in _lines(caplog) if "abandon" in line[1]] == []


def test_outside_a_trio_run_no_thread_is_counted() -> None:
    assert abandoned_threads() == 0
