"""The journal and the demo need no durable extra: with streaq and coredis not importable, a
journal queue runs a job end to end and the demo app builds (in a subprocess, where the two
packages are blocked before anything imports them)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

SCRIPT = """
import sys
sys.modules["streaq"] = None      # import streaq -> ImportError
sys.modules["coredis"] = None
import trio
from trio_bg.durable import DurableQueue

queue = DurableQueue(sys.argv[1], name="plain")

@queue.task
async def add(a: int, b: int) -> int:
    return a + b

async def main() -> None:
    async with queue.open_worker(concurrency=2, grace=1):
        handle = await queue.enqueue(add, 2, 3)
        print("result", await handle.get())

trio.run(main)
from trio_bg._demo import Demo
Demo().dashboard.close()
print("demo ok")
"""


def test_the_journal_and_the_demo_run_without_streaq_or_coredis(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, f"sqlite:///{tmp_path / 'jobs.db'}"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={"TRIO_BG_DEMO_JOURNAL": str(tmp_path / "demo.db"), "PATH": "/usr/bin:/bin"},
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["result 5", "demo ok"]
