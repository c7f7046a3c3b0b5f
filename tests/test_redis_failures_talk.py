"""Failures that talk, on Redis: an expected retry is one WARNING line (no traceback), and the
final failure has its traceback once."""

from __future__ import annotations

import logging

import pytest
import trio

from tests import durable_jobs as jobs
from tests.redis_server import RedisServer, redis_server
from trio_bg.durable import JobFailed

__all__ = ["redis_server"]


async def test_each_expected_retry_is_one_warning_line(
    redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("TRIO_BG_TEST_REDIS_URL", redis_server.url)  # the job counts its runs
    caplog.set_level(logging.INFO)
    queue = jobs.make_queue(redis_server.url, poll_interval=0.05)
    async with queue.open_worker(concurrency=1, grace=1):
        handle = await queue.enqueue(jobs.flaky, "twice", 2)
        with trio.fail_after(15):
            assert await handle.get() == 3
        doomed = await queue.enqueue(jobs.flaky, "always", 99)
        with trio.fail_after(15), pytest.raises(JobFailed):
            await doomed.get()
    retries = [
        r for r in caplog.records if "attempt " in r.getMessage() and "failed" in r.getMessage()
    ]
    assert [(r.levelno, r.getMessage()) for r in retries] == [
        (
            logging.WARNING,
            f"job flaky ({handle.id}) attempt 1/3 failed: RuntimeError: run 1 of twice fails; "
            "retry in 0.2 s",
        ),
        (
            logging.WARNING,
            f"job flaky ({handle.id}) attempt 2/3 failed: RuntimeError: run 2 of twice fails; "
            "retry in 0.4 s",
        ),
        (
            logging.WARNING,
            f"job flaky ({doomed.id}) attempt 1/3 failed: RuntimeError: run 1 of always fails; "
            "retry in 0.2 s",
        ),
        (
            logging.WARNING,
            f"job flaky ({doomed.id}) attempt 2/3 failed: RuntimeError: run 2 of always fails; "
            "retry in 0.4 s",
        ),
    ]
    assert all(r.exc_info is None for r in retries)
    streaq = [r for r in caplog.records if r.name.startswith("streaq")]
    assert not [r for r in streaq if r.getMessage().startswith("Retrying task ")]
    tracebacks = [r for r in caplog.records if r.exc_info is not None]
    assert len(tracebacks) == 1  # the final failure of `doomed`, once
    assert doomed.id in tracebacks[0].getMessage()
