"""Helpers shared by the test modules: task functions, log and statistics checks, ASGI guards.

Plain functions are imported by name (``from tests.conftest import sleep_then_return``); the
fixtures are found by pytest. The real-Hypercorn harness is ``tests/asgi_server.py``.
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Iterator
from importlib.metadata import entry_points
from typing import TYPE_CHECKING, Any, TypeVar

import pytest
import trio
import trio.testing

if TYPE_CHECKING:
    from trio_bg.dashboard import Dashboard

T = TypeVar("T")

# trio_bg.testing's fixtures: an installed trio-bg registers the plugin (entry point pytest11);
# registering it again here would fail, so only a checkout installed without it does.
if not entry_points(group="pytest11", name="trio_bg"):
    pytest_plugins = ["trio_bg.testing"]

# The demo's journal file, for the tests that import the demo: not in the checkout.
os.environ.setdefault(
    "TRIO_BG_DEMO_JOURNAL", os.path.join(tempfile.mkdtemp(prefix="trio_bg_demo-"), "demo.db")
)


# -- task functions ---------------------------------------------------------------------------


async def sleep_then_return(seconds: float, value: T) -> T:
    """Sleep ``seconds``, then return ``value`` (the very object)."""
    await trio.sleep(seconds)
    return value


async def sleep_then_raise(seconds: float, exc: BaseException) -> None:
    """Sleep ``seconds``, then raise ``exc`` (the very object)."""
    await trio.sleep(seconds)
    raise exc


class Recorder:
    """A task function that notes each call: ``job(tag)`` appends ``tag`` to ``calls``, sleeps
    ``seconds`` (1 by default), and returns ``tag``.

    ``calls`` tells which tasks ran, and in what order their functions were entered.
    """

    def __init__(self) -> None:
        self.calls: list[Any] = []

    async def job(self, tag: T, seconds: float = 1) -> T:
        self.calls.append(tag)
        await trio.sleep(seconds)
        return tag


@pytest.fixture
def recorder() -> Recorder:
    """A fresh :class:`Recorder` for the test."""
    return Recorder()


# -- checks -----------------------------------------------------------------------------------


def trio_bg_records(caplog: pytest.LogCaptureFixture, level: int) -> list[logging.LogRecord]:
    """The records of the ``trio_bg`` logger at exactly ``level``, oldest first."""
    return [r for r in caplog.records if r.name == "trio_bg" and r.levelno == level]


async def settle() -> None:
    """Let every task that can run, run; bounded by 2 s for tests with a real server around."""
    with trio.fail_after(2):
        await trio.testing.wait_all_tasks_blocked()


# -- ASGI -------------------------------------------------------------------------------------


def http_only(scope: Any) -> None:
    """Refuse every scope but http, as an app without lifespan support does.

    The middleware must still open its app manager for such an app.
    """
    if scope["type"] != "http":
        raise RuntimeError("no lifespan support")


@pytest.fixture
def dashboards() -> Iterator[list[Dashboard]]:
    """Dashboards made by the test, closed after it (their recorder instrument is removed)."""
    made: list[Dashboard] = []
    yield made
    for dashboard in made:
        dashboard.close()
