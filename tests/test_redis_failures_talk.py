"""Failures that talk, on Redis: an expected retry is one WARNING line (no traceback), and the
final failure has its traceback once."""

from __future__ import annotations

import logging
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import trio

from tests import durable_jobs as jobs
from tests.durable_helpers import counts, stop, wait_for_count
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


def _spawn_logged(server: RedisServer, log: Path) -> subprocess.Popen[bytes]:
    """A worker process with the default reclaim timeout, its log lines in ``log``."""
    env = dict(os.environ, TRIO_BG_TEST_REDIS_URL=server.url, TRIO_BG_TEST_RECLAIM="")
    with log.open("wb") as out:
        return subprocess.Popen(
            [
                sys.executable, "-m", "trio_bg", "worker", "tests.durable_jobs:queue",
                "--concurrency", "2", "--grace", "1", "--log-level", "WARNING",
            ],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
        )  # fmt: skip


@pytest.mark.slow
async def test_a_sigkilled_workers_job_runs_again_within_20_s_and_a_line_says_so(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    queue = jobs.make_queue(redis_server.url)  # defaults: reclaim_timeout 10 s
    doomed = _spawn_logged(redis_server, tmp_path / "doomed.log")
    rescuer: subprocess.Popen[bytes] | None = None
    try:
        async with queue:
            handle = await queue.enqueue(jobs.slow, "held", 4)
            await wait_for_count(queue, "started", ["held"], 1)
            # The second worker starts only now: the first one has the job.
            rescuer = _spawn_logged(redis_server, tmp_path / "rescuer.log")
            await trio.sleep(1.5)  # held a moment: the log line says how long
            assert stop(doomed, signal.SIGKILL) == -signal.SIGKILL
            killed = trio.current_time()
            await wait_for_count(queue, "started", ["held"], 2, seconds=20)
            assert trio.current_time() - killed < 20  # the acceptance: within 20 s, defaults
            with trio.fail_after(10):
                assert await handle.get() == "held"
            assert await counts(queue, "started", ["held"]) == [2]
            stats = await queue.statistics()
            assert (stats.in_flight, stats.depth, stats.workers) == (0, 0, 1)
    finally:
        for process in (doomed, rescuer):
            if process is not None and process.poll() is None:
                os.kill(process.pid, signal.SIGKILL)
            if process is not None:
                process.wait()
    lines = [
        line
        for line in (tmp_path / "rescuer.log").read_text().splitlines()
        if "reclaimed job" in line
    ]
    assert len(lines) == 1, lines
    held = re.search(
        rf"reclaimed job slow \({handle.id}\) from worker \S+-1, which held it "
        r"(\d+\.\d) s \(no heartbeat for 5 s\): queued again$",
        lines[0],
    )
    assert held is not None, lines[0]
    assert 1.5 <= float(held.group(1)) <= 15.0
