"""TaskMiddleware under a real Hypercorn: raising handlers, failing tasks, the per-request cap."""

from __future__ import annotations

import logging
import re
from typing import Any

import pytest
import trio

from tests.asgi_server import get_request, read_to_eof, respond
from tests.conftest import http_only, trio_bg_records
from trio_bg import TaskHandle, TaskManager, TaskRejected, TaskState, TaskStatistics
from trio_bg.asgi import TaskMiddleware, app_tasks, request_tasks
from trio_bg.testing import check_accounting, serve_app

SUCCEEDED = TaskState.SUCCEEDED
FAILED = TaskState.FAILED
CANCELLED = TaskState.CANCELLED


async def test_handler_raising_discards_deferred_tasks_in_one_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    handles: dict[str, TaskHandle[Any]] = {}

    async def must_not_run() -> None:
        raise AssertionError("a discarded task ran")

    async def audit() -> str:
        return "audited"

    async def handler(scope: Any, receive: Any, send: Any) -> None:
        http_only(scope)
        tasks = request_tasks(scope)
        handles["route"] = tasks.after_route.start_soon_named("bust-cache", must_not_run)
        handles["response"] = tasks.after_response.start_soon_named("send-email", must_not_run)
        handles["always"] = tasks.after_response.start_soon_named("audit", audit, always=True)
        raise ValueError("handler broke")

    async with serve_app(TaskMiddleware(handler)) as server:
        response = await server.client.get("/orders")
        with trio.fail_after(2):
            assert await handles["always"].get() == "audited"

    assert response.status_code == 500
    assert response.text == "Internal Server Error"
    assert handles["route"].state is CANCELLED
    assert handles["response"].state is CANCELLED
    assert handles["always"].state is SUCCEEDED

    [warning] = trio_bg_records(caplog, logging.WARNING)
    message = warning.getMessage()
    assert f"'bust-cache' ({handles['route'].id})" in message
    assert f"'send-email' ({handles['response'].id})" in message
    assert "audit" not in message
    assert message.startswith("GET: 2 deferred task(s) not run")  # no route: the method alone
    assert trio_bg_records(caplog, logging.ERROR) == []
    # The handler's own exception still reaches the server, which logs it.
    [framework_error] = [
        r.exc_info[1] for r in caplog.records if r.name == "hypercorn.error" and r.exc_info
    ]
    assert isinstance(framework_error, ValueError)
    assert str(framework_error) == "handler broke"


async def test_a_final_body_refused_by_cancellation_starts_no_after_response_task(
    caplog: pytest.LogCaptureFixture,
) -> None:
    handles: dict[str, TaskHandle[Any]] = {}

    async def must_not_run() -> None:
        raise AssertionError("an after_response task ran for a response never sent")

    async def cache() -> str:
        return "cached"

    async def handler(scope: Any, receive: Any, send: Any) -> None:
        http_only(scope)
        tasks = request_tasks(scope)
        handles["route"] = tasks.after_route.start_soon_named("cache", cache)
        handles["response"] = tasks.after_response.start_soon_named("email", must_not_run)
        await send({"type": "http.response.start", "status": 200, "headers": []})
        with trio.CancelScope() as cancelled:
            cancelled.cancel()  # e.g. a response timeout that expired just before the body
            await send({"type": "http.response.body", "body": b"never sent"})

    async with serve_app(TaskMiddleware(handler)) as server:
        stream = await trio.open_tcp_stream(server.host, server.port)
        async with stream:
            await stream.send_all(get_request("/late", server.host, server.port))
            with trio.fail_after(2):
                received = await read_to_eof(stream)
                assert await handles["route"].get() == "cached"
                await handles["response"].wait()

    assert received.startswith(b"HTTP/1.1 200 ")
    assert b"never sent" not in received
    assert handles["response"].state is CANCELLED
    [warning] = trio_bg_records(caplog, logging.WARNING)
    assert warning.getMessage() == (
        f"GET: 1 deferred task(s) not run, the response was not completed: "
        f"'email' ({handles['response'].id})"
    )


async def test_failing_tasks_change_no_response_and_kill_nothing(
    caplog: pytest.LogCaptureFixture,
) -> None:
    failed: list[TaskHandle[Any]] = []
    app_managers: list[TaskManager] = []

    async def boom(what: str) -> None:
        raise RuntimeError(f"{what} failed")

    async def healthy() -> str:
        return "app tasks still work"

    async def handler(scope: Any, receive: Any, send: Any) -> None:
        http_only(scope)
        tasks = request_tasks(scope)
        app = app_tasks(scope)
        app_managers.append(app)
        if scope["path"] == "/fail":
            app_failure = app.start_soon_named("app-boom", boom, "app")
            request_failure = tasks.start_soon_named("request-boom", boom, "request")
            failed.extend((app_failure, request_failure))
            failed.append(tasks.after_response.start_soon_named("late-boom", boom, "late"))
            with trio.fail_after(2):  # both have failed before the response is sent
                await app_failure.wait()
                await request_failure.wait()
            await respond(send, b"ok")
        else:
            with trio.fail_after(2):
                value = await app.start_soon_named("healthy", healthy).get()
            await respond(send, value.encode())

    async with serve_app(TaskMiddleware(handler)) as server:
        first = await server.client.get("/fail")
        second = await server.client.get("/fail")
        after = await server.client.get("/after")
        with trio.fail_after(2):
            for handle in failed:
                await handle.wait()
        app_stats = app_managers[0].statistics()

    assert [(r.status_code, r.text) for r in (first, second, after)] == [
        (200, "ok"),
        (200, "ok"),
        (200, "app tasks still work"),
    ]
    assert len(set(map(id, app_managers))) == 1
    assert [h.state for h in failed] == [FAILED] * 6
    assert app_stats == TaskStatistics(
        started=3, pending=0, running=0, succeeded=1, failed=2, cancelled=0, rejected=0
    )
    # Each failure is logged once, with the task's name and id and its exception.
    errors = trio_bg_records(caplog, logging.ERROR)
    assert sorted(r.getMessage() for r in errors) == sorted(
        f"task {h.name!r} ({h.id}) failed" for h in failed
    )
    for record in errors:
        assert record.exc_info is not None
        assert isinstance(record.exc_info[1], RuntimeError)
    assert [r for r in caplog.records if r.name == "hypercorn.error" and r.exc_info] == []


async def test_per_request_cap_rejects_the_101st_start() -> None:
    finished: list[int] = []
    seen: dict[str, Any] = {}

    async def work(i: int) -> None:
        await trio.lowlevel.checkpoint()
        finished.append(i)

    async def handler(scope: Any, receive: Any, send: Any) -> None:
        http_only(scope)
        tasks = request_tasks(scope)
        seen["manager"] = tasks
        starts = (
            tasks.start_soon_named,
            tasks.after_route.start_soon_named,
            tasks.after_response.start_soon_named,
        )
        for i in range(1000):
            try:
                starts[i % 3](f"work-{i}", work, i)
            except TaskRejected as exc:
                seen["error"] = exc
                seen["stats"] = tasks.statistics()
                await respond(send, f"rejected at index {i}".encode())
                return
        await respond(send, b"never rejected")

    async with serve_app(TaskMiddleware(handler, max_tasks_per_request=100)) as server:
        response = await server.client.get("/cap")
        manager: TaskManager = seen["manager"]
        with trio.fail_after(2):
            await manager.wait_idle()

    assert response.text == "rejected at index 100"
    assert type(seen["error"]) is TaskRejected
    # A raw ASGI app has no route template: the request's manager is named by its method alone.
    assert re.fullmatch(r"task manager 'GET' reached its cap of 100 tasks", str(seen["error"]))
    assert seen["stats"].started == 100
    assert seen["stats"].rejected == 1
    check_accounting(seen["stats"])  # taken while the request's tasks were pending and running
    assert sorted(finished) == list(range(100))
    assert manager.closed
    assert manager.active_count == 0
    stats = manager.statistics()
    assert stats == TaskStatistics(
        started=100, pending=0, running=0, succeeded=100, failed=0, cancelled=0, rejected=1
    )
