"""Where a task waits, for every kind of task: an async task at its own line, a sync task in (or
waiting for) a worker thread, a retried task between two attempts; in the dashboard's JSON and
in the log lines that name stuck tasks; all read from the public view, ``manager.wait_points()``."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest
import trio
import trio.testing

import trio_bg
from tests.conftest import settle
from trio_bg import Retry, TaskState, WaitFrame
from trio_bg.dashboard._recorder import RECORDER
from trio_bg.dashboard._schema import Snapshot


def blocks(entered: threading.Event, release: threading.Event) -> str:
    entered.set()
    release.wait(10)
    return "done"


BLOCKS = WaitFrame(blocks.__qualname__, __file__, blocks.__code__.co_firstlineno)


def answer() -> int:
    return 42


async def fails_first(calls: list[int]) -> str:
    calls.append(len(calls))
    if len(calls) == 1:
        raise ConnectionError("refused")
    await trio.sleep_forever()  # the line the second attempt waits at
    return "never"


@pytest.fixture
def release() -> Iterator[threading.Event]:
    """Set when the test ends, so that no worker thread outlives it."""
    event = threading.Event()
    yield event
    event.set()


def json_of(tm: trio_bg.TaskManager, handle: trio_bg.TaskHandle[object]) -> dict[str, object]:
    point = tm.wait_points()[handle.number]
    return Snapshot(RECORDER, show_args=False).task(handle, point=point)


async def test_a_sync_task_in_a_worker_thread_is_said_to_be_there(
    release: threading.Event,
) -> None:
    entered = threading.Event()
    async with trio_bg.open_task_manager("app", max_threads=1) as tm:
        export = tm.start_soon_named("export", blocks, entered, release)
        await trio.to_thread.run_sync(entered.wait, 5, limiter=trio.CapacityLimiter(1))
        later = tm.start_soon_named("later", answer)
        await settle()
        assert (export.state, later.state) == (TaskState.RUNNING, TaskState.RUNNING)
        points = tm.wait_points()

        in_thread = points[export.number]
        assert (in_thread.waiting, in_thread.at) == ("in a worker thread: blocks", BLOCKS)
        assert in_thread.text == f"in a worker thread: blocks ({__file__}:{BLOCKS.line})"
        data = json_of(tm, export)
        assert data["waiting"] == "in a worker thread: blocks"
        assert data["where"] == {"function": "blocks", "file": __file__, "line": BLOCKS.line}

        queued = points[later.number]  # max_threads=1: no token until export ends
        assert queued.waiting == "waiting for a worker thread: answer"
        assert json_of(tm, later)["waiting"] == "waiting for a worker thread: answer"
        release.set()
        assert (await export.get(), await later.get()) == ("done", 42)


async def test_a_retried_task_between_attempts_is_in_its_backoff(
    autojump_clock: trio.testing.MockClock,
) -> None:
    calls: list[int] = []
    async with trio_bg.open_task_manager("app") as tm:
        flaky = tm.start_soon_named(
            "flaky", fails_first, calls, retry=Retry(attempts=2, backoff=2.0, jitter=False)
        )
        await trio.sleep(0.8)  # the first attempt failed at once: 1.2 s of backoff are left
        backoff = tm.wait_points()[flaky.number]
        assert (backoff.waiting, backoff.at) == ("retry backoff, next attempt in 1.2 s", None)
        assert backoff.text == "retry backoff, next attempt in 1.2 s"
        data = json_of(tm, flaky)
        assert (data["waiting"], data["where"]) == ("retry backoff, next attempt in 1.2 s", None)

        await trio.sleep(1.3)  # past the backoff: the second attempt waits at a line of its own
        await trio.testing.wait_all_tasks_blocked()
        assert calls == [0, 1]
        data = json_of(tm, flaky)
        assert data["waiting"] is None
        assert data["where"] == {
            "function": "fails_first",
            "file": __file__,
            "line": fails_first.__code__.co_firstlineno + 4,
        }
        assert tm.wait_points()[flaky.number].waiting is None
        tm.cancel_all()


async def test_a_retried_task_cancelled_in_its_backoff_keeps_no_trio_bg_frame() -> None:
    async with trio_bg.open_task_manager("app") as tm:
        flaky = tm.start_soon_named(
            "flaky", fails_first, list[int](), retry=Retry(attempts=2, backoff=60.0, jitter=False)
        )
        await settle()
        flaky.cancel()
        await flaky.wait()
        assert flaky.state == TaskState.CANCELLED
        cause = flaky._result
        assert isinstance(cause, trio.Cancelled)
        tb = cause.__traceback__
        while tb is not None:
            assert "trio_bg" not in tb.tb_frame.f_code.co_filename, tb.tb_frame.f_code.co_qualname
            tb = tb.tb_next


async def test_a_task_whose_function_is_trios_own_shows_that_function() -> None:
    async with trio_bg.open_task_manager("app") as tm:
        nap = tm.start_soon_named("nap", trio.sleep_forever)
        await settle()
        data = json_of(tm, nap)
        where = data["where"]
        assert isinstance(where, dict)
        assert where["function"] == "sleep_forever"  # not trio's _real_async_yield
        assert where["file"] == trio.sleep_forever.__code__.co_filename
        assert data["waiting"] is None
        tm.cancel_all()
