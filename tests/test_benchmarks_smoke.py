"""The benchmark harness runs end to end (smoke-sized; no figure is checked, no time limit but a
hang guard)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent


def test_quick_micro_run_prints_the_ratio_table() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--quick", "--only", "micro", "--no-write"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "== micro: medians over repeated rounds ==" in done.stdout
    assert "== ratios vs targets ==" in done.stdout
    assert "P1 start+finish: trio_bg / raw trio" in done.stdout
