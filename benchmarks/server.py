"""The benchmark server: one app under Hypercorn's trio worker, in this process, controlled by
signals.

    python -m benchmarks.server benchmarks.apps:raw --stats-file /tmp/stats.json

(The harness starts it through :mod:`benchmarks.subject`, which picks the trio_bg checkout.)
It prints ``READY <url> trio_bg=<path of trio_bg/__init__.py>`` once bound, then:

- ``SIGUSR1`` starts the measured window: the garbage-collector statistics are reset (and the
  profiler, with ``--profile-file``, is switched on);
- ``SIGUSR2`` ends it: the statistics (and the profile) are written to ``--stats-file``;
- ``SIGTERM`` / ``SIGINT`` start Hypercorn's graceful shutdown.

``--runner trio_bg`` serves through ``trio_bg.serve()`` with its defaults (its garbage-collector
settings included) instead of ``hypercorn.trio.serve()``.

Every collection is timed through ``gc.callbacks`` (a few hundred nanoseconds per collection,
in every case alike), so the report can say whether latency spikes are collector pauses.
"""

from __future__ import annotations

import argparse
import cProfile
import functools
import gc
import json
import logging
import os
import signal
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, cast

import trio


class GcTimer:
    """Counts the collections per generation and times each pause."""

    def __init__(self) -> None:
        self._began = 0.0
        self.reset()
        gc.callbacks.append(self._callback)

    def reset(self) -> None:
        self.count = [0, 0, 0]
        self.total = [0.0, 0.0, 0.0]
        self.max = [0.0, 0.0, 0.0]
        self.collected = [0, 0, 0]
        self.window_began = time.perf_counter()

    def _callback(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._began = time.perf_counter()
            return
        pause = time.perf_counter() - self._began
        generation = info["generation"]
        self.count[generation] += 1
        self.total[generation] += pause
        self.collected[generation] += info["collected"]
        if pause > self.max[generation]:
            self.max[generation] = pause

    def snapshot(self) -> dict[str, Any]:
        return {
            "window_seconds": time.perf_counter() - self.window_began,
            "gc_enabled": gc.isenabled(),
            "tracked_objects": len(gc.get_objects()),
            "threshold": list(gc.get_threshold()),
            "frozen": gc.get_freeze_count(),
            "tasks_living": trio.lowlevel.current_statistics().tasks_living,
            "generations": [
                {
                    "generation": g,
                    "count": self.count[g],
                    "total_ms": self.total[g] * 1e3,
                    "max_ms": self.max[g] * 1e3,
                    "collected": self.collected[g],
                }
                for g in range(3)
            ],
        }


def _write_atomically(path: str, text: str) -> None:
    temporary = f"{path}.tmp"
    with open(temporary, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(temporary, path)


async def _control(
    shutdown: trio.Event,
    timer: GcTimer,
    stats_file: str,
    profile_file: str | None,
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    profiler: cProfile.Profile | None = None
    with trio.open_signal_receiver(
        signal.SIGUSR1, signal.SIGUSR2, signal.SIGTERM, signal.SIGINT
    ) as signals:
        task_status.started()
        async for signum in signals:
            if signum == signal.SIGUSR1:
                timer.reset()
                if profile_file is not None:
                    profiler = cProfile.Profile()
                    profiler.enable()
            elif signum == signal.SIGUSR2:
                if profiler is not None:
                    profiler.disable()
                    assert profile_file is not None
                    profiler.dump_stats(profile_file)
                    profiler = None
                _write_atomically(stats_file, json.dumps(timer.snapshot()))
            else:
                shutdown.set()


async def _serve(app: Callable[..., Awaitable[None]], args: argparse.Namespace) -> None:
    import hypercorn.trio
    from hypercorn.config import Config

    config = Config()
    config.bind = [args.bind]
    config.loglevel = args.log_level
    config.graceful_timeout = args.graceful_timeout
    serve = cast("Callable[..., Awaitable[None]]", hypercorn.trio.serve)
    timer = GcTimer()
    shutdown = trio.Event()
    async with trio.open_nursery() as nursery:
        await nursery.start(_control, shutdown, timer, args.stats_file, args.profile_file)

        async def run_server(*, task_status: trio.TaskStatus[list[str]]) -> None:
            if args.runner == "trio_bg":
                # trio_bg.serve() with its defaults (its GC settings included); the signals
                # stay with _control, so both runners stop the same way.
                import trio_bg

                await trio_bg.serve(
                    app, config.bind, config=config, shutdown_trigger=shutdown.wait,
                    handle_signals=False, task_status=task_status,
                )  # fmt: skip
            else:
                await serve(
                    app, config, shutdown_trigger=shutdown.wait, task_status=task_status,
                    mode="asgi",
                )  # fmt: skip
            nursery.cancel_scope.cancel()

        binds: list[str] = await nursery.start(run_server)
        import trio_bg

        # The harness checks this path: the server must measure the trio_bg it was asked for.
        print(f"READY {binds[0]} trio_bg={trio_bg.__file__}", flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.server")
    parser.add_argument("app", help="module:attribute of the ASGI app")
    parser.add_argument("--bind", default="127.0.0.1:0")
    parser.add_argument("--stats-file", required=True)
    parser.add_argument("--profile-file", default=None)
    parser.add_argument("--gc", choices=("on", "off"), default="on")
    parser.add_argument(
        "--runner",
        choices=("hypercorn", "trio_bg"),
        default="hypercorn",
        help="hypercorn.trio.serve (default) or trio_bg.serve with its defaults",
    )
    parser.add_argument("--graceful-timeout", type=float, default=3.0)
    parser.add_argument("--log-level", default="WARNING")
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper())
    from trio_bg.__main__ import load_app

    app = load_app(args.app)
    if args.gc == "off":
        gc.disable()
    trio.run(functools.partial(_serve, app, args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
