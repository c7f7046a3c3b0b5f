"""trio_bg.serve / python -m trio_bg serve: SIGTERM and SIGINT become a graceful shutdown.

These run the real CLI in a subprocess against a real Hypercorn, so they use the real clock.
"""

from __future__ import annotations

import signal
import time
from pathlib import Path

import httpx
import pytest

from tests.serve_process import start_server

pytestmark = pytest.mark.slow

GRACE = 1.0  # Hypercorn's graceful_timeout for open requests (--grace)
SHIELD_CAP = 3.0  # the middleware's shield_timeout in tests/apps/graceful_app.py


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_signal_shuts_down_gracefully(tmp_path: Path, signum: signal.Signals) -> None:
    proc, base_url, log_path = start_server(
        "tests.apps.graceful_app:app", tmp_path, "--grace", str(GRACE),
        env={"TRIO_BG_TEST_DIR": str(tmp_path)},
    )  # fmt: skip
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
