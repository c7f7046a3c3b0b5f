"""Failures that talk, on Redis: an expected retry is one WARNING line (no traceback), and the
final failure has its traceback once."""

from __future__ import annotations

import logging
import os
import signal
import socket
import time
from pathlib import Path

import pytest
import trio

from tests import durable_jobs as jobs
from tests.durable_helpers import spawn_worker, stop, wait_for_count, workers
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


@pytest.mark.slow
async def test_a_sigkilled_workers_job_runs_again_within_20_s_with_defaults_and_a_line_says_so(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    queue = jobs.make_queue(redis_server.url)
    log = tmp_path / "second.log"
    with workers(redis_server, count=1, concurrency=1, reclaim=None) as (first,):
        async with queue:
            handle = await queue.enqueue(jobs.slow, "held", 60)
            await wait_for_count(queue, "started", ["held"], 1)
            first_id = f"{socket.gethostname()}-{first.pid}-1"  # the runner's worker id
            os.kill(first.pid, signal.SIGKILL)  # mid-job
            killed = time.monotonic()
            with log.open("w") as stderr:
                second = spawn_worker(redis_server, concurrency=1, reclaim=None, stderr=stderr)
            try:
                await wait_for_count(queue, "started", ["held"], 2, seconds=25)
                again = time.monotonic() - killed
                assert again <= 20, f"ran again after {again:.1f} s"
                handle.cancel()
            finally:
                stop(second)
    text = log.read_text()
    assert f"job {handle.id} (stream entry " in text, text
    assert f"was held by worker {first_id}, which sent no heartbeat for " in text, text
    assert "(delivery 1): it is reclaimed and runs again" in text, text
