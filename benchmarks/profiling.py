"""``--profile``: where trio_bg's time goes, for whoever optimises it.

- P1 under cProfile, trio_bg and raw trio, with the function calls per task of each;
- HTTP cases (a), (b) and (d) with the server under cProfile: the top costs of (d), and what
  (b) and (d) cost per request more than (a), function by function;
- HTTP cases (a), (d) and (e) with the server's garbage collector on and off, side by side: if
  ``gc.disable()`` removes the p99 spikes of (d), they are collector pauses.

Profiles are dumped as ``.pstats`` files (``python -m pstats FILE`` to browse them).
"""

from __future__ import annotations

import io
import pstats
from pathlib import Path
from typing import Any

import trio

from . import micro
from .http_load import HttpConfig, measure_once, missing_tool
from .report import fmt


def _top(stats: pstats.Stats, sort: str, limit: int, *restrictions: str) -> str:
    stream = io.StringIO()
    stats.stream = stream  # type: ignore[attr-defined]
    stats.sort_stats(sort).print_stats(*restrictions, limit)
    text = stream.getvalue()
    # Keep the table: drop the preamble up to the column header.
    start = text.find("   ncalls")
    return text[start:] if start >= 0 else text


def _total_calls(stats: pstats.Stats) -> int:
    total: int = stats.total_calls  # type: ignore[attr-defined]
    return total


def _per_unit(stats: pstats.Stats, units: int) -> dict[str, tuple[float, float]]:
    """Function -> (calls per unit, own microseconds per unit)."""
    table: dict[tuple[str, int, str], tuple[Any, ...]] = stats.stats  # type: ignore[attr-defined]
    result: dict[str, tuple[float, float]] = {}
    for (filename, line, name), (_, calls, own, *_rest) in table.items():
        label = f"{Path(filename).name}:{line}({name})"
        old_calls, old_own = result.get(label, (0.0, 0.0))
        result[label] = (old_calls + calls / units, old_own + own * 1e6 / units)
    return result


def _diff(base: pstats.Stats, base_units: int, other: pstats.Stats, other_units: int,
          limit: int) -> str:  # fmt: skip
    """The functions that cost ``other`` more than ``base``, per unit (task or request)."""
    a = _per_unit(base, base_units)
    b = _per_unit(other, other_units)
    rows = []
    for label in a.keys() | b.keys():
        calls_a, own_a = a.get(label, (0.0, 0.0))
        calls_b, own_b = b.get(label, (0.0, 0.0))
        rows.append((own_b - own_a, calls_b - calls_a, label))
    rows.sort(reverse=True)
    total = sum(r[0] for r in rows)
    lines = [f"  {'extra own us':>12} {'extra calls':>11}  function  (total: {total:+.1f} us)"]
    lines += [f"  {own:>12.2f} {calls:>11.2f}  {label}" for own, calls, label in rows[:limit]]
    return "\n".join(lines)


def profile_micro(n: int, out_dir: Path) -> None:
    import cProfile

    print(f"== profile: P1, {n:,} no-op tasks ==")
    raw = cProfile.Profile()
    raw.enable()
    raw_seconds = trio.run(micro.spawn_raw, n)
    raw.disable()
    seconds, profiler = micro.profile_spawn(n)
    raw_stats = pstats.Stats(raw)
    bg_stats = pstats.Stats(profiler)
    path = out_dir / "profile_p1_trio_bg.pstats"
    bg_stats.dump_stats(path)
    print(
        f"under cProfile: raw trio {raw_seconds * 1e6 / n:.1f} us/task, "
        f"{_total_calls(raw_stats) / n:.1f} Python calls/task; trio_bg {seconds * 1e6 / n:.1f} "
        f"us/task, {_total_calls(bg_stats) / n:.1f} Python calls/task"
    )
    print("trio_bg minus raw trio, per task, under cProfile (own time, calls):")
    print(_diff(raw_stats, n, bg_stats, n, 25))
    print()
    print(f"trio_bg, top by own time (profile: {path}):")
    print(_top(bg_stats.strip_dirs(), "tottime", 25))
    print("trio_bg's own functions by cumulative time:")
    print(_top(pstats.Stats(profiler), "cumulative", 20, "trio_bg"))


def _summary(label: str, run: Any) -> str:
    gens = run.gc["generations"]
    return (
        f"  {label:<28} {run.wrk.rps:>8.0f} {run.wrk.p50_ms:>8.2f} {run.wrk.p99_ms:>8.2f} "
        f"{run.cpu_us_per_request:>8.0f}   "
        + "  ".join(
            f"g{g['generation']}: {g['count']} / {fmt(g['total_ms'])} / {fmt(g['max_ms'])}"
            for g in gens
        )
    )


def profile_http(config: HttpConfig, out_dir: Path) -> None:
    problem = missing_tool()
    if problem is not None:
        print(f"== profile: HTTP skipped: {problem}")
        return
    profiles: dict[str, tuple[pstats.Stats, int]] = {}
    for case in ("a", "b", "d"):
        path = out_dir / f"profile_http_{case}.pstats"
        run = measure_once(case, config, out_dir, profile_file=path)
        profiles[case] = (pstats.Stats(str(path)), run.wrk.requests)
        print(
            f"== profile: HTTP case ({case}), server under cProfile for the measured window: "
            f"{run.wrk.rps:.0f} req/s, {run.cpu_us_per_request:.0f} us/req under the profiler "
            f"({path})"
        )
    stats = profiles["d"][0]
    print("case (d), top by own time:")
    print(_top(stats.strip_dirs(), "tottime", 25))
    print("case (d), trio_bg's own functions by cumulative time:")
    print(_top(pstats.Stats(str(out_dir / "profile_http_d.pstats")), "cumulative", 20, "trio_bg"))
    base, base_requests = profiles["a"]
    for case in ("b", "d"):
        other, other_requests = profiles[case]
        print(f"case ({case}) minus case (a), per request, under cProfile (own time, calls):")
        print(_diff(base, base_requests, other, other_requests, 25))
        print()

    print("== HTTP (a), (d), (e) with the server's garbage collector on and off (1 run each) ==")
    header = f"  {'case':<28} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'us/req':>8}   "
    print(header + "gc per generation: count / total ms / max ms")
    for case in ("a", "d", "e"):
        for gc_off in (False, True):
            run = measure_once(case, config, out_dir, gc_off=gc_off)
            print(_summary(f"({case}) gc {'off' if gc_off else 'on'}", run))
