"""SqliteHuey's side of ``python -m benchmarks.journal``: the same trivial job on Huey's SQLite
storage (file from ``TRIO_BG_BENCH_HUEY``), run by ``huey_consumer benchmarks.huey_jobs.huey``."""

from __future__ import annotations

import os

from huey import SqliteHuey

huey = SqliteHuey(filename=os.environ.get("TRIO_BG_BENCH_HUEY", "huey.db"))


@huey.task()
def add(a: int, b: int) -> int:
    return a + b
