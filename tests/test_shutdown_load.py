"""Shutdown under load: ``python -m trio_bg serve`` stopped by a signal while clients hammer it.

A real subprocess serves ``tests/apps/load_app.py`` on 127.0.0.1; a load generator (httpx under
trio, ``CLIENTS`` concurrent clients) sends ``GET /work`` as fast as it can; mid-load the test
sends SIGTERM, SIGINT, or SIGTERM twice. Each request starts shielded, unshielded and deferred
tasks that write ``begin``/``end`` lines to a file, so the test sees what ran and what finished.

Asserted for a single signal: exit code 0; every shielded task that began finished its work
(each fits the cap); every unshielded task that began was cancelled and named in a shutdown
report; the process exited within grace + cap + a bound. The figures of each case are printed
(``pytest -s``) and recorded in docs/reliability.md. Real time, bounded everywhere: each case
takes a few seconds.
"""

from __future__ import annotations

import re
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import trio

from tests.apps.load_app import SHIELD_TIMEOUT
from tests.serve_process import start_server

pytestmark = pytest.mark.slow

GRACE = 1.0  # --grace: Hypercorn's graceful_timeout for open requests
CLIENTS = 16
LOAD_BEFORE_SIGNAL = 1.5  # seconds of load before the signal
BOUND = 2.0  # seconds allowed beyond grace + cap for the app manager's close and the exit


@dataclass
class Figures:
    answered: int
    answered_after_signal: int
    client_errors: int
    began: int
    shielded_began: int
    shielded_finished: int
    unshielded_began: int
    unshielded_named: int
    exit_code: int | None
    signal_to_exit: float

    def __str__(self) -> str:
        return (
            f"answered {self.answered} ({self.answered_after_signal} after the signal), "
            f"client errors {self.client_errors}, tasks begun {self.began}, "
            f"shielded {self.shielded_finished}/{self.shielded_began} finished, "
            f"unshielded {self.unshielded_named}/{self.unshielded_began} named, "
            f"exit code {self.exit_code}, signal to exit {self.signal_to_exit:.2f} s "
            f"(grace + cap = {GRACE + SHIELD_TIMEOUT:.1f} s)"
        )


async def _load(
    base_url: str, proc: subprocess.Popen[str], signals: list[signal.Signals]
) -> tuple[int, int, int, float]:
    """Run the clients; send ``signals`` (0.3 s apart) after LOAD_BEFORE_SIGNAL s of load.

    Returns (answered, answered after the first signal, client errors, the first signal's
    ``time.monotonic()``). Each client stops at its first error (the server has stopped
    accepting) or when the process has exited; the whole load is capped at 20 s.
    """
    answered = after = errors = 0
    signalled_at = 0.0
    stop = trio.Event()

    async def client(http: httpx.AsyncClient) -> None:
        nonlocal answered, after, errors
        while not stop.is_set():
            try:
                response = await http.get("/work")
            except httpx.HTTPError:
                errors += 1
                return
            assert response.status_code == 200, response.text
            answered += 1
            if signalled_at:
                after += 1

    limits = httpx.Limits(max_connections=CLIENTS)
    async with httpx.AsyncClient(base_url=base_url, timeout=5, limits=limits) as http:
        with trio.fail_after(20):
            async with trio.open_nursery() as nursery:
                for _ in range(CLIENTS):
                    nursery.start_soon(client, http)
                await trio.sleep(LOAD_BEFORE_SIGNAL)
                signalled_at = time.monotonic()
                for i, signum in enumerate(signals):
                    if i:
                        await trio.sleep(0.3)
                    proc.send_signal(signum)
                await trio.to_thread.run_sync(proc.wait, abandon_on_cancel=True)
                stop.set()
    return answered, after, errors, signalled_at


def _run_case(tmp_path: Path, signals: list[signal.Signals]) -> tuple[Figures, str, list[str]]:
    task_log = tmp_path / "tasks.log"
    proc, base_url, server_log = start_server(
        "tests.apps.load_app:app", tmp_path, "--grace", str(GRACE),
        env={"TRIO_BG_TEST_LOG": str(task_log)},
    )  # fmt: skip
    try:
        answered, after, errors, signalled_at = trio.run(_load, base_url, proc, signals)
        exit_code = proc.wait(timeout=GRACE + SHIELD_TIMEOUT + 10)
        elapsed = time.monotonic() - signalled_at
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    log = server_log.read_text()
    lines = task_log.read_text().splitlines() if task_log.exists() else []
    began = {line.split()[1] for line in lines if line.startswith("begin ")}
    ended = {line.split()[1] for line in lines if line.startswith("end ")}
    reports = "\n".join(line for line in log.splitlines() if "cancelled by the shutdown" in line)
    named = set(re.findall(r"'([\w-]+)' \(task-\d+\)", reports))
    shielded = {name for name in began if "shielded" in name}
    unshielded = began - shielded
    figures = Figures(
        answered=answered,
        answered_after_signal=after,
        client_errors=errors,
        began=len(began),
        shielded_began=len(shielded),
        shielded_finished=len(shielded & ended),
        unshielded_began=len(unshielded),
        unshielded_named=len(unshielded & named),
        exit_code=exit_code,
        signal_to_exit=elapsed,
    )
    print(f"\n{'+'.join(s.name for s in signals)}: {figures}")
    return figures, log, sorted(shielded - ended)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_mid_load_shuts_down_gracefully(tmp_path: Path, signum: signal.Signals) -> None:
    figures, log, unfinished = _run_case(tmp_path, [signum])
    assert figures.exit_code == 0, log[-3000:]
    assert figures.answered >= CLIENTS, figures  # there was load
    assert figures.shielded_began > 0 and figures.unshielded_began > 0, figures
    # Every shielded task that began finished its work: each fits the cap.
    assert unfinished == [], (figures, log[-3000:])
    # Every unshielded task that began was cancelled by the shutdown and named in a report.
    assert figures.unshielded_named == figures.unshielded_began, (figures, log[-3000:])
    assert figures.signal_to_exit <= GRACE + SHIELD_TIMEOUT + BOUND, figures
    assert f"{signum.name} received: shutting down gracefully" in log


def test_a_second_signal_mid_load_stops_the_server_and_still_exits(tmp_path: Path) -> None:
    # The forced stop drops the running 60 s unshielded tasks: exit status 75 (EX_TEMPFAIL).
    figures, log, _ = _run_case(tmp_path, [signal.SIGTERM, signal.SIGTERM])
    assert figures.answered >= CLIENTS, figures
    assert "SIGTERM received again: stopping now" in log, log[-3000:]
    assert figures.exit_code == 75, log[-3000:]
    assert figures.signal_to_exit <= GRACE + SHIELD_TIMEOUT + BOUND, figures
