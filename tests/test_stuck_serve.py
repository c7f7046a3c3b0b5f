"""python -m trio_bg serve with a task that never ends: SIGTERM, SIGTERM, SIGINT ends the process.

The app's tasks shield themselves and sleep forever (``tests/apps/stuck_app.py``): trio cannot
end them, so only the third signal's ``os._exit`` does. These run the real CLI in a subprocess,
on the real clock; each waits for the log line a signal leads to before it sends the next (trio
reads two pending signals of one kind as one).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.apps import stuck_app

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
STUBBORN = f"stubborn ({stuck_app.__file__}:{stuck_app.stubborn.__code__.co_firstlineno + 2})"


class Server:
    """``python -m trio_bg serve tests.apps.stuck_app:app`` with its stderr in a file."""

    def __init__(self, tmp_path: Path) -> None:
        self.stderr_path = tmp_path / "stderr.log"
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        with self.stderr_path.open("w") as stderr:  # the child keeps its own descriptor
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "trio_bg", "serve", "tests.apps.stuck_app:app",
                 "--bind", "127.0.0.1:0", "--grace", "0.5"],
                cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=stderr,
            )  # fmt: skip
        self.url = self.wait_for(r"Running on (http://127\.0\.0\.1:\d+)").group(1)

    @property
    def stderr(self) -> str:
        return self.stderr_path.read_text()

    def wait_for(self, pattern: str, timeout: float = 15) -> re.Match[str]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = re.search(pattern, self.stderr)
            if found:
                return found
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        pytest.fail(f"no {pattern!r} in the server's stderr:\n{self.stderr}")

    def signal_then_wait_for(self, signum: signal.Signals, pattern: str) -> None:
        self.proc.send_signal(signum)
        self.wait_for(pattern)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def test_a_stuck_app_task_is_logged_by_the_close_and_the_third_signal_ends_the_process(
    tmp_path: Path,
) -> None:
    server = Server(tmp_path)
    try:
        assert httpx.get(f"{server.url}/app", timeout=5).text == "started"
        # The lifespan shutdown closes the app manager: grace 0.2 s, then the task is cancelled,
        # and 1 s later the close names it as stuck.
        server.signal_then_wait_for(signal.SIGTERM, r"task\(s\) stuck")
        server.signal_then_wait_for(signal.SIGTERM, "still waits for")
        began = time.monotonic()
        server.proc.send_signal(signal.SIGINT)
        returncode = server.proc.wait(timeout=5)
        elapsed = time.monotonic() - began
    finally:
        server.stop()
    stderr = server.stderr
    assert returncode == 128 + signal.SIGINT, stderr  # 130
    assert elapsed < 2, (elapsed, stderr)
    stuck = [line for line in stderr.splitlines() if "task(s) stuck" in line]
    assert len(stuck) == 1, stderr
    assert re.search(
        r"WARNING trio_bg: task manager 'app' closing: 1 task\(s\) stuck, still running after "
        r"they were cancelled \(.*\): 'stubborn-app' \(task-1\) cancelled 1\.\d s ago, waiting in "
        + re.escape(STUBBORN) + r" -> sleep_forever \(",
        stuck[0],
    ), stuck[0]  # fmt: skip
    assert "SIGTERM received: shutting down gracefully" in stderr
    assert "SIGTERM received again: stopping now (a third time to exit the process)" in stderr
    (last,) = [line for line in stderr.splitlines() if "received a third time" in line]
    assert re.search(
        r"ERROR trio_bg: SIGINT received a third time: exiting with code 130, \d+\.\d s after the "
        r"server was told to stop, still waiting for 1 task\(s\): 'stubborn-app' \(task-1, "
        r"manager 'app'\) waiting in " + re.escape(STUBBORN),
        last,
    ), last  # fmt: skip


def test_a_stuck_request_task_is_named_after_the_second_signal_and_the_third_ends_it(
    tmp_path: Path,
) -> None:
    server = Server(tmp_path)
    try:
        assert httpx.get(f"{server.url}/request", timeout=5).text == "started"
        server.signal_then_wait_for(signal.SIGTERM, "shutting down gracefully")
        sent = time.monotonic()
        server.signal_then_wait_for(signal.SIGTERM, "still waits for")
        waited = time.monotonic() - sent
        server.proc.send_signal(signal.SIGTERM)
        returncode = server.proc.wait(timeout=5)
    finally:
        server.stop()
    stderr = server.stderr
    assert returncode == 128 + signal.SIGTERM, stderr  # 143
    assert 1 <= waited < 3, (waited, stderr)  # named 1 s after the second signal
    (named,) = [line for line in stderr.splitlines() if "still waits for" in line]
    assert re.search(
        r"WARNING trio_bg: the server was told to stop 1\.\d s ago and still waits for 1 "
        r"task\(s\): 'stubborn-request' \(task-1, manager 'GET'\) waiting in "
        + re.escape(STUBBORN) + r" -> sleep_forever \(.*\); SIGINT or SIGTERM again ends the "
        r"process at once$",
        named,
    ), named  # fmt: skip
    assert re.search(
        r"ERROR trio_bg: SIGTERM received a third time: exiting with code 143, .*"
        r"'stubborn-request' \(task-1, manager 'GET'\)",
        stderr,
    ), stderr
