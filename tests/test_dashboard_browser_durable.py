"""Acceptance: a durable job on another process reports progress, and the app's dashboard shows
it in Debian's headless Chromium, with the queue's periodic job (its schedule, next instant and
last run).

The app (a real Hypercorn, ``trio_bg.serve``, in a thread of this process) opens a journal queue
in its lifespan and runs no worker; ``python -m trio_bg worker tests.journal_jobs:queue`` in
another process runs the jobs and the periodic ``tick`` (every second).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests import journal_jobs as jobs
from tests.test_dashboard_browser import WAIT, ServerThread, browser, pytestmark
from tests.test_journal_workers import workers
from trio_bg.asgi import TaskMiddleware
from trio_bg.dashboard import Dashboard

__all__ = ["browser", "pytestmark"]


async def _noop() -> None:
    pass


def test_progress_of_a_job_on_another_process_and_a_schedule_show_on_the_page(
    browser: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import trio
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    def wait_for(condition: Any, message: str) -> Any:
        return WebDriverWait(
            browser, WAIT, ignored_exceptions=(StaleElementReferenceException,)
        ).until(lambda _: condition(), message)

    db = tmp_path / "jobs.db"
    release = tmp_path / "release"
    monkeypatch.setenv("TRIO_BG_TEST_PERIODIC", "1")
    queue = jobs.make_queue(f"sqlite:///{db}")
    queue.periodic(every=1, overlap="allow", name="tick")(_noop)  # as the worker registers it
    dashboard = Dashboard(local_only=True, queues=[queue])

    async def app(scope: Any, receive: Any, send: Any) -> None:
        scope["root_path"] = ""
        await dashboard(scope, receive, send)

    try:
        with (
            workers(db, tmp_path / "effects.txt", concurrency=2),
            ServerThread(TaskMiddleware(app, queues=[queue])) as url,
        ):
            # Enqueued from this thread through a queue object of its own (the app's is open in
            # the server's trio run).
            handle = trio.run(_enqueue, jobs.make_queue(f"sqlite:///{db}"), release)
            browser.get(f"{url}/")
            wait_for(lambda: browser.find_element(By.ID, "status").text == "live", "not live")
            job = f'[data-job-id="{handle}"]'
            wait_for(
                lambda: (
                    browser.find_element(By.CSS_SELECTOR, f"{job} .progress-message").text
                    == "step 5 of 5"
                ),
                "the job's progress never showed on the page",
            )
            bar = browser.find_element(By.CSS_SELECTOR, f"{job} .progress")
            assert bar.get_attribute("data-progress") == "1"  # JavaScript's String(1.0)
            assert browser.find_element(By.CSS_SELECTOR, f"{job} .percent").text == "100%"
            schedule = '[data-schedule="tick"]'
            wait_for(
                lambda: "(succeeded)" in browser.find_element(By.CSS_SELECTOR, schedule).text,
                "the periodic job never showed a finished run",
            )
            text = browser.find_element(By.CSS_SELECTOR, schedule).text
            assert text.startswith("tick · every 1 s · next "), text
            assert browser.save_screenshot(str(tmp_path / "dashboard-durable.png"))
            release.touch()
    finally:
        dashboard.close()


async def _enqueue(queue: Any, release: Path) -> str:
    async with queue:
        handle = await queue.enqueue(jobs.reports, 5, str(release))
        return str(handle.id)
