"""trio_bg.testing: serve_app and wait_idle, run_lifespan for httpx.ASGITransport, the fixtures,
and the plugin as a user gets it (a fresh directory, the package's entry point).

No test here sleeps: each background task waits on an event the test sets, and ``wait_idle``
must see the task's effect as soon as it returns.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import textwrap
import tomllib
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

import trio_bg
from tests.asgi_server import respond
from tests.conftest import settle
from trio_bg import TaskManager, TaskState, TaskStatistics
from trio_bg.asgi import TaskMiddleware, app_tasks, request_tasks
from trio_bg.testing import (
    TaskRecorder,
    check_accounting,
    checked_task_manager,
    run_lifespan,
    serve_app,
)

ROOT = Path(__file__).resolve().parent.parent


class Shop:
    """A tiny app: ``POST /orders`` answers 201 and confirms the order after the response, once
    ``gate`` is set; ``POST /reindex`` starts an app task that waits for ``gate`` too."""

    def __init__(self) -> None:
        self.gate = trio.Event()
        self.sent: list[str] = []
        self.lifespan: list[str] = []

    async def confirm(self, order: int) -> None:
        await self.gate.wait()
        self.sent.append(f"order {order} confirmed")

    async def reindex(self) -> None:
        await self.gate.wait()
        self.sent.append("reindexed")

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                step = message["type"].removeprefix("lifespan.")
                self.lifespan.append(step)
                await send({"type": f"lifespan.{step}.complete"})
                if step == "shutdown":
                    return
        if scope["path"] == "/orders":
            request_tasks(scope).after_response.start_soon_named("confirm", self.confirm, 7)
            await respond(send, b"created", status=201)
        else:
            app_tasks(scope).start_soon_named("reindex", self.reindex)
            await respond(send, b"accepted", status=202)


async def returns_after(event: trio.Event, wait: Any) -> None:
    await wait()
    event.set()


# -- serve_app --------------------------------------------------------------------------------


async def test_wait_idle_returns_once_an_after_response_task_is_done() -> None:
    shop = Shop()
    async with serve_app(TaskMiddleware(shop)) as served, trio.open_nursery() as nursery:
        response = await served.client.post("/orders")
        assert (response.status_code, response.text) == (201, "created")
        idle = trio.Event()
        nursery.start_soon(returns_after, idle, served.wait_idle)
        await settle()
        assert not idle.is_set()  # the response came; the request's call has not returned
        assert shop.sent == []
        shop.gate.set()
        await served.wait_idle()
        assert shop.sent == ["order 7 confirmed"]
        await idle.wait()


async def test_wait_idle_waits_for_app_tasks_too() -> None:
    shop = Shop()
    async with serve_app(TaskMiddleware(shop)) as served, trio.open_nursery() as nursery:
        assert (await served.client.post("/reindex")).status_code == 202
        assert served.app_manager is not None
        assert [h.name for h in served.app_manager.active_tasks] == ["reindex"]
        idle = trio.Event()
        nursery.start_soon(returns_after, idle, served.wait_idle)
        await settle()
        assert not idle.is_set()
        shop.gate.set()
        await served.wait_idle()
        assert shop.sent == ["reindexed"]
        assert served.app_manager.active_count == 0


async def test_wait_idle_waits_for_app_tasks_that_request_tasks_start() -> None:
    second_gate = trio.Event()
    done: list[str] = []

    async def last() -> None:
        await second_gate.wait()
        done.append("app task")

    async def handoff(scope: Any, gate: trio.Event) -> None:
        await gate.wait()
        app_tasks(scope).start_soon_named("last", last)

    gate = trio.Event()

    async def app(scope: Any, receive: Any, send: Any) -> None:
        request_tasks(scope).after_response.start_soon_named("handoff", handoff, scope, gate)
        await respond(send, b"ok")

    async with serve_app(TaskMiddleware(app)) as served, trio.open_nursery() as nursery:
        assert (await served.client.get("/")).status_code == 200
        idle = trio.Event()
        nursery.start_soon(returns_after, idle, served.wait_idle)
        gate.set()  # the request's task ends, having started an app task
        await settle()
        assert not idle.is_set()
        second_gate.set()
        await idle.wait()
        assert done == ["app task"]


async def test_wait_idle_returns_at_once_when_nothing_ran() -> None:
    async with serve_app(TaskMiddleware(Shop())) as served:
        with trio.fail_after(1):
            await served.wait_idle()


async def test_served_app_has_a_loopback_url_and_a_client_on_it() -> None:
    async with serve_app(TaskMiddleware(Shop())) as served:
        assert served.host == "127.0.0.1"
        assert served.url == f"http://127.0.0.1:{served.port}"
        assert served.client.base_url == httpx.URL(served.url)
        assert repr(served) == f"<ServedApp {served.url}>"
    assert served.client.is_closed


async def test_leaving_the_block_runs_the_lifespan_shutdown_and_closes_the_app_manager() -> None:
    shop = Shop()
    async with serve_app(TaskMiddleware(shop, grace_period=0)) as served:
        assert shop.lifespan == ["startup"]
        assert (await served.client.post("/reindex")).status_code == 202
        manager = served.app_manager
        assert manager is not None
        [reindex] = manager.active_tasks
    assert shop.lifespan == ["startup", "shutdown"]
    assert manager.closed
    assert reindex.state is TaskState.CANCELLED  # the grace period (0 s) ran out


async def test_an_exception_from_the_block_comes_out_unchanged_after_the_shutdown() -> None:
    shop = Shop()
    with pytest.raises(ValueError, match=r"^boom$"):
        async with serve_app(TaskMiddleware(shop)):
            raise ValueError("boom")
    assert shop.lifespan == ["startup", "shutdown"]


async def test_serve_app_refuses_a_negative_graceful_timeout() -> None:
    with pytest.raises(ValueError, match=r"^graceful_timeout must be a non-negative number"):
        async with serve_app(Shop(), graceful_timeout=-1):
            pass


# -- run_lifespan (httpx.ASGITransport) -------------------------------------------------------


async def test_without_the_lifespan_asgi_transport_finds_no_app_manager() -> None:
    transport = httpx.ASGITransport(app=TaskMiddleware(Shop()))
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        with pytest.raises(RuntimeError, match="the server did not run the ASGI lifespan"):
            await client.post("/reindex")


async def test_run_lifespan_gives_asgi_transport_an_app_manager_and_wait_idle() -> None:
    shop = Shop()
    async with run_lifespan(TaskMiddleware(shop)) as running:
        assert shop.lifespan == ["startup"]
        assert isinstance(running.state["trio_bg.app_tasks"], TaskManager)
        transport = httpx.ASGITransport(app=running.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            response = await client.post("/reindex")
            assert response.status_code == 202
            shop.gate.set()
            await running.wait_idle()
            assert shop.sent == ["reindexed"]
    assert shop.lifespan == ["startup", "shutdown"]


async def test_run_lifespan_wait_idle_covers_a_request_call_still_running() -> None:
    shop = Shop()
    async with run_lifespan(TaskMiddleware(shop)) as running, trio.open_nursery() as nursery:
        transport = httpx.ASGITransport(app=running.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            nursery.start_soon(client.post, "/orders")
            await trio.testing.wait_all_tasks_blocked()  # the response was sent, the task waits
            idle = trio.Event()
            nursery.start_soon(returns_after, idle, running.wait_idle)
            await trio.testing.wait_all_tasks_blocked()
            assert not idle.is_set()
            shop.gate.set()
            await idle.wait()
            assert shop.sent == ["order 7 confirmed"]


async def test_run_lifespan_raises_when_the_startup_fails() -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "lifespan.startup.failed", "message": "no database"})

    with pytest.raises(RuntimeError, match=r"^lifespan startup failed: 'no database'$"):
        async with run_lifespan(app):
            pytest.fail("the block ran")


async def test_run_lifespan_raises_when_the_shutdown_fails() -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "lifespan.startup.complete"})
        await receive()
        await send({"type": "lifespan.shutdown.failed", "message": "stuck"})

    with pytest.raises(RuntimeError, match=r"^lifespan shutdown failed: 'stuck'$"):
        async with run_lifespan(app):
            pass


async def test_run_lifespan_raises_for_an_app_that_returns_before_its_startup() -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        return

    with pytest.raises(
        RuntimeError, match=r"^the app returned from its lifespan call before startup completed$"
    ):
        async with run_lifespan(app):
            pytest.fail("the block ran")


async def test_run_lifespan_goes_on_without_lifespan_for_an_app_that_raises_on_it(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            raise RuntimeError("no lifespan support")
        await respond(send, b"ok")

    async with run_lifespan(app) as running:
        transport = httpx.ASGITransport(app=running.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            assert (await client.get("/")).text == "ok"
    [record] = [r for r in caplog.records if r.name == "trio_bg"]
    assert record.levelno == logging.WARNING
    assert record.getMessage() == (
        "the app raised RuntimeError('no lifespan support') in its lifespan call; "
        "running without lifespan"
    )


async def test_run_lifespan_passes_an_exception_from_the_block_through_after_shutdown() -> None:
    shop = Shop()
    with pytest.raises(KeyError, match=r"^'missing'$"):
        async with run_lifespan(TaskMiddleware(shop)):
            raise KeyError("missing")
    assert shop.lifespan == ["startup", "shutdown"]


# -- fixtures ---------------------------------------------------------------------------------


async def test_task_manager_fixture_is_an_open_manager(task_manager: TaskManager) -> None:
    assert task_manager.name == "test"
    assert not task_manager.closed
    handle = task_manager.start_soon(trio.lowlevel.checkpoint)
    await handle.wait()
    assert handle.state is TaskState.SUCCEEDED


async def test_checked_task_manager_closes_the_manager_and_cancels_what_is_left(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with checked_task_manager() as manager:
        forever = manager.start_soon(trio.sleep_forever)
    assert manager.closed
    assert trio.current_time() == 5.0  # the default grace period, then the cancel
    assert forever.state is TaskState.CANCELLED
    stats = manager.statistics()
    assert (stats.started, stats.cancelled) == (1, 1)


def test_check_accounting_fails_when_the_counters_do_not_add_up() -> None:
    good = TaskStatistics(started=3, pending=0, running=1, succeeded=1, failed=0, cancelled=1,
                          rejected=4)  # fmt: skip
    check_accounting(good)
    bad = TaskStatistics(started=3, pending=0, running=0, succeeded=1, failed=0, cancelled=1,
                         rejected=0)  # fmt: skip
    with pytest.raises(AssertionError, match=r"^started \(3\) != pending \+ running \+ succeeded"):
        check_accounting(bad)


async def test_task_recorder_sees_every_manager_request_managers_included(
    task_recorder: TaskRecorder,
) -> None:
    assert task_recorder in trio_bg._core._instruments.GLOBAL
    shop = Shop()
    shop.gate.set()
    async with serve_app(TaskMiddleware(shop)) as served:
        await served.client.post("/orders")
        await served.wait_idle()
        [confirm] = task_recorder.named("confirm")
        assert confirm.state is TaskState.SUCCEEDED
    async with trio_bg.open_task_manager() as tm:
        local = tm.start_soon_named("local", trio.lowlevel.checkpoint)
    assert task_recorder.created == [confirm, local]
    assert task_recorder.finished == [confirm, local]


# -- the plugin as a user gets it -------------------------------------------------------------

USER_TEST = """
import pytest

from trio_bg.asgi import TaskMiddleware, request_tasks
from trio_bg.testing import serve_app

emails = []


async def send_email(address):
    emails.append(address)


async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    request_tasks(scope).after_response.start_soon_named("email", send_email, "a@example.com")
    await send({"type": "http.response.start", "status": 201, "headers": []})
    await send({"type": "http.response.body", "body": b"created"})


@pytest.mark.trio
async def test_the_email_is_sent_after_the_response(task_recorder):
    async with serve_app(TaskMiddleware(app)) as served:
        response = await served.client.post("/orders")
        assert response.status_code == 201
        await served.wait_idle()
    [email] = task_recorder.named("email")
    assert email.state == "succeeded"
    assert emails == ["a@example.com"]


@pytest.mark.trio
async def test_a_manager_from_the_fixture(task_manager):
    handle = task_manager.start_soon_named("double", lambda: 21 * 2)
    assert await handle.get() == 42
"""


def installed_metadata(site: Path) -> None:
    """A ``trio_bg`` dist-info under ``site`` with the entry points pyproject.toml declares:
    what ``pip install trio-bg`` writes, without installing into the shared environment."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    info = site / f"trio_bg-{project['version']}.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(
        f"Metadata-Version: 2.1\nName: {project['name']}\nVersion: {project['version']}\n"
    )
    lines = [f"[{group}]" + "".join(f"\n{k} = {v}" for k, v in entries.items())
             for group, entries in project["entry-points"].items()]  # fmt: skip
    (info / "entry_points.txt").write_text("\n\n".join(lines) + "\n")


@pytest.mark.slow
def test_a_fresh_project_gets_the_plugin_from_the_installed_package(tmp_path: Path) -> None:
    project = tmp_path / "project"
    project.mkdir()
    (project / "test_shop.py").write_text(textwrap.dedent(USER_TEST))
    site = tmp_path / "site"
    installed_metadata(site)
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{site}"}
    env.pop("PYTEST_ADDOPTS", None)
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-W", "error"],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.splitlines()[-1].startswith("2 passed"), result.stdout
