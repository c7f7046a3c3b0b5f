"""Retries at their edges: a long retry ends with the task's own error, and ``Retry(on=)``
of the wrong kind is refused."""

from __future__ import annotations

import re

import pytest
import trio
import trio.testing

import trio_bg


def exact(message: str) -> str:
    return f"^{re.escape(message)}$"


async def test_a_long_retry_fails_with_the_tasks_own_error_not_an_overflow(
    autojump_clock: trio.testing.MockClock,
) -> None:
    attempts = 0

    async def always_fails() -> None:
        nonlocal attempts
        attempts += 1
        raise ValueError(f"attempt {attempts}")

    policy = trio_bg.Retry(attempts=2000, backoff=0.001, max_backoff=0.01, jitter=False)
    async with trio_bg.open_task_manager() as tm:
        handle = tm.start_soon(always_fails, retry=policy)
        with pytest.raises(ValueError, match=exact("attempt 2000")):
            await handle.get()
    assert attempts == 2000 and handle.attempts == 2000
    assert policy.delay(1025) == 0.01 and policy.delay(10**6) == 0.01


@pytest.mark.parametrize(
    ("on", "message"),
    [
        ([ValueError], "Retry on must be an Exception subclass or a tuple of them, got list"),
        ("ValueError", "Retry on must be an Exception subclass or a tuple of them, got str"),
    ],
)
def test_retry_on_of_the_wrong_kind_is_a_type_error(on: object, message: str) -> None:
    with pytest.raises(TypeError, match=exact(message)):
        trio_bg.Retry(on=on)  # type: ignore[arg-type]
