"""``python -m benchmarks [--quick] [--only micro|http] [--no-write] [--profile]
[--compare CHECKOUT]``."""

from __future__ import annotations

import argparse
import dataclasses
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from . import compare, http_load, micro, report
from .model import PartResult


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="trio_bg benchmarks: micro (in process) and HTTP (Hypercorn + wrk).",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="smoke-sized run (well under a minute) that only checks the harness works; "
        "its figures mean nothing and go to benchmarks/results/quick.json only",
    )
    parser.add_argument("--only", choices=("micro", "http"), help="run one part only")
    parser.add_argument(
        "--no-write", action="store_true", help="print only: write no JSON, docs page or chart"
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help="instead of measuring: cProfile P1 (trio_bg against raw trio) and the HTTP server "
        "in cases (a), (b), (d); run HTTP (a), (d), (e) with the server's GC on and off",
    )
    parser.add_argument(
        "--render",
        action="store_true",
        help="measure nothing: redraw docs/benchmarks.md and its chart from "
        "benchmarks/results/latest.json",
    )
    parser.add_argument(
        "--server",
        choices=("hypercorn", "trio_bg"),
        default="hypercorn",
        help="HTTP: serve through hypercorn.trio.serve (default, as the baseline note) or "
        "trio_bg.serve with its defaults (its GC settings included)",
    )
    parser.add_argument(
        "--http-runs", type=int, default=None, help="runs per HTTP case (default 3; 1 with --quick)"
    )
    parser.add_argument(
        "--compare",
        metavar="CHECKOUT",
        type=Path,
        help="instead of the normal parts: P1 (micro) and HTTP case (b) for this tree's trio_bg "
        "and for the one in CHECKOUT (another checkout or worktree, run from its own path), "
        "interleaved, with the ratios new / old; writes benchmarks/results/compare.json only",
    )
    args = parser.parse_args(argv)
    if args.compare is not None:
        if args.profile or args.render:
            parser.error("--compare cannot be combined with --profile or --render")
        args.compare = args.compare.resolve()
        problem = compare.check_checkout(args.compare)
        if problem is not None:
            parser.error(f"--compare: {problem}")
    parts = ("micro", "http") if args.only is None else (args.only,)
    if args.render:
        stored = report.load_parts(report.LATEST)
        if not stored:
            print(f"nothing to render: {report.LATEST.relative_to(report.ROOT)} is missing")
            return 1
        print(report.text_tables([stored[p] for p in report.PART_ORDER if p in stored]))
        for path in report.render(stored):
            print(f"wrote {path.relative_to(report.ROOT)}")
        return 0
    began = time.monotonic()

    with tempfile.TemporaryDirectory(prefix="trio_bg_bench_") as scratch:
        workdir = Path(scratch)
        if args.profile:
            out_dir = workdir if args.no_write else report.RESULTS_DIR
            out_dir.mkdir(parents=True, exist_ok=True)
            from . import profiling

            if "micro" in parts:
                spawn_tasks = (micro.QUICK if args.quick else micro.FULL).spawn_tasks
                profiling.profile_micro(spawn_tasks, out_dir)
            if "http" in parts:
                http_config = http_load.QUICK if args.quick else http_load.FULL
                profiling.profile_http(
                    dataclasses.replace(http_config, runner=args.server), out_dir
                )
            return 0

        results: list[PartResult] = []
        if args.compare is not None:
            return _compare(args, parts, workdir, began)
        if "micro" in parts:
            print("running the micro benchmarks ...", file=sys.stderr, flush=True)
            results.append(micro.run_micro(micro.QUICK if args.quick else micro.FULL))
        if "http" in parts:
            problem = http_load.missing_tool()
            if problem is not None:
                print(f"HTTP part skipped: {problem}")
            else:
                print("running the HTTP benchmarks ...", file=sys.stderr, flush=True)
                results.append(http_load.run_http(_http_config(args), workdir))

    if args.quick:
        print("(--quick: smoke-sized run; these figures only show that the harness works)")
    print(report.text_tables(results))
    print(f"\n(took {time.monotonic() - began:.0f} s)")
    if not args.no_write and results:
        for path in report.write_all(results, quick=args.quick):
            print(f"wrote {path.relative_to(report.ROOT)}")
    return 0


def _http_config(args: argparse.Namespace) -> http_load.HttpConfig:
    config = http_load.QUICK if args.quick else http_load.FULL
    config = dataclasses.replace(config, runner=args.server)
    if args.http_runs is not None:
        config = dataclasses.replace(config, runs=max(1, args.http_runs))
    return config


def _compare(args: argparse.Namespace, parts: Sequence[str], workdir: Path, began: float) -> int:
    results: list[PartResult] = []
    if "micro" in parts:
        print(f"comparing P1 with {args.compare} ...", file=sys.stderr, flush=True)
        results.append(
            compare.compare_micro(args.compare, micro.QUICK if args.quick else micro.FULL)
        )
    if "http" in parts:
        problem = http_load.missing_tool()
        if problem is not None:
            print(f"HTTP part skipped: {problem}")
        else:
            print(f"comparing HTTP (b) with {args.compare} ...", file=sys.stderr, flush=True)
            results.append(compare.compare_http(args.compare, _http_config(args), workdir))
    if args.quick:
        print("(--quick: smoke-sized run; these figures only show that the harness works)")
    print(report.text_tables(results))
    print(f"\n(took {time.monotonic() - began:.0f} s)")
    if not args.no_write and results:
        compare.write(report.RESULTS_DIR / "compare.json", results)
        print(f"wrote {(report.RESULTS_DIR / 'compare.json').relative_to(report.ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
