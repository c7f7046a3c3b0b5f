"""Misuse fails loudly, with exact messages, and starts nothing."""

from __future__ import annotations

import gc
import inspect
import math
import re
import warnings
from collections.abc import AsyncIterator, Callable, Generator
from typing import Any

import pytest
import trio
import trio.testing

import trio_bg
from trio_bg import Retry, TaskManager, TaskRejected

calls: list[object] = []


async def work(x: object = None) -> None:
    calls.append(x)


async def agen() -> AsyncIterator[int]:
    yield 1


class Ready:
    """An awaitable that is not a coroutine (and not callable)."""

    def __await__(self) -> Generator[None]:
        yield


def exact(message: str) -> str:
    return f"^{re.escape(message)}$"


@pytest.fixture(autouse=True)
def _reset_calls() -> None:
    calls.clear()


# -- coroutine objects ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "start"),
    [
        ("start_soon", lambda tm, coro: tm.start_soon(coro)),
        ("start_soon_named", lambda tm, coro: tm.start_soon_named("n", coro)),
        ("add_task", lambda tm, coro: tm.add_task(coro)),
    ],
)
async def test_a_coroutine_object_is_refused_and_closed_without_a_never_awaited_warning(
    method: str, start: Callable[[TaskManager, Any], object]
) -> None:
    async with trio_bg.open_task_manager() as tm:
        before = tm.statistics()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            coro = work(1)
            with pytest.raises(
                TypeError,
                match=exact(
                    f"{method}() takes a function, not a coroutine object: "
                    f"write {method}(work, *args), not {method}(work(*args))"
                ),
            ):
                start(tm, coro)
            assert inspect.getcoroutinestate(coro) == inspect.CORO_CLOSED
            del coro
            gc.collect()
        assert [w for w in caught if issubclass(w.category, RuntimeWarning)] == []
        assert tm.statistics() == before
        assert tm.active_count == 0
    assert calls == []


def test_the_warning_check_above_would_see_a_never_awaited_coroutine() -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        coro = work(1)
        del coro
        gc.collect()
    assert [str(w.message) for w in caught] == ["coroutine 'work' was never awaited"]


# -- bad starts -------------------------------------------------------------------------------

BAD_STARTS: list[tuple[str, Callable[[TaskManager], object], type[Exception], str]] = [
    (
        "non-callable",
        lambda tm: tm.start_soon(42),  # type: ignore[call-overload]
        TypeError,
        "start_soon() takes a function, got 'int'",
    ),
    (
        "empty name",
        lambda tm: tm.start_soon_named("", work),
        ValueError,
        "task name must be a non-empty string",
    ),
    (
        "non-str name",
        lambda tm: tm.start_soon_named(7, work),  # type: ignore[call-overload]
        TypeError,
        "task name must be a str, got int",
    ),
    (
        "negative timeout",
        lambda tm: tm.start_soon(work, timeout=-1),
        ValueError,
        "timeout must be a non-negative number of seconds, got -1",
    ),
    (
        "NaN timeout",
        lambda tm: tm.start_soon(work, timeout=math.nan),
        ValueError,
        "timeout must be a non-negative number of seconds, got nan",
    ),
    (
        "non-number timeout",
        lambda tm: tm.start_soon(work, timeout="3"),  # type: ignore[call-overload]
        TypeError,
        "timeout must be a number of seconds, got str",
    ),
    (
        "retry not a Retry",
        lambda tm: tm.start_soon(work, retry=3),  # type: ignore[call-overload]
        TypeError,
        "retry must be a trio_bg.Retry or None, got int",
    ),
    (
        "on_error not callable",
        lambda tm: tm.start_soon(work, on_error="log"),  # type: ignore[call-overload]
        TypeError,
        "on_error must be callable or None, got str",
    ),
    (
        "non-str key",
        lambda tm: tm.start_soon(work, key=5),  # type: ignore[call-overload]
        TypeError,
        "key must be a str or None, got int",
    ),
    (
        "async generator function",
        lambda tm: tm.start_soon(agen),
        TypeError,
        "start_soon() takes a function, not a generator function 'agen': "
        "wrap it in a function that consumes it",
    ),
    (
        "awaitable that is not a coroutine",
        lambda tm: tm.start_soon_named("n", Ready()),  # type: ignore[call-overload]
        TypeError,
        "start_soon_named() takes a function, not an awaitable 'Ready'",
    ),
]


@pytest.mark.parametrize(
    ("start", "error", "message"),
    [pytest.param(start, error, message, id=case) for case, start, error, message in BAD_STARTS],
)
async def test_a_bad_start_raises_an_exact_message_and_starts_nothing(
    start: Callable[[TaskManager], object], error: type[Exception], message: str
) -> None:
    async with trio_bg.open_task_manager() as tm:
        keep = tm.start_soon(trio.sleep, 0)
        before = tm.statistics()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            with pytest.raises(error, match=exact(message)):
                start(tm)
            gc.collect()
        assert [str(w.message) for w in caught] == []
        assert tm.statistics() == before  # not even counted as rejected: it is a bug, not load
        assert tm.active_tasks == (keep,)
        await trio.testing.wait_all_tasks_blocked()
    assert calls == []


# -- bad options ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "error", "message"),
    [
        ({"max_running": 0}, ValueError, "max_running must be None or >= 1, got 0"),
        ({"max_pending": -1}, ValueError, "max_pending must be None or >= 0, got -1"),
        ({"max_running": "2"}, TypeError, "max_running must be an int or None, got str"),
        ({"max_threads": 0}, ValueError, "max_threads must be None or >= 1, got 0"),
        (
            {"grace_period": -1},
            ValueError,
            "grace_period must be a non-negative number of seconds, got -1",
        ),
        (
            {"grace_period": 2, "shield_timeout": 1},
            ValueError,
            "shield_timeout (1.0) must be >= grace_period (2.0): "
            "shielded tasks get at least the grace period",
        ),
        ({"on_error": 5}, TypeError, "on_error must be callable or None, got int"),
        ({"name": ""}, ValueError, "task manager name must be a non-empty string"),
        ({"name": 3}, TypeError, "task manager name must be a str, got int"),
    ],
)
def test_bad_manager_options_raise_exact_messages(
    options: dict[str, Any], error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=exact(message)):
        trio_bg.open_task_manager(**options)


@pytest.mark.parametrize(
    ("options", "error", "message"),
    [
        ({"attempts": 0}, ValueError, "Retry attempts must be >= 1, got 0"),
        ({"attempts": 1.5}, TypeError, "Retry attempts must be an int, got float"),
        (
            {"on": (KeyboardInterrupt,)},
            TypeError,
            "Retry on must hold Exception subclasses, got <class 'KeyboardInterrupt'>",
        ),
        ({"on": (int,)}, TypeError, "Retry on must hold Exception subclasses, got <class 'int'>"),
        ({"on": ()}, ValueError, "Retry on must be a non-empty tuple of Exception subclasses"),
        ({"backoff": -1}, ValueError, "Retry backoff must be a finite number >= 0, got -1"),
        (
            {"max_backoff": math.inf},
            ValueError,
            "Retry max_backoff must be a finite number >= 0, got inf",
        ),
    ],
)
def test_bad_retry_policies_raise_exact_messages(
    options: dict[str, Any], error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=exact(message)):
        Retry(**options)


# -- wrong use of the objects -----------------------------------------------------------------


def test_with_instead_of_async_with_on_open_task_manager() -> None:
    with (
        pytest.raises(
            TypeError, match=exact("use 'async with trio_bg.open_task_manager(...)', not 'with'")
        ),
        trio_bg.open_task_manager(),  # type: ignore[attr-defined]
    ):
        pytest.fail("unreachable")  # pragma: no cover


async def test_with_instead_of_async_with_on_open_group() -> None:
    async with trio_bg.open_task_manager() as tm:
        message = exact("use 'async with tm.open_group(...)', not 'with'")
        with pytest.raises(TypeError, match=message), tm.open_group("g"):
            pytest.fail("unreachable")  # pragma: no cover


def test_the_classes_have_no_public_constructor() -> None:
    with pytest.raises(
        TypeError,
        match=exact(
            "trio_bg.TaskManager has no public constructor; "
            "use 'async with trio_bg.open_task_manager() as tm'"
        ),
    ):
        TaskManager()
    with pytest.raises(
        TypeError,
        match=exact("trio_bg.TaskGroup has no public constructor; use tm.open_group(name)"),
    ):
        trio_bg.TaskGroup()


async def test_open_task_manager_cannot_be_entered_twice() -> None:
    scope = trio_bg.open_task_manager()
    async with scope:
        pass
    with pytest.raises(RuntimeError, match=exact("this open_task_manager() was already entered")):
        async with scope:
            pass  # pragma: no cover


async def test_start_after_close_is_rejected_counted_and_never_calls_the_function() -> None:
    async with trio_bg.open_task_manager(name="shop") as tm:
        pass
    before = tm.statistics()
    with pytest.raises(TaskRejected, match=exact("task manager 'shop' is closed to new tasks")):
        tm.start_soon(work, 1)
    with pytest.raises(TaskRejected, match=exact("task manager 'shop' is closed to new tasks")):
        tm.start_soon_named("late", work, 2)
    after = tm.statistics()
    assert after.rejected == before.rejected + 2
    assert after.started == before.started == 0
    await trio.testing.wait_all_tasks_blocked()
    assert calls == []


async def test_group_misuse() -> None:
    async with trio_bg.open_task_manager() as tm:
        with pytest.raises(ValueError, match=exact("group name must be a non-empty string")):
            tm.open_group("")
        with pytest.raises(TypeError, match=exact("group name must be a str, got int")):
            tm.open_group(5)  # type: ignore[arg-type]

        group = tm.open_group("g")
        with pytest.raises(
            RuntimeError, match=exact("enter group 'g' with 'async with' before starting tasks")
        ):
            group.start_soon(work)
        async with group:
            group.start_soon(work, "inside")
        with pytest.raises(RuntimeError, match=exact("group 'g' was already entered")):
            async with group:
                pass  # pragma: no cover

        before = tm.statistics()
        with pytest.raises(TaskRejected, match=exact("group 'g' is closed to new tasks")):
            group.start_soon(work, "after")
        with pytest.raises(TaskRejected, match=exact("group 'g' is closed to new tasks")):
            group.add_task(work, "after")
        after = tm.statistics()
        assert after.started == before.started
        assert after.rejected == before.rejected + 2

        # A coroutine object given to a closed group is a TypeError, and it is closed.
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            coro = work("coro")
            with pytest.raises(TypeError, match=r"^start_soon\(\) takes a function, not a corou"):
                group.start_soon(coro)
            assert inspect.getcoroutinestate(coro) == inspect.CORO_CLOSED
            del coro
            gc.collect()
        assert caught == []
        assert tm.statistics() == after
    assert calls == ["inside"]


async def test_a_sync_function_that_returns_a_coroutine_fails_the_task() -> None:
    def returns_coroutine() -> object:
        return work("never")

    async with trio_bg.open_task_manager() as tm:
        handle = tm.start_soon_named("wrong", returns_coroutine)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            # trio.to_thread.run_sync closes the coroutine and raises this itself
            with pytest.raises(
                TypeError,
                match=r"^Trio expected a sync function, but '.*returns_coroutine' appears to be "
                r"asynchronous$",
            ):
                await handle.get()
            gc.collect()
        assert caught == []
    assert handle.state is trio_bg.TaskState.FAILED
    assert calls == []


async def test_request_only_timing_points_are_refused_on_a_plain_manager() -> None:
    async with trio_bg.open_task_manager(name="plain") as tm:
        with pytest.raises(
            RuntimeError,
            match=exact(
                "task manager 'plain' has no timing points: after_route tasks belong to a "
                "request manager (trio_bg.asgi.request_tasks(scope))"
            ),
        ):
            _ = tm.after_route
