"""python -m trio_bg serve: one clear line for an app it cannot load or an address it cannot
bind, and each Hypercorn log line once. These run the real CLI in subprocesses."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
ENV = {**os.environ, "PYTHONUNBUFFERED": "1"}


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "trio_bg", *args],
        cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("app", "line"),
    [
        ("nosuch:app", "error: cannot import module 'nosuch': No module named 'nosuch'"),
        (
            "tests.apps.nosuch:app",
            "error: cannot import module 'tests.apps.nosuch': No module named 'tests.apps.nosuch'",
        ),
        (
            "tests.apps.graceful_app:nope",
            "error: module 'tests.apps.graceful_app' has no attribute 'nope'",
        ),
        (
            "tests.apps.graceful_app:app._app.nope",
            "error: 'tests.apps.graceful_app:app._app' has no attribute 'nope'",
        ),
        (
            "tests.apps.graceful_app:OUT",
            "error: tests.apps.graceful_app:OUT is not an ASGI app (not callable)",
        ),
        ("nocolon", "error: the app must be given as module:attribute, got 'nocolon'"),
    ],
)
def test_an_app_that_cannot_be_loaded_is_one_line_and_exit_code_2(app: str, line: str) -> None:
    result = _cli("serve", app, "--bind", "127.0.0.1:0")
    assert (result.returncode, result.stderr, result.stdout) == (2, line + "\n", "")


def test_a_port_in_use_is_one_line_and_hypercorns_lines_appear_once(tmp_path: Path) -> None:
    log_path = tmp_path / "stderr.log"
    with log_path.open("w") as log:
        first = subprocess.Popen(
            [sys.executable, "-m", "trio_bg", "serve", "tests.apps.graceful_app:app",
             "--bind", "127.0.0.1:0"],
            cwd=ROOT, env=ENV, stdout=subprocess.DEVNULL, stderr=log, text=True,
        )  # fmt: skip
    try:
        deadline = time.monotonic() + 20
        while not (
            found := re.search(r"Running on http://(127\.0\.0\.1:\d+)", log_path.read_text())
        ):
            assert first.poll() is None and time.monotonic() < deadline, log_path.read_text()
            time.sleep(0.05)
        bind = found.group(1)
        # Two addresses: the line names the one that cannot be bound.
        second = _cli(
            "serve", "tests.apps.graceful_app:app", "--bind", "127.0.0.1:0", "--bind", bind
        )
        first.send_signal(signal.SIGTERM)
        assert first.wait(timeout=10) == 0
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()
    assert (second.returncode, second.stderr) == (
        1, f"error: cannot bind {bind}: address already in use\n"
    )  # fmt: skip
    log = log_path.read_text()
    assert log.count("Running on") == 1, log
    assert re.search(
        r"^\S+ \S+ INFO hypercorn\.error: Running on http://127\.0\.0\.1:\d+ "
        r"\(CTRL \+ C to quit\)$",
        log,
        re.MULTILINE,
    ), log
