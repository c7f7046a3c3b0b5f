"""The docs' examples, as a newcomer meets them: every ``python`` block of docs/ parses, and the
durable jobs guide's ``jobs.py`` / ``app.py`` pair runs as written (against a real redis-server,
under a real Hypercorn). Redis down at startup is one clear line, not a page of tracebacks."""

from __future__ import annotations

import ast
import logging
import re
import sys
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trio

from tests.redis_server import RedisServer, free_port, redis_server
from trio_bg.durable import DurableQueue, QueueUnavailable
from trio_bg.testing import serve_app

DOCS = Path(__file__).resolve().parent.parent / "docs"
__all__ = ["redis_server"]  # the fixture, used by name

FENCE = re.compile(r"^```python\n(.*?)^```", re.M | re.S)


def _blocks() -> Iterator[Any]:
    for page in sorted(DOCS.rglob("*.md")):
        text = page.read_text()
        for match in FENCE.finditer(text):
            line = text[: match.start()].count("\n") + 1
            yield pytest.param(match.group(1), id=f"{page.relative_to(DOCS)}:{line}")


@pytest.mark.parametrize("code", list(_blocks()))
def test_every_python_block_of_the_docs_parses(code: str) -> None:
    ast.parse(code)


def _block(page: str, first_line: str) -> str:
    for match in FENCE.finditer((DOCS / page).read_text()):
        if match.group(1).startswith(first_line):
            return match.group(1)
    raise AssertionError(f"no block starting {first_line!r} in {page}")


@pytest.fixture
def docs_modules(tmp_path: Path, redis_server: RedisServer) -> Iterator[Path]:
    """docs/durable.md's jobs.py and app.py, written as modules, on a real Redis."""
    jobs = _block("durable.md", "# jobs.py").replace("redis://127.0.0.1:6379", redis_server.url)
    (tmp_path / "jobs.py").write_text(jobs)
    (tmp_path / "app.py").write_text(_block("durable.md", "# app.py"))
    sys.path.insert(0, str(tmp_path))
    try:
        yield tmp_path
    finally:
        sys.path.remove(str(tmp_path))
        for name in ("jobs", "app"):
            sys.modules.pop(name, None)


@pytest.mark.slow
async def test_the_durable_guides_app_runs_as_written(
    docs_modules: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import app  # type: ignore[import-not-found]
    import jobs  # type: ignore[import-not-found]

    queue: DurableQueue = jobs.queue
    async with queue.open_worker(concurrency=2), serve_app(app.app) as served:
        response = await served.client.post("/orders")
        await served.wait_idle()
        assert response.status_code == 202
        handle = await queue.find_job(response.text)
        assert handle is not None
        with trio.fail_after(20):
            assert await handle.get() == "sent 42"
    assert "sent 43" in capsys.readouterr().out


async def test_redis_down_at_startup_is_one_clear_exception() -> None:
    url = f"redis://127.0.0.1:{free_port()}"
    queue = DurableQueue(url, name="emails", enqueue_timeout=2)
    with pytest.raises(QueueUnavailable) as caught:
        async with queue:
            pass  # pragma: no cover - it cannot open
    message = str(caught.value)
    assert message.startswith(f"durable queue 'emails': cannot reach Redis at {url} to open: ")
    text = "".join(traceback.format_exception(caught.value))
    assert "ExceptionGroup" not in text
    assert "During handling" not in text and "direct cause" not in text
    assert len(text.splitlines()) < 15, text


async def test_redis_down_at_startup_logs_one_line_and_the_app_serves(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from trio_bg.asgi import TaskMiddleware, request_tasks

    url = f"redis://127.0.0.1:{free_port()}"
    queue = DurableQueue(url, name="emails", enqueue_timeout=2)

    @queue.task
    async def send_receipt(order_id: int) -> str:
        return f"sent {order_id}"  # pragma: no cover - never runs

    async def inner(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        handle = request_tasks(scope).start_soon_named("audit", trio.lowlevel.checkpoint)
        await handle.get()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    caplog.set_level(logging.ERROR)
    async with serve_app(TaskMiddleware(inner, queues=[queue])) as served:
        assert (await served.client.get("/")).status_code == 200
        with pytest.raises(QueueUnavailable, match=r"cannot reach Redis"):
            await queue.enqueue(send_receipt, 1)
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1
    assert errors[0].exc_info is None
    assert errors[0].getMessage() == (
        f"durable queue 'emails': cannot reach Redis at {url} to open: "
        f"{errors[0].getMessage().split(' to open: ')[1]}"
    )
    assert errors[0].getMessage().endswith("; the app goes on without it")
    assert "\n" not in errors[0].getMessage()
