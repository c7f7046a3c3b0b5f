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


def test_the_journal_benchmark_prints_its_table() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.journal", "--jobs", "200", "--samples", "50"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    for line in (
        "SQLite floor on this disk",
        "trio_bg journal, normal",
        "trio_bg journal, full",
        "trio_bg Redis (in-process streaq worker)",
        "SqliteHuey (consumer, 4 threads)",
        "in-process worker:         p50",
        "worker process, same host: p50",
    ):
        assert line in done.stdout, done.stdout


@pytest.mark.parametrize(
    ("module", "arguments", "lines"),
    [
        (
            "benchmarks.periodic",
            ["--runs", "200", "--rounds", "1"],
            ["a start and a sleep per period:", "tm.start_periodic_named(every=1):", "/ start:"],
        ),
        (
            "benchmarks.tracked",
            ["--requests", "200"],
            ["(d)      TaskMiddleware", "(floor)  a nursery per request", "(d) - (floor): "],
        ),
    ],
)
def test_the_small_benchmarks_print_their_rows(
    module: str, arguments: list[str], lines: list[str]
) -> None:
    done = subprocess.run(
        [sys.executable, "-m", module, *arguments],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    for line in lines:
        assert line in done.stdout, done.stdout


def test_the_redis_path_benchmark_prints_its_table() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.redis_path", "--jobs", "200", "--rounds", "1",
         "--samples", "20"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    for line in ("drain, 1 worker, concurrency 32", "enqueue one by one", "enqueue_many",
                 "trio_bg enqueue -> get()", "LPUSH/BLPOP hand-off (floor)"):  # fmt: skip
        assert line in done.stdout, done.stdout
