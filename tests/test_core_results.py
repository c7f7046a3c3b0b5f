"""Results and failures: ``get()`` for many waiters, error isolation, logging, error handlers,
timeouts and retries."""

from __future__ import annotations

import logging
import re
from typing import Any

import pytest
import trio
import trio.testing

import trio_bg
from tests.conftest import sleep_then_raise, sleep_then_return, trio_bg_records
from trio_bg import Retry, TaskCancelled, TaskHandle, TaskState

# -- get() ------------------------------------------------------------------------------------


async def test_get_gives_every_waiter_the_same_value_before_and_after_completion(
    autojump_clock: trio.testing.MockClock,
) -> None:
    value = ["the", "result"]
    before: list[object] = []

    async def waiter(handle: TaskHandle[object]) -> None:
        before.append(await handle.get())

    async with trio_bg.open_task_manager() as tm:
        handle = tm.start_soon(sleep_then_return, 2, value)
        async with trio.open_nursery() as nursery:
            for _ in range(3):
                nursery.start_soon(waiter, handle)
        assert trio.current_time() == 2
        after = [await handle.get() for _ in range(3)]

    assert handle.state is TaskState.SUCCEEDED
    assert len(before) == 3
    assert all(result is value for result in before + after)


async def test_get_raises_the_same_exception_object_for_every_waiter(
    autojump_clock: trio.testing.MockClock,
) -> None:
    error = ValueError("boom")
    caught: list[BaseException] = []

    async def waiter(handle: TaskHandle[None]) -> None:
        with pytest.raises(ValueError, match=r"^boom$") as info:
            await handle.get()
        caught.append(info.value)

    async with trio_bg.open_task_manager() as tm:
        handle = tm.start_soon(sleep_then_raise, 1, error)
        async with trio.open_nursery() as nursery:
            for _ in range(3):
                nursery.start_soon(waiter, handle)
        assert trio.current_time() == 1
        for _ in range(3):  # after completion: still the same object, every time
            await waiter(handle)

    assert handle.state is TaskState.FAILED
    assert len(caught) == 6
    assert all(exc is error for exc in caught)
    assert handle.outcome is not None
    assert getattr(handle.outcome, "error", None) is error


async def test_get_raises_task_cancelled_for_every_waiter_of_a_cancelled_task(
    autojump_clock: trio.testing.MockClock,
) -> None:
    raised: list[TaskCancelled] = []

    async with trio_bg.open_task_manager() as tm:
        handle = tm.start_soon_named("forever", trio.sleep_forever)
        message = rf"^task 'forever' \({handle.id}\) was cancelled$"

        async def waiter() -> None:
            with pytest.raises(TaskCancelled, match=message) as info:
                await handle.get()
            raised.append(info.value)

        async with trio.open_nursery() as nursery:
            for _ in range(3):
                nursery.start_soon(waiter)
            await trio.sleep(1)
            assert handle.cancel() is True
        assert trio.current_time() == 1
        for _ in range(3):
            await waiter()

    assert handle.state is TaskState.CANCELLED
    assert handle.outcome is None
    assert len(raised) == 6


# -- failures ---------------------------------------------------------------------------------


async def test_a_failure_cancels_nothing_and_is_logged_with_name_and_id(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    error = RuntimeError("disk full")
    calls: list[tuple[TaskHandle[Any], BaseException]] = []

    def handler(handle: TaskHandle[Any], exc: BaseException) -> None:
        calls.append((handle, exc))

    async with trio_bg.open_task_manager(on_error=handler) as tm:
        sibling = tm.start_soon_named("sibling", sleep_then_return, 5, "ok")
        failing = tm.start_soon_named("failing", sleep_then_raise, 1, error)
        await failing.wait()
        assert trio.current_time() == 1
        assert failing.state is TaskState.FAILED
        assert sibling.state is TaskState.RUNNING
        later = tm.start_soon_named("later", sleep_then_return, 1, "accepted")
        assert await later.get() == "accepted"
        assert await sibling.get() == "ok"
        assert trio.current_time() == 5

    assert calls == [(failing, error)]
    stats = tm.statistics()
    assert (stats.succeeded, stats.failed, stats.cancelled) == (2, 1, 0)
    [record] = trio_bg_records(caplog, logging.ERROR)
    assert record.getMessage() == f"task 'failing' ({failing.id}) failed"
    assert record.exc_info is not None
    assert record.exc_info[1] is error


async def test_the_task_handler_overrides_the_manager_handler_and_runs_once(
    autojump_clock: trio.testing.MockClock,
) -> None:
    manager_calls: list[BaseException] = []
    task_calls: list[tuple[TaskHandle[Any], BaseException]] = []
    error = KeyError("missing")

    async with trio_bg.open_task_manager(
        on_error=lambda handle, exc: manager_calls.append(exc)
    ) as tm:
        own = tm.start_soon(
            sleep_then_raise, 1, error, on_error=lambda h, e: task_calls.append((h, e))
        )
        other_error = ValueError("uses the manager's handler")
        other = tm.start_soon(sleep_then_raise, 2, other_error)
        await tm.wait_idle()

    assert task_calls == [(own, error)]
    assert manager_calls == [other_error]
    assert other.state is own.state is TaskState.FAILED


async def test_an_async_handler_is_awaited_once_before_the_handle_finishes(
    autojump_clock: trio.testing.MockClock,
) -> None:
    calls: list[tuple[float, str, TaskState]] = []
    error = OSError("unreachable")

    async def handler(handle: TaskHandle[Any], exc: BaseException) -> None:
        await trio.sleep(2)
        calls.append((trio.current_time(), str(exc), handle.state))

    async with trio_bg.open_task_manager(on_error=handler) as tm:
        handle = tm.start_soon(sleep_then_raise, 1, error)
        await handle.wait()
        # The failure came at t=1; the handle is done once the handler has finished.
        assert trio.current_time() == 3

    assert calls == [(3, "unreachable", TaskState.RUNNING)]
    assert handle.state is TaskState.FAILED


@pytest.mark.parametrize("kind", ["sync", "async"])
async def test_an_exception_in_the_handler_is_logged_and_goes_no_further(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture, kind: str
) -> None:
    handler_error = ZeroDivisionError("handler broke")
    error = ValueError("task broke")

    def sync_handler(handle: TaskHandle[Any], exc: BaseException) -> None:
        raise handler_error

    async def async_handler(handle: TaskHandle[Any], exc: BaseException) -> None:
        await trio.lowlevel.checkpoint()
        raise handler_error

    handler = sync_handler if kind == "sync" else async_handler
    async with trio_bg.open_task_manager(on_error=handler) as tm:
        bystander = tm.start_soon_named("bystander", sleep_then_return, 3, "fine")
        failing = tm.start_soon_named("failing", sleep_then_raise, 1, error)
        with pytest.raises(ValueError, match=r"^task broke$") as info:
            await failing.get()
        assert info.value is error  # the task's own error, not the handler's
        assert await bystander.get() == "fine"
        accepted = tm.start_soon(sleep_then_return, 0, "still accepting")
        assert await accepted.get() == "still accepting"

    assert tm.statistics().failed == 1
    failure, handler_failure = trio_bg_records(caplog, logging.ERROR)
    assert failure.getMessage() == f"task 'failing' ({failing.id}) failed"
    assert handler_failure.getMessage() == f"error handler of task 'failing' ({failing.id}) raised"
    assert handler_failure.exc_info is not None
    assert handler_failure.exc_info[1] is handler_error


# -- timeout ----------------------------------------------------------------------------------


async def test_timeout_fails_the_task_with_too_slow_error_at_the_exact_time(
    autojump_clock: trio.testing.MockClock,
) -> None:
    calls: list[tuple[float, BaseException]] = []
    async with trio_bg.open_task_manager(
        on_error=lambda handle, exc: calls.append((trio.current_time(), exc))
    ) as tm:
        handle = tm.start_soon(sleep_then_return, 10, "late", timeout=3)
        with pytest.raises(trio.TooSlowError, match=r"^$") as info:  # TooSlowError has no text
            await handle.get()
        assert trio.current_time() == 3

    assert handle.state is TaskState.FAILED
    assert handle.attempts == 1
    assert calls == [(3, info.value)]


async def test_a_task_within_its_timeout_succeeds(autojump_clock: trio.testing.MockClock) -> None:
    async with trio_bg.open_task_manager() as tm:
        handle = tm.start_soon(sleep_then_return, 2, "in time", timeout=3)
        assert await handle.get() == "in time"
        assert trio.current_time() == 2


# -- retry ------------------------------------------------------------------------------------


async def test_retry_tries_again_with_exponential_backoff_and_calls_the_handler_once(
    autojump_clock: trio.testing.MockClock,
) -> None:
    attempt_times: list[float] = []
    calls: list[tuple[float, int, str]] = []

    async def always_fails() -> None:
        attempt_times.append(trio.current_time())
        raise ConnectionError(f"attempt {len(attempt_times)}")

    def handler(handle: TaskHandle[Any], exc: BaseException) -> None:
        calls.append((trio.current_time(), handle.attempts, str(exc)))

    async with trio_bg.open_task_manager() as tm:
        handle = tm.start_soon(
            always_fails, retry=Retry(attempts=3, backoff=1, jitter=False), on_error=handler
        )
        with pytest.raises(ConnectionError, match=r"^attempt 3$"):
            await handle.get()

    assert attempt_times == [0, 1, 3]
    assert calls == [(3, 3, "attempt 3")]
    assert handle.attempts == 3
    assert handle.state is TaskState.FAILED


async def test_retry_succeeds_on_the_second_attempt(autojump_clock: trio.testing.MockClock) -> None:
    calls: list[BaseException] = []
    attempt_times: list[float] = []

    async def flaky() -> str:
        attempt_times.append(trio.current_time())
        if len(attempt_times) == 1:
            raise TimeoutError("first attempt")
        return "second time lucky"

    async with trio_bg.open_task_manager(on_error=lambda h, e: calls.append(e)) as tm:
        handle = tm.start_soon(flaky, retry=Retry(attempts=3, backoff=1, jitter=False))
        assert await handle.get() == "second time lucky"

    assert handle.state is TaskState.SUCCEEDED
    assert handle.attempts == 2
    assert attempt_times == [0, 1]
    assert calls == []


async def test_retry_skips_exceptions_outside_on(autojump_clock: trio.testing.MockClock) -> None:
    attempts: list[float] = []

    async def fails_with_type_error() -> None:
        attempts.append(trio.current_time())
        raise TypeError("not retryable")

    async with trio_bg.open_task_manager() as tm:
        handle = tm.start_soon(
            fails_with_type_error, retry=Retry(attempts=5, backoff=1, on=(ConnectionError,))
        )
        with pytest.raises(TypeError, match=r"^not retryable$"):
            await handle.get()

    assert attempts == [0]
    assert handle.attempts == 1


async def test_timeout_applies_to_each_attempt_and_is_retried(
    autojump_clock: trio.testing.MockClock,
) -> None:
    starts: list[float] = []

    async def slow() -> None:
        starts.append(trio.current_time())
        await trio.sleep(10)

    async with trio_bg.open_task_manager() as tm:
        handle = tm.start_soon(slow, timeout=2, retry=Retry(attempts=2, backoff=1, jitter=False))
        with pytest.raises(trio.TooSlowError, match=r"^$"):
            await handle.get()
        # attempt 1: 0..2, backoff 1 s, attempt 2: 3..5
        assert trio.current_time() == 5

    assert starts == [0, 3]
    assert handle.attempts == 2


async def test_cancelling_during_the_backoff_ends_the_task_without_retrying(
    autojump_clock: trio.testing.MockClock,
) -> None:
    attempts: list[float] = []
    calls: list[BaseException] = []

    async def fails() -> None:
        attempts.append(trio.current_time())
        raise ConnectionError("down")

    async with trio_bg.open_task_manager(on_error=lambda h, e: calls.append(e)) as tm:
        handle = tm.start_soon_named(
            "fails", fails, retry=Retry(attempts=3, backoff=10, jitter=False)
        )
        await trio.sleep(4)  # inside the 10 s backoff after attempt 1
        assert handle.cancel() is True
        with pytest.raises(TaskCancelled, match=rf"^task 'fails' \({handle.id}\) was cancelled$"):
            await handle.get()
        assert trio.current_time() == 4

    assert attempts == [0]
    assert handle.state is TaskState.CANCELLED
    assert calls == []


def test_retry_delay_doubles_up_to_max_backoff_and_jitter_stays_within_half_to_full() -> None:
    plain = Retry(attempts=6, backoff=0.5, max_backoff=3, jitter=False)
    assert [plain.delay(k) for k in range(1, 6)] == [0.5, 1.0, 2.0, 3.0, 3.0]
    jittered = Retry(backoff=2, jitter=True)
    for _ in range(50):
        assert 1.0 <= jittered.delay(1) <= 2.0
        assert 2.0 <= jittered.delay(2) <= 4.0


def test_retry_accepts_a_single_exception_class_for_on() -> None:
    assert Retry(on=OSError).on == (OSError,)
    assert re.fullmatch(r"Retry\(attempts=3, .*\)", repr(Retry()))
