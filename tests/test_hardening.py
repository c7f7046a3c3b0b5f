"""Findings of the hardening issue fixed so far: each with the case that showed it."""

from __future__ import annotations

import gc
import re

import pytest
import trio
import trio.testing

import trio_bg
from trio_bg.asgi import TaskMiddleware, app_tasks, request_tasks
from trio_bg.testing import check_accounting


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


async def test_cancelled_queued_tasks_are_released_while_the_slot_stays_busy() -> None:
    def live_handles() -> int:
        gc.collect()
        return sum(type(o) is trio_bg.TaskHandle for o in gc.get_objects())

    async with trio_bg.open_task_manager(max_running=1, recent_limit=0) as tm:
        busy = tm.start_soon(trio.sleep_forever)
        before = live_handles()
        for _ in range(5_000):
            tm.start_soon(trio.sleep_forever).cancel()  # queued behind `busy`, then cancelled
        trio_bg.set_recent_limit(trio_bg.set_recent_limit(0))  # empty the finished history
        # Without compaction the queue would still hold all 5,000 cancelled handles.
        assert live_handles() - before < 200
        stats = tm.statistics()
        assert (stats.pending, stats.running, stats.cancelled) == (0, 1, 5_000)
        check_accounting(stats)
        busy.cancel()


async def test_a_queue_keeps_its_order_through_cancellations(
    autojump_clock: trio.testing.MockClock,
) -> None:
    order: list[int] = []

    async def note(i: int) -> None:
        order.append(i)
        await trio.sleep(1)

    async with trio_bg.open_task_manager(max_running=1) as tm:
        handles = [tm.start_soon(note, i) for i in range(400)]
        for handle in handles[1:300]:
            handle.cancel()
        await tm.wait_idle()
    assert order == [0, *range(300, 400)]


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


async def _app(scope: object, receive: object, send: object) -> None:
    del scope, receive, send


def test_a_middleware_name_of_the_wrong_kind_is_a_type_error() -> None:
    with pytest.raises(TypeError, match=exact("task manager name must be a str, got int")):
        TaskMiddleware(_app, name=5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=exact("task manager name must be a non-empty string")):
        TaskMiddleware(_app, name="")


async def test_ids_trio_bg_never_gives_are_not_found_rather_than_errors() -> None:
    async with trio_bg.open_task_manager() as tm:
        for task_id in ("task-²", "task-٣", "task-07", "task-"):
            assert tm.get(task_id) is None
            assert tm.cancel(task_id) is False
            assert trio_bg.find_task(task_id) is None


def test_using_the_context_as_the_manager_says_what_to_do() -> None:
    context = trio_bg.open_task_manager()
    with pytest.raises(
        AttributeError,
        match=exact(
            "'TaskManagerContext' object has no attribute 'start_soon_named': "
            "open_task_manager() returns an async context manager; the manager is what "
            "'async with trio_bg.open_task_manager() as tm' gives you"
        ),
    ):
        context.start_soon_named  # type: ignore[attr-defined]  # noqa: B018


class QuartLikeRequest:
    """Not a mapping: what Quart's ``request`` is (its scope is ``request.scope``)."""

    def __init__(self) -> None:
        self.scope: dict[str, object] = {}


@pytest.mark.parametrize("lookup", [request_tasks, app_tasks])
def test_a_request_object_instead_of_its_scope_says_what_to_pass(lookup: object) -> None:
    name = getattr(lookup, "__name__")  # noqa: B009
    with pytest.raises(
        TypeError,
        match=exact(
            f"{name}() takes the ASGI scope (a mapping; in Quart pass request.scope), "
            "got QuartLikeRequest"
        ),
    ):
        lookup(QuartLikeRequest())  # type: ignore[operator]


# -- threads and event loops ----------------------------------------------------------------------


async def _double(x: int) -> int:
    await trio.lowlevel.checkpoint()
    return 2 * x


async def test_a_start_from_a_thread_trio_started_runs_in_the_manager() -> None:
    async with trio_bg.open_task_manager() as tm:

        def from_worker_thread() -> trio_bg.TaskHandle[int]:
            return tm.start_soon_named("double", _double, 21)

        handle = await trio.to_thread.run_sync(from_worker_thread)
        assert await handle.get() == 42
        # a refusal made in the trio thread comes back to the thread as it is
        tm_group = tm.open_group("g")
        with pytest.raises(
            RuntimeError, match=exact("enter group 'g' with 'async with' before starting tasks")
        ):
            await trio.to_thread.run_sync(lambda: tm_group.start_soon(_double, 1))
    stats = tm.statistics()
    assert (stats.started, stats.succeeded, stats.rejected) == (1, 1, 0)


FOREIGN_THREAD = (
    "start_soon_named() was called from a thread that trio did not start (or after its trio run "
    "ended): call it in the trio thread, or in a function that trio.to_thread.run_sync runs, "
    "such as a plain 'def' Starlette or FastAPI endpoint"
)


async def test_a_start_from_any_other_thread_is_refused_before_anything_is_counted() -> None:
    import threading

    errors: list[BaseException] = []
    async with trio_bg.open_task_manager() as tm:

        def foreign() -> None:
            try:
                tm.start_soon_named("double", _double, 1)
            except BaseException as exc:
                errors.append(exc)

        thread = threading.Thread(target=foreign)
        thread.start()
        await trio.to_thread.run_sync(thread.join)
        assert tm.statistics() == trio_bg.TaskStatistics(0, 0, 0, 0, 0, 0, 0)
        assert tm.active_count == 0
    assert len(errors) == 1 and isinstance(errors[0], RuntimeError)
    assert str(errors[0]) == FOREIGN_THREAD


async def test_a_sync_starlette_endpoint_starts_request_and_app_tasks() -> None:
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route

    from tests.asgi_server import running

    seen: list[str] = []

    async def note(what: str) -> None:
        seen.append(what)

    def endpoint(request: Request) -> PlainTextResponse:  # run in a worker thread by Starlette
        request_tasks(request).after_response.start_soon_named("after", note, "after")
        handle = app_tasks(request).start_soon_named("app", note, "app")
        return PlainTextResponse(handle.id)

    app = TaskMiddleware(Starlette(routes=[Route("/", endpoint)]))
    async with running(app) as server:
        response = await server.client.get("/")
        assert response.status_code == 200
        await server.wait_idle()
        assert trio_bg.find_task(response.text) is not None
    assert sorted(seen) == ["after", "app"]


def test_under_asyncio_every_entry_says_trio_bg_needs_trio() -> None:
    import asyncio

    message = (
        "trio_bg needs trio, not asyncio: run Hypercorn with --worker-class trio "
        "(hypercorn --worker-class trio module:app), or python -m trio_bg serve module:app"
    )

    async def open_directly() -> None:
        async with trio_bg.open_task_manager():
            pass

    async def request_through_the_middleware() -> None:
        async def receive() -> dict[str, object]:
            return {"type": "http.request", "body": b"", "more_body": False}

        async def send(message: object) -> None:
            del message

        scope = {"type": "http", "method": "GET", "path": "/", "headers": []}
        await TaskMiddleware(_app)(scope, receive, send)

    for entry in (open_directly, request_through_the_middleware):
        with pytest.raises(RuntimeError, match=exact(message)):
            asyncio.run(entry())
