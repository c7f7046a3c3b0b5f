"""trio_bg.serve / python -m trio_bg serve: SIGTERM and SIGINT become a graceful shutdown.

These run the real CLI in a subprocess against a real Hypercorn, so they use the real clock.
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

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
GRACE = 1.0  # Hypercorn's graceful_timeout for open requests (--grace)
SHIELD_CAP = 3.0  # the middleware's shield_timeout in tests/apps/graceful_app.py


def _start(tmp_path: Path) -> tuple[subprocess.Popen[str], str, Path]:
    log_path = tmp_path / "server.log"
    env = {**os.environ, "TRIO_BG_TEST_DIR": str(tmp_path), "PYTHONUNBUFFERED": "1"}
    with log_path.open("w") as log:  # the child keeps its own copy of the descriptor
        proc = subprocess.Popen(
            [sys.executable, "-m", "trio_bg", "serve", "tests.apps.graceful_app:app",
             "--bind", "127.0.0.1:0", "--grace", str(GRACE)],
            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, text=True,
        )  # fmt: skip
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        found = re.search(r"Running on (http://127\.0\.0\.1:\d+)", log_path.read_text())
        if found:
            return proc, found.group(1), log_path
        if proc.poll() is not None:
            break
        time.sleep(0.05)
    proc.kill()
    pytest.fail(f"server did not start:\n{log_path.read_text()}")


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_signal_shuts_down_gracefully(tmp_path: Path, signum: signal.Signals) -> None:
    proc, base_url, log_path = _start(tmp_path)
    try:
        response = httpx.get(f"{base_url}/work", timeout=5)
        assert response.status_code == 200
        assert response.text == "started"
        assert (tmp_path / "started").exists()
        began = time.monotonic()
        proc.send_signal(signum)
        returncode = proc.wait(timeout=GRACE + SHIELD_CAP + 10)
        elapsed = time.monotonic() - began
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    log = log_path.read_text()
    assert returncode == 0, log
    assert elapsed <= GRACE + SHIELD_CAP + 1, (elapsed, log)
    # Shielded tasks finished their work; unshielded ones were cancelled and reported.
    assert (tmp_path / "request-shielded").read_text() == "done"
    assert (tmp_path / "app-shielded").read_text() == "done"
    assert not (tmp_path / "request-unshielded").exists()
    assert not (tmp_path / "app-unshielded").exists()
    assert f"{signum.name} received: shutting down gracefully" in log
    reports = [line for line in log.splitlines() if "cancelled by the shutdown" in line]
    assert any("'request-unshielded'" in line for line in reports), log
    assert any("'app-unshielded'" in line for line in reports), log
    assert not any("'request-shielded'" in line for line in reports), log
    assert not any("'app-shielded'" in line for line in reports), log
