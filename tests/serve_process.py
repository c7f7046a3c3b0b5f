"""``python -m trio_bg serve`` in a subprocess on a free loopback port, for the tests that need a
real process (signals, exit codes, RSS)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def start_server(
    app: str, tmp_path: Path, *options: str, env: dict[str, str] | None = None
) -> tuple[subprocess.Popen[str], str, Path]:
    """``python -m trio_bg serve app --bind 127.0.0.1:0 *options`` in a subprocess; returns it,
    its base URL (read from Hypercorn's "Running on" line) and the file its output goes to.

    Fails the test, after killing the process, if the server has not started within 20 s.
    """
    server_log = tmp_path / "server.log"
    child_env = {**os.environ, **(env or {}), "PYTHONUNBUFFERED": "1"}
    with server_log.open("w") as out:  # the child keeps its own copy of the descriptor
        proc = subprocess.Popen(
            [sys.executable, "-m", "trio_bg", "serve", app, "--bind", "127.0.0.1:0", *options],
            cwd=ROOT, env=child_env, stdout=out, stderr=subprocess.STDOUT, text=True,
        )  # fmt: skip
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        found = re.search(r"Running on (http://127\.0\.0\.1:\d+)", server_log.read_text())
        if found:
            return proc, found.group(1), server_log
        if proc.poll() is not None:
            break
        time.sleep(0.05)
    proc.kill()
    proc.wait()
    pytest.fail(f"server did not start:\n{server_log.read_text()}")
