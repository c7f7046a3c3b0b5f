"""What a run of an in-process periodic task costs against a start, `python -m benchmarks.periodic`.

Both sides run N no-op tasks, one per period, on trio's ``MockClock`` (``autojump_threshold=0``:
each sleep ends as soon as everything waits, so no real time passes and the rows measure CPU):

- **start**: a loop that calls ``tm.start_soon_named("noop", noop)`` and sleeps one period;
- **periodic**: ``tm.start_periodic_named("noop", noop, every=1)`` and a wait for N runs.

The difference per run is what the schedule's loop adds (its ``sleep_until``, the overlap check,
the start through the manager). Medians of rounds, the two sides interleaved.
"""

from __future__ import annotations

import argparse
import statistics
import time

import trio
import trio.testing

import trio_bg


async def noop() -> None:
    pass


async def starts(n: int) -> float:
    began = time.perf_counter()
    async with trio_bg.open_task_manager() as tm:
        for _ in range(n):
            tm.start_soon_named("noop", noop)
            await trio.sleep(1)
    return time.perf_counter() - began


async def periodic(n: int) -> float:
    runs = 0
    done = trio.Event()

    async def counted() -> None:
        nonlocal runs
        runs += 1
        if runs == n:
            done.set()

    began = time.perf_counter()
    async with trio_bg.open_task_manager() as tm:
        schedule = tm.start_periodic_named("noop", counted, every=1)
        await done.wait()
        schedule.cancel()
    return time.perf_counter() - began


def measure(fn: object, n: int) -> float:
    clock = trio.testing.MockClock(autojump_threshold=0)
    return trio.run(fn, n, clock=clock) / n * 1e6  # type: ignore[arg-type]


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.periodic")
    parser.add_argument("--runs", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    rows: dict[str, list[float]] = {"start": [], "periodic": []}
    for _ in range(args.rounds):
        rows["start"].append(measure(starts, args.runs))
        rows["periodic"].append(measure(periodic, args.runs))
    start = statistics.median(rows["start"])
    run = statistics.median(rows["periodic"])
    print(f"{args.runs:,} runs, one per period (MockClock), medians of {args.rounds} rounds:")
    print(f"  a start and a sleep per period:         {start:7.1f} us per run")
    print(f"  tm.start_periodic_named(every=1):       {run:7.1f} us per run")
    print(f"  periodic / start:                       {run / start:7.2f}x")


if __name__ == "__main__":
    main()
