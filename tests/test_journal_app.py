"""A journal queue in an ASGI app: ``TaskMiddleware(queues=[...], queue_concurrency=N)`` on a
real Hypercorn, and the dashboard's queue entry for a journal."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest
import trio

from tests import journal_jobs as jobs
from trio_bg import TaskState
from trio_bg.asgi import TaskMiddleware, app_tasks
from trio_bg.dashboard import Dashboard
from trio_bg.durable import DurableHandle, QueueUnavailable
from trio_bg.testing import serve_app

TOKEN = "s3cret-token"


def enqueueing_app(queue: Any, handles: list[DurableHandle[Any]]) -> Any:
    async def inner(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                kind = message["type"].rsplit(".", 1)[1]
                await send({"type": f"lifespan.{kind}.complete"})
                if kind == "shutdown":
                    return
        app_tasks(scope)  # the app manager is there
        try:
            handle = await queue.enqueue(jobs.add, 40, 2)
        except QueueUnavailable as exc:
            body, status = str(exc).encode(), 503
        else:
            handles.append(handle)
            body, status = str(await handle.get()).encode(), 200
        await send({"type": "http.response.start", "status": status, "headers": []})
        await send({"type": "http.response.body", "body": body})

    return inner


async def test_the_middleware_opens_the_queue_and_runs_a_worker(tmp_path: Path) -> None:
    queue = jobs.make_queue(f"sqlite:///{tmp_path}/jobs.db")
    handles: list[DurableHandle[Any]] = []
    app = TaskMiddleware(enqueueing_app(queue, handles), queues=[queue], queue_concurrency=2)
    async with serve_app(app) as served:
        assert queue.is_open
        response = await served.client.get("/")
        assert (response.status_code, response.text) == (200, "42")
        names = [h.name for h in app.app_manager.active_tasks] if app.app_manager else []
        assert names == ["durable worker tests"]
    assert not queue.is_open
    assert handles[0].state is TaskState.SUCCEEDED


async def test_a_queue_that_cannot_open_leaves_the_app_serving(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / "a-file").write_text("")
    queue = jobs.make_queue(f"sqlite:///{tmp_path}/a-file/jobs.db")
    app = TaskMiddleware(enqueueing_app(queue, []), queues=[queue], queue_concurrency=2)
    caplog.set_level(logging.ERROR, "trio_bg.durable")
    async with serve_app(app) as served:
        response = await served.client.get("/")
        assert response.status_code == 503
        assert response.text.startswith("durable queue 'tests': cannot open: journal ")
    [record] = [r for r in caplog.records if r.name == "trio_bg.durable"]
    assert record.getMessage().endswith("; the app goes on without it")


def test_queue_options_are_checked() -> None:
    async def inner(scope: Any, receive: Any, send: Any) -> None: ...

    with pytest.raises(TypeError, match=r"^queues must hold DurableQueue objects, got str$"):
        TaskMiddleware(inner, queues=["jobs"])  # type: ignore[list-item]
    with pytest.raises(ValueError, match=r"^queue_concurrency must be >= 0, got -1$"):
        TaskMiddleware(inner, queue_concurrency=-1)


async def test_the_dashboard_shows_a_journal(tmp_path: Path) -> None:
    queue = jobs.make_queue(f"sqlite:///{tmp_path}/jobs.db")
    dashboard = Dashboard(token=TOKEN, queues=[queue])
    async with serve_app(dashboard) as served, queue:
        await queue.enqueue(jobs.add, 1, 1)
        await queue.enqueue(jobs.add, 1, 1, delay=600)
        with trio.fail_after(10):
            while True:
                response = await served.client.get(
                    "/api/tasks", headers={"Authorization": f"Bearer {TOKEN}"}
                )
                [entry] = response.json()["queues"]
                if entry["status"] == "ok":
                    break
                await trio.sleep(0.1)
        assert entry["redis"] == f"sqlite:///{tmp_path}/jobs.db"
        assert (entry["depth"], entry["delayed"], entry["in_flight"]) == (1, 1, 0)
