"""How a task's end is reported when it is not an ordinary failure: KeyboardInterrupt and
SystemExit propagate (also from inside the task's own nursery), a timeout logs one line, and
trio's own frames do not bury the user's.

The interrupt tests are synchronous and call ``trio.run`` themselves, as trio's own tests of
KeyboardInterrupt do: an interrupt escaping into pytest-trio's runner would stop the session.
"""

from __future__ import annotations

import logging
import re
import traceback
from typing import Any

import outcome
import pytest
import trio
import trio.testing

import trio_bg
from tests.conftest import trio_bg_records
from trio_bg import TaskHandle, TaskState
from trio_bg.testing import check_accounting


def exact(message: str) -> str:
    return f"^{re.escape(message)}$"


# -- KeyboardInterrupt and SystemExit ------------------------------------------------------------


async def _raise(exc: BaseException) -> None:
    await trio.lowlevel.checkpoint()
    raise exc


async def interrupted_inside_its_own_nursery(exc: BaseException) -> None:
    """The issue's case: the interrupt reaches the task wrapped in its nursery's group."""
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_raise, exc)
        await trio.sleep_forever()


class Seen:
    def __init__(self) -> None:
        self.handles: list[TaskHandle[Any]] = []
        self.handled: list[BaseException] = []
        self.marks: list[str] = []
        self.stats: list[trio_bg.TaskStatistics] = []
        self.managers: list[trio_bg.TaskManager] = []


@pytest.mark.parametrize("interrupt", [KeyboardInterrupt, SystemExit])
def test_an_interrupt_through_a_tasks_own_nursery_in_a_group_propagates(
    interrupt: type[BaseException], caplog: pytest.LogCaptureFixture
) -> None:
    seen = Seen()
    exc = interrupt()

    async def main() -> None:
        async with trio_bg.open_task_manager(
            on_error=lambda handle, error: seen.handled.append(error)
        ) as tm:
            seen.managers.append(tm)
            other = tm.start_soon(trio.sleep_forever)
            async with tm.open_group("g") as group:
                seen.handles += [group.start_soon(interrupted_inside_its_own_nursery, exc), other]
            seen.marks.append("after the group")  # the body must not run on
            await trio.sleep(1)
            seen.marks.append("after the sleep")
        seen.stats.append(tm.statistics())

    with pytest.RaisesGroup(pytest.RaisesGroup(interrupt)) as caught:
        trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))

    [inner] = caught.value.exceptions
    [interrupted, other] = seen.handles
    assert interrupted.state is TaskState.FAILED
    assert isinstance(interrupted.outcome, outcome.Error)
    # the task's own group (trio's cancel scopes copy groups on the way out: equal, not same)
    error = interrupted.outcome.error
    assert isinstance(error, BaseExceptionGroup)
    assert error.exceptions == inner.exceptions == (exc,)  # type: ignore[attr-defined]
    assert other.state is TaskState.CANCELLED
    assert seen.handled == []  # no error handler for an interrupt
    assert seen.marks == []
    assert seen.stats == []  # it left the manager's async with
    [tm] = seen.managers
    stats = tm.statistics()
    assert (stats.started, stats.failed, stats.cancelled) == (2, 1, 1)
    check_accounting(stats)
    [record] = trio_bg_records(caplog, logging.ERROR)
    assert record.getMessage() == (
        f"task 'interrupted_inside_its_own_nursery' ({interrupted.id}) was interrupted by "
        f"{interrupt.__name__} (in BaseExceptionGroup), which propagates"
    )
    assert record.exc_info is None


@pytest.mark.parametrize("interrupt", [KeyboardInterrupt, SystemExit])
@pytest.mark.parametrize("kind", ["async", "sync"])
def test_an_interrupt_raised_by_a_task_propagates(
    interrupt: type[BaseException], kind: str, caplog: pytest.LogCaptureFixture
) -> None:
    seen = Seen()
    exc = interrupt()

    def sync_interrupt() -> None:
        raise exc

    async def main() -> None:
        async with trio_bg.open_task_manager(
            on_error=lambda handle, error: seen.handled.append(error)
        ) as tm:
            fn = sync_interrupt if kind == "sync" else _raise
            args = () if kind == "sync" else (exc,)
            handle = tm.start_soon_named("interrupted", fn, *args)
            seen.handles.append(handle)
            try:
                await trio.sleep_forever()
            finally:
                seen.stats.append(tm.statistics())

    with pytest.RaisesGroup(interrupt) as caught:
        trio.run(main)

    assert caught.value.exceptions == (exc,)
    [handle] = seen.handles
    assert handle.state is TaskState.FAILED
    assert isinstance(handle.outcome, outcome.Error) and handle.outcome.error is exc
    assert seen.handled == []
    [stats] = seen.stats  # when the body was cancelled
    assert (stats.started, stats.failed) == (1, 1)
    check_accounting(stats)
    [record] = trio_bg_records(caplog, logging.ERROR)
    assert record.getMessage() == (
        f"task 'interrupted' ({handle.id}) was interrupted by {interrupt.__name__}, "
        "which propagates"
    )


def test_an_interrupt_with_an_outer_cancellation_still_propagates() -> None:
    """A task's group holding both an interrupt and the outer Cancelled: the interrupt is not
    lost to the cancellation (the group goes on as it is)."""
    seen = Seen()
    exc = KeyboardInterrupt()

    async def interrupted_while_cancelled() -> None:
        async def cancel_outer_then_interrupt() -> None:
            outer.cancel()
            raise exc

        async with trio.open_nursery() as nursery:
            nursery.start_soon(cancel_outer_then_interrupt)
            await trio.sleep_forever()

    async def main() -> None:
        nonlocal outer
        with trio.CancelScope() as outer:
            async with trio_bg.open_task_manager() as tm:
                seen.handles.append(tm.start_soon(interrupted_while_cancelled))
                await trio.sleep_forever()

    outer = trio.CancelScope()
    with pytest.RaisesGroup(pytest.RaisesGroup(KeyboardInterrupt, allow_unwrapped=True)):
        trio.run(main)
    [handle] = seen.handles
    assert handle.state is TaskState.FAILED


# -- timeouts: one line --------------------------------------------------------------------------


async def slow() -> None:
    await trio.sleep(10)


async def test_a_timeout_logs_one_line_and_keeps_its_too_slow_error(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    async with trio_bg.open_task_manager() as tm:
        handle = tm.start_soon_named("slow-report", slow, timeout=2.5)
        await handle.wait()
        assert trio.current_time() == 2.5
    [record] = trio_bg_records(caplog, logging.ERROR)
    assert record.getMessage() == f"task 'slow-report' ({handle.id}) timed out after 2.5 s"
    assert record.exc_info is None
    assert isinstance(handle.outcome, outcome.Error)
    error = handle.outcome.error
    assert type(error) is trio.TooSlowError
    assert error.__traceback__ is None and error.__context__ is None and error.args == ()
    with pytest.raises(trio.TooSlowError, match=r"^$"):
        await handle.get()


async def test_a_timeout_after_retries_logs_one_line(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="trio_bg")
    policy = trio_bg.Retry(attempts=2, backoff=1, jitter=False)
    async with trio_bg.open_task_manager() as tm:
        handle = tm.start_soon(slow, timeout=1, retry=policy)
        await handle.wait()
        assert trio.current_time() == 3  # 1 s, a 1 s backoff, 1 s
    [record] = trio_bg_records(caplog, logging.ERROR)
    assert record.getMessage() == f"task 'slow' ({handle.id}) timed out after 1 s"
    assert record.exc_info is None
    [retry] = trio_bg_records(caplog, logging.INFO)
    assert retry.getMessage() == (
        f"task 'slow' ({handle.id}) attempt 1 of 2 failed with TooSlowError(); retrying in 1 s"
    )


async def test_a_too_slow_error_of_the_tasks_own_is_a_failure_with_its_traceback(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    async def own_deadline() -> None:
        with trio.fail_after(1):
            await trio.sleep(5)

    async with trio_bg.open_task_manager() as tm:
        handle = tm.start_soon_named("own", own_deadline, timeout=10)
        await handle.wait()
    [record] = trio_bg_records(caplog, logging.ERROR)
    assert record.getMessage() == f"task 'own' ({handle.id}) failed"
    assert record.exc_info is not None
    assert traceback.extract_tb(record.exc_info[2])[0].name == "own_deadline"


# -- other failures: the user's frames first ----------------------------------------------------


def sync_fails() -> None:
    raise ValueError("sync boom")


async def async_fails() -> None:
    await trio.lowlevel.checkpoint()
    raise ValueError("boom")


@pytest.mark.parametrize("fn", [sync_fails, async_fails])
@pytest.mark.parametrize("seconds", [None, 5])
async def test_a_failure_logs_its_traceback_from_the_tasks_function(
    fn: Any, seconds: float | None, caplog: pytest.LogCaptureFixture
) -> None:
    async with trio_bg.open_task_manager() as tm:
        handle = tm.start_soon_named("fails", fn, timeout=seconds)
        await handle.wait()
    [record] = trio_bg_records(caplog, logging.ERROR)
    assert record.getMessage() == f"task 'fails' ({handle.id}) failed"
    assert record.exc_info is not None
    frames = traceback.extract_tb(record.exc_info[2])
    assert [frame.name for frame in frames] == [fn.__name__]
    assert isinstance(record.exc_info[1], ValueError)
