"""Static checks of the public signatures: checked by ``mypy --strict`` and pyright (strict), never
run (pytest does not collect this file: its name does not start with ``test_``).

A wrong argument must stay an error: each such line carries an error-code-specific
``# type: ignore[arg-type]``, and both checkers fail on an unused ignore (mypy's
``warn_unused_ignores``, pyright's ``reportUnnecessaryTypeIgnoreComment``). Pyright honours a
``# type: ignore`` as well, so a ``# pyright: ignore[...]`` on the same line would itself be
reported as unnecessary; the one comment serves both checkers.
"""

from __future__ import annotations

import functools
from collections.abc import MutableMapping
from typing import Any, assert_type

import outcome
import trio

import trio_bg
from trio_bg import Retry, TaskGroup, TaskHandle, TaskManager, TaskState, TaskStatistics


async def returns_int() -> int:
    return 1


def sync_returns_int() -> int:
    return 1


async def takes_int(x: int) -> str:
    return str(x)


def sync_takes_int(x: int) -> bytes:
    return bytes(x)


async def two_args(x: int, name: str) -> float:
    return float(x)


async def notify(user_id: int, *, channel: str) -> bool:
    return bool(user_id) and bool(channel)


def log_failure(handle: TaskHandle[object], exc: BaseException) -> None:
    del handle, exc


async def check_manager() -> None:
    async with trio_bg.open_task_manager(
        "types", max_running=2, grace_period=1.0, shield_timeout=2.0, on_error=log_failure
    ) as tm:
        assert_type(tm, TaskManager)

        # The value type flows from the function to the handle and out of get().
        assert_type(await tm.start_soon(returns_int).get(), int)
        assert_type(tm.start_soon(returns_int), TaskHandle[int])
        assert_type(await tm.start_soon(sync_returns_int).get(), int)  # a sync function too
        assert_type(await tm.start_soon(takes_int, 1).get(), str)
        assert_type(await tm.start_soon(sync_takes_int, 3).get(), bytes)
        assert_type(await tm.start_soon_named("two", two_args, 1, "a").get(), float)
        assert_type(await tm.add_task(notify, 7, channel="sms").get(), bool)
        assert_type(await tm.start_soon(functools.partial(takes_int, 2)).get(), str)

        # The options are keyword-only and typed.
        handle = tm.start_soon(
            takes_int, 1, shield=True, timeout=3.0, retry=Retry(attempts=2), key="k"
        )
        assert_type(handle.outcome, outcome.Outcome[str] | None)
        assert_type(handle.state, TaskState)
        assert_type(handle.cancel(), bool)
        assert_type(await handle.wait(), None)
        assert_type(tm.statistics(), TaskStatistics)
        assert_type(tm.active_tasks, tuple[TaskHandle[Any], ...])
        assert_type(tm.cancel_all(), int)

        # A wrong positional argument (async and sync), a missing one, a wrong keyword argument.
        tm.start_soon(takes_int, "not an int")  # type: ignore[arg-type]
        tm.start_soon(sync_takes_int, "not an int")  # type: ignore[arg-type]
        tm.start_soon_named("n", takes_int, "not an int")  # type: ignore[arg-type]
        tm.start_soon(two_args, 1)  # type: ignore[arg-type]
        tm.add_task(notify, 7, channel=3)  # type: ignore[arg-type]

        async with tm.open_group("g") as group:
            assert_type(group, TaskGroup)
            assert_type(await group.start_soon(returns_int).get(), int)
            group.start_soon(takes_int, b"bytes")  # type: ignore[arg-type]
            assert_type(await group.wait_all(), list[object])
            assert_type(await group.wait_all(int), list[int])

        await trio.lowlevel.checkpoint()


# -- misuse a type checker reports (the runtime message says the same) --------------------------


async def check_with_is_a_type_error() -> None:
    # trio's way: __enter__ is hidden from type checkers, so `with` instead of `async with` is
    # an error here and not only when it runs.
    with trio_bg.open_task_manager() as tm:  # type: ignore[attr-defined]
        del tm
    async with trio_bg.open_task_manager() as tm:
        with tm.open_group("g") as group:  # type: ignore[attr-defined]
            del group
        _ = tm.after_route  # type: ignore[attr-defined]  # only a request's manager has timing points


def check_context_is_public() -> None:
    assert_type(trio_bg.open_task_manager(), trio_bg.TaskManagerContext)


# -- handles: covariant, and the Protocol other handles implement ---------------------------------


def takes_object_handle(handle: TaskHandle[object]) -> None:
    del handle


def takes_handle_like(handle: trio_bg.TaskHandleLike[float]) -> None:
    del handle


async def check_handles(tm: TaskManager) -> None:
    handle = tm.start_soon(returns_int)
    takes_object_handle(handle)  # TaskHandle[int] is a TaskHandle[object]
    takes_handle_like(handle)  # and a TaskHandleLike[float] (int is a float, covariantly)
    like: trio_bg.TaskHandleLike[int] = handle
    assert_type(await like.get(), int)
    assert_type(like.state, TaskState)
    bytes_handle = tm.start_soon(sync_takes_int, 1)
    takes_handle_like(bytes_handle)  # type: ignore[arg-type]  # bytes is not a float
    found = trio_bg.find_task(handle.id)
    assert_type(found, TaskHandle[Any] | None)


# -- instruments ---------------------------------------------------------------------------------


class Counting(trio_bg.Instrument):
    def task_finished(self, handle: TaskHandle[Any]) -> None:
        del handle


def check_instruments() -> None:
    trio_bg.add_instrument(Counting())
    trio_bg.open_task_manager(instruments=[Counting()])
    trio_bg.add_instrument(object())  # type: ignore[arg-type]
    trio_bg.open_task_manager(instruments=[object()])  # type: ignore[list-item]


# -- route tasks are typed end to end ------------------------------------------------------------


async def audit_with_scope(scope: MutableMapping[str, object], action: str) -> None:
    del scope, action


def check_route_tasks() -> None:
    from trio_bg.asgi import RouteTask, route_task, route_task_with_scope

    assert_type(route_task(takes_int, 1), RouteTask[str])
    assert_type(route_task_with_scope(audit_with_scope, "viewed"), RouteTask[None])
    route_task(takes_int, "one")  # type: ignore[arg-type]
    route_task_with_scope(audit_with_scope, 7)  # type: ignore[arg-type]
