"""The exit status of ``python -m trio_bg serve``, as process managers read it: 0 for a stop that
ran its policy (one signal, even if the app's grace period cancelled tasks), 75 (EX_TEMPFAIL)
when a forced stop (a second signal) dropped running unshielded tasks. A real serve subprocess,
the real clock; each signal waits for the log line of the one before (trio reads two pending
signals of one kind as one)."""

from __future__ import annotations

import re
import signal
import socket
import time
from collections.abc import Generator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from tests.serve_process import start_server
from trio_bg._serve import EXIT_DROPPED

pytestmark = pytest.mark.slow

GRACEFUL = r"SIGTERM received: shutting down gracefully"


def wait_for(log: Path, pattern: str, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if re.search(pattern, log.read_text()):
            return
        time.sleep(0.05)
    pytest.fail(f"no {pattern!r} in the server's log:\n{log.read_text()}")


@contextmanager
def open_request(url: str, path: str) -> Generator[None]:
    """A request the server has not answered, on a raw socket, for the block."""
    host, _, port = url.removeprefix("http://").rpartition(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n".encode())
        yield


def test_a_forced_stop_that_drops_a_running_task_exits_75(tmp_path: Path) -> None:
    assert EXIT_DROPPED == 75
    proc, url, log = start_server("tests.apps.dashboard_app:app", tmp_path, "--grace", "5")
    try:
        forever = httpx.get(f"{url}/forever").text
        shielded = httpx.get(f"{url}/forever?shield=1").text
        with open_request(url, "/slow"):  # keeps the server in its graceful phase
            time.sleep(0.2)
            proc.send_signal(signal.SIGTERM)
            wait_for(log, GRACEFUL)
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(15) == EXIT_DROPPED
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    text = log.read_text()
    # Only the unshielded task counts: the shielded one got its shield_timeout, as always.
    assert (
        f"exiting with status 75: the forced stop dropped 1 running task(s): 'forever' ({forever})"
        in text
    )
    assert shielded not in text.rpartition("exiting with status")[2]


def test_a_graceful_stop_exits_0_even_when_the_grace_period_cancels(tmp_path: Path) -> None:
    proc, url, log = start_server("tests.apps.dashboard_app:app", tmp_path, "--grace", "5")
    try:
        forever = httpx.get(f"{url}/forever").text
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    text = log.read_text()
    assert f"1 task(s) cancelled by the shutdown: 'forever' ({forever})" in text
    assert "exiting with status" not in text


def test_a_forced_stop_with_nothing_running_exits_0(tmp_path: Path) -> None:
    proc, url, log = start_server("tests.apps.dashboard_app:app", tmp_path, "--grace", "5")
    try:
        with open_request(url, "/slow"):
            time.sleep(0.2)
            proc.send_signal(signal.SIGTERM)
            wait_for(log, GRACEFUL)
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(15) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert "received again: stopping now" in log.read_text()
