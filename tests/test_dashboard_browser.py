"""Acceptance: the dashboard in Debian's headless Chromium, driven through selenium.

The demo's routes are served by a real Hypercorn (``trio_bg.serve``) in a thread of this process,
with a dashboard of the test's own mounted local-only at ``/dashboard/`` and one more route that
starts a task with a hostile name. The page is opened once; requests are made from Python; rows
must appear, finish and be cancelled without a reload. The screenshot goes to a temporary file,
or to ``docs/img/dashboard.png`` with ``TRIO_BG_UPDATE_SCREENSHOT=1``.
"""

from __future__ import annotations

import functools
import os
import queue
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

import trio_bg
from trio_bg.asgi import TaskMiddleware, app_tasks
from trio_bg.asgi._types import Receive, Scope, Send
from trio_bg.dashboard import Dashboard
from trio_bg.durable import DurableQueue

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
DOCS_SCREENSHOT = Path(__file__).parent.parent / "docs" / "img" / "dashboard.png"
XSS = "<img src=x onerror=alert(1)>"
WAIT = 15  # seconds: the bound of every wait for the page

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not (os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER)),
        reason=f"needs Debian's chromium ({CHROMIUM}) and chromium-driver ({CHROMEDRIVER})",
    ),
]


def app_for_browser(dashboard: Dashboard) -> TaskMiddleware:
    """The demo's routes, the test's dashboard at /dashboard/, and /hostile."""
    from trio_bg import _demo

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] == "http" and path.startswith("/dashboard"):
            scope["root_path"] = "/dashboard"
            await dashboard(scope, receive, send)
        elif scope["type"] == "http" and path == "/hostile":
            handle = app_tasks(scope).start_soon_named(XSS, trio.sleep, 30)
            body = handle.id.encode()
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": body})
        else:
            await _demo.router(scope, receive, send)

    return TaskMiddleware(app, grace_period=0.5, shield_timeout=1.0)


class ServerThread:
    """``trio_bg.serve(app)`` on a free loopback port, in a thread with its own trio run."""

    def __init__(self, app: Any) -> None:
        self._app = app
        self._ready: queue.Queue[tuple[str, trio.lowlevel.TrioToken, trio.Event]] = queue.Queue()
        self._thread = threading.Thread(target=trio.run, args=(self._main,), daemon=True)
        self._stopped = False

    async def _main(self) -> None:
        stop = trio.Event()
        async with trio.open_nursery() as nursery:
            binds: list[str] = await nursery.start(
                functools.partial(
                    trio_bg.serve,
                    self._app,
                    "127.0.0.1:0",
                    handle_signals=False,
                    gc_freeze=False,
                    gc_threshold=None,
                    graceful_timeout=0.5,
                    shutdown_trigger=stop.wait,
                )
            )
            self._ready.put((binds[0], trio.lowlevel.current_trio_token(), stop))

    def __enter__(self) -> str:
        self._thread.start()
        url, self._token, self._stop = self._ready.get(timeout=WAIT)
        return url

    def stop(self) -> None:
        """Tell the server to stop (its shutdown trigger returns); :meth:`__exit__` waits."""
        if not self._stopped:
            self._stopped = True
            trio.from_thread.run_sync(self._stop.set, trio_token=self._token)

    def join(self) -> None:
        """Stop the server and wait for its thread to end."""
        self.stop()
        self._thread.join(timeout=WAIT)
        assert not self._thread.is_alive()

    def __exit__(self, *exc_info: object) -> None:
        self.join()


@pytest.fixture
def browser() -> Iterator[Any]:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    with tempfile.TemporaryDirectory() as profile:
        for argument in (
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            "--window-size=1400,1000",
            f"--user-data-dir={profile}",
        ):
            options.add_argument(argument)
        driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
        try:
            yield driver
        finally:
            driver.quit()


def test_the_dashboard_lives_in_a_browser(browser: Any, tmp_path: Path) -> None:
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    def row_state(task_id: str) -> str | None:
        """The state shown in the row of ``task_id`` (active rows first), or None."""
        rows = browser.find_elements(By.CSS_SELECTOR, f'tr[data-task-id="{task_id}"]')
        states = [r.get_attribute("data-state") for r in rows]
        return states[0] if states else None

    def wait_for(condition: Any, message: str) -> Any:
        return WebDriverWait(
            browser, WAIT, ignored_exceptions=(StaleElementReferenceException,)
        ).until(lambda _: condition(), message)

    # A queue that is never opened: shown "closed", without a Redis.
    dashboard = Dashboard(
        local_only=True, queues=[DurableQueue("redis://127.0.0.1:1", name="mail")]
    )
    try:
        server = ServerThread(app_for_browser(dashboard))
        with server as url, httpx.Client(base_url=url) as client:
            browser.get(f"{url}/dashboard/")
            browser.execute_script(
                "window.__alerts = []; window.alert = (m) => window.__alerts.push(m);"
                "window.__sameDocument = true;"
            )
            wait_for(lambda: browser.find_element(By.ID, "status").text == "live", "not live")
            queue_row = browser.find_element(By.CSS_SELECTOR, 'tr[data-queue="mail"]')
            assert queue_row.get_attribute("data-status") == "closed"

            # Requests made from Python: their tasks appear, run and finish on the open page.
            order = client.post("/orders").json()["order_id"]
            report = client.post("/reports").json()["task"]
            photo = client.post("/photos").json()["task"]
            flaky = client.post("/fail").json()["task"]
            assert order >= 1
            wait_for(lambda: row_state(report) == "running", "the report never showed running")
            wait_for(lambda: row_state(photo) == "running", "the photo task never showed")
            email_rows = 'tr[data-state="running"] .task-name'
            wait_for(
                lambda: (
                    "confirmation-email"
                    in [e.text for e in browser.find_elements(By.CSS_SELECTOR, email_rows)]
                ),
                "the order's e-mail task never showed running under its request",
            )
            wait_for(lambda: row_state(flaky) == "failed", "the flaky task never failed")
            where = browser.find_element(By.CSS_SELECTOR, f'tr[data-task-id="{report}"] .where')
            assert "build_report" in where.text
            shot = (
                DOCS_SCREENSHOT
                if os.environ.get("TRIO_BG_UPDATE_SCREENSHOT") == "1"
                else tmp_path / "dashboard.png"
            )
            assert browser.save_screenshot(str(shot))
            assert shot.stat().st_size > 10_000
            wait_for(lambda: row_state(photo) == "succeeded", "the photo task never finished")

            # A hostile name is shown as text; nothing of it runs.
            hostile = client.get("/hostile").text
            wait_for(lambda: row_state(hostile) == "running", "the hostile task never showed")
            name = browser.find_element(By.CSS_SELECTOR, f'tr[data-task-id="{hostile}"] .task-name')
            assert name.text == XSS
            assert browser.find_elements(By.CSS_SELECTOR, "main img") == []

            # Cancel it from the page (it would sleep 30 s).
            def click_cancel() -> bool:
                browser.find_element(By.CSS_SELECTOR, f'button[data-cancel="{hostile}"]').click()
                return True

            wait_for(click_cancel, "no cancel button for the hostile task")
            wait_for(lambda: row_state(hostile) == "cancelled", "the task never showed cancelled")
            handle = trio_bg.find_task(hostile)
            assert handle is not None and handle.state == trio_bg.TaskState.CANCELLED
            wait_for(
                lambda: browser.find_element(By.ID, "message").text == f"cancelled {hostile}",
                "the page never said the task was cancelled",
            )

            # The server is told to stop: the page shows the shutdown, not "reconnecting".
            lingering = client.get("/hostile").text
            wait_for(lambda: row_state(lingering) == "running", "the last task never showed")
            server.stop()
            status = browser.find_element(By.ID, "status")
            wait_for(lambda: status.text == "server stopping (shutdown trigger)", "no stopping")
            assert browser.find_element(By.ID, "shutdown").is_displayed()
            notice = browser.find_element(By.ID, "shutdown-notice").text
            assert notice.startswith("The server was told to stop (shutdown trigger) at "), notice
            assert "; requests still open are cancelled in " in notice, notice
            assert notice.endswith(" at the latest. This page no longer updates."), notice
            card = browser.find_element(By.CSS_SELECTOR, '[data-shutdown-manager="app"]')
            assert f"{XSS} ({lingering}) is cancelled in " in card.text, card.text
            assert "unless it ends first" in card.text
            shot = tmp_path / "dashboard-shutdown.png"
            assert browser.save_screenshot(str(shot))
            server.join()  # the server has stopped: the page stays as it was
            assert status.text == "server stopping (shutdown trigger)"

            assert browser.execute_script("return window.__sameDocument") is True  # no reload
            assert browser.execute_script("return window.__alerts") == []
    finally:
        dashboard.close()
