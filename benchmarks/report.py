"""Turn part results into the stdout tables, the JSON file, the docs page and the chart."""

from __future__ import annotations

import json
import statistics
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from .model import Check, Measurement, PartResult

ROOT = Path(__file__).resolve().parent.parent
RESULTS_DIR = ROOT / "benchmarks" / "results"
LATEST = RESULTS_DIR / "latest.json"
QUICK = RESULTS_DIR / "quick.json"
DOC = ROOT / "docs" / "benchmarks.md"
CHART = ROOT / "docs" / "img" / "benchmarks.png"
PART_ORDER = ("micro", "http")


def fmt(value: float) -> str:
    """A figure with as many decimals as it deserves."""
    if value != value:
        return "n/a"
    size = abs(value)
    if size >= 100:
        return f"{value:,.0f}"
    if size >= 10:
        return f"{value:.1f}"
    if size >= 1:
        return f"{value:.2f}"
    return f"{value:.3f}"


def fmt_check_value(check: Check) -> str:
    return f"{fmt(check.value)}{'x' if check.unit == 'x' else ' ' + check.unit}"


def fmt_target(check: Check) -> str:
    if check.target is None:
        return "-"
    return f"<= {fmt(check.target)}{'x' if check.unit == 'x' else ' ' + check.unit}"


def fmt_met(check: Check) -> str:
    return {True: "yes", False: "NO", None: "-"}[check.met]


def _groups(measurements: Iterable[Measurement]) -> dict[str, list[Measurement]]:
    groups: dict[str, list[Measurement]] = {}
    for m in measurements:
        groups.setdefault(m.group, []).append(m)
    return groups


# -- stdout ----------------------------------------------------------------------------------------


def text_tables(parts: Sequence[PartResult]) -> str:
    lines: list[str] = []
    for part in parts:
        lines.append(f"== {part.part}: medians over repeated rounds ==")
        for group, members in _groups(part.measurements).items():
            lines.append(group)
            lines.append(
                f"  {'measurement':<62} {'unit':<8} {'rounds':>6} {'median':>9} {'min':>9}"
            )
            for m in members:
                lines.append(
                    f"  {m.label:<62} {m.unit:<8} {m.rounds:>6} {fmt(m.median):>9} {fmt(m.min):>9}"
                )
        gc_table = gc_rows(part)
        if gc_table:
            lines += [
                "Server garbage collector during the measured window (median over runs; max",
                "  pause: the largest single pause over all runs; % of window: pause time over",
                "  the measured wall time; garbage/req: objects freed by the collector, i.e. in",
                "  reference cycles, per request; tracked objs, trio tasks: in the server at the",
                "  end of the window)",
            ]
            lines.append(
                f"  {'case':<5} {'gen0 n':>7} {'gen1 n':>7} {'gen2 n':>7} {'gen2 total ms':>14} "
                f"{'gen2 max ms':>12} {'all total ms':>13} {'max pause ms':>13} "
                f"{'% of window':>12} {'garbage/req':>12} {'tracked objs':>13} {'trio tasks':>11}"
            )
            for row in gc_table:
                lines.append(
                    f"  {row['case']:<5} {row['n0']:>7g} {row['n1']:>7g} "
                    f"{row['n2']:>7g} {fmt(row['t2']):>14} {fmt(row['m2']):>12} "
                    f"{fmt(row['total']):>13} {fmt(row['max']):>13} {fmt(row['share']):>12} "
                    f"{fmt(row['garbage']):>12} {row['objects']:>13,.0f} {row['tasks']:>11,.0f}"
                )
        for note in part.extra.get("notes", []):
            lines.append(f"  note: {note}")
        lines.append("")
    lines.append("== ratios vs targets ==")
    lines.append(f"  {'check':<66} {'value':>10} {'target':>12} {'met':>4}")
    for part in parts:
        for c in part.checks:
            lines.append(
                f"  {c.label:<66} {fmt_check_value(c):>10} {fmt_target(c):>12} {fmt_met(c):>4}"
            )
            if c.note:
                lines.append(f"      ({c.note})")
    return "\n".join(lines)


def gc_rows(part: PartResult) -> list[dict[str, Any]]:
    """Per case: collections per generation and pause times (median over runs; max of max)."""
    runs_by_case: dict[str, list[dict[str, Any]]] = part.extra.get("gc", {})
    rows: list[dict[str, Any]] = []
    for case, runs in runs_by_case.items():
        if not runs:
            continue
        gens = [run["generations"] for run in runs]

        def med(values: Iterable[float]) -> float:
            return statistics.median(list(values))

        rows.append(
            {
                "case": case,
                "n0": med(g[0]["count"] for g in gens),
                "n1": med(g[1]["count"] for g in gens),
                "n2": med(g[2]["count"] for g in gens),
                "t2": med(g[2]["total_ms"] for g in gens),
                "m2": max(g[2]["max_ms"] for g in gens),
                "total": med(sum(x["total_ms"] for x in g) for g in gens),
                "max": max(max(x["max_ms"] for x in g) for g in gens),
                "share": med(
                    sum(x["total_ms"] for x in run["generations"]) / 10 / run["window_seconds"]
                    for run in runs
                ),
                "objects": med(run.get("tracked_objects", 0) for run in runs),
                "tasks": med(run.get("tasks_living", 0) for run in runs),
                "garbage": med(
                    sum(x["collected"] for x in run["generations"]) / max(run.get("requests", 0), 1)
                    for run in runs
                ),
                "gc_enabled": all(run.get("gc_enabled", True) for run in runs),
            }
        )
    return rows


# -- JSON ------------------------------------------------------------------------------------------


def load_parts(path: Path) -> dict[str, PartResult]:
    """The parts stored in a results file (none if it is missing or unreadable)."""
    try:
        data = json.loads(path.read_text())
        return {name: PartResult.from_json(p) for name, p in data["parts"].items()}
    except (OSError, ValueError, KeyError, TypeError):
        return {}


def write_json(path: Path, parts: dict[str, PartResult]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    data = {"parts": {name: parts[name].to_json() for name in PART_ORDER if name in parts}}
    path.write_text(json.dumps(data, indent=2) + "\n")


_SHORT = {
    "a": "raw",
    "b": "trio_bg tiny",
    "c": "Starlette tiny",
    "d": "trio_bg 2 s",
    "e": "raw 2 s",
    "f": "nursery\n+ task",
    "g": "nursery +\nscoped task",
}

# -- the chart -------------------------------------------------------------------------------------


def write_chart(path: Path, parts: dict[str, PartResult]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    targeted = [c for name in PART_ORDER if name in parts for c in parts[name].checks
                if c.target is not None and c.value == c.value]  # fmt: skip
    http = parts.get("http")
    panels = 1 + (2 if http is not None else 0)
    fig, axes = plt.subplots(1, panels, figsize=(6.5 * panels, 5.2), squeeze=False)
    ax = axes[0][0]
    labels = [f"{c.key}: {fmt_check_value(c)} ({fmt_target(c)})" for c in targeted]
    values = [c.value / c.target for c in targeted if c.target]
    colours = ["#3a923a" if c.met else "#c0392b" for c in targeted]
    positions = list(range(len(targeted)))[::-1]
    ax.barh(positions, values, color=colours)
    ax.axvline(1.0, color="black", linewidth=1, linestyle="--")
    # Where a floor was measured in the same run (P1floor beside P1, ...), mark it on the bar:
    # the part of the bar right of the mark is trio_bg's own, the rest any cancellable task's.
    floors = {c.key.removesuffix("floor"): c.value for name in PART_ORDER if name in parts
              for c in parts[name].checks if c.key.endswith("floor")}  # fmt: skip
    marked = False
    for position, check in zip(positions, targeted, strict=True):
        floor = floors.get(check.key)
        if floor is not None and check.target:
            label = None if marked else "floor (raw + own cancel scope)"
            x = floor / check.target
            ax.plot([x, x], [position - 0.4, position + 0.4], "k-", linewidth=2.5, label=label)
            marked = True
    if marked:
        ax.legend(loc="lower right", fontsize=8)
    ax.set_yticks(positions, labels, fontsize=8)
    ax.set_xlabel("value / target (<= 1 meets the target)")
    ax.set_title("Targets (green: met, red: missed)")
    if http is not None:
        cases = [m.key.split(".")[1] for m in http.measurements if m.key.endswith(".cpu")]
        cpu = [http.measurement(f"http.{k}.cpu") for k in cases]
        names = [f"({k})\n{_SHORT.get(k, '')}" for k in cases]
        ax = axes[0][1]
        ax.bar(names, [m.median for m in cpu], color="#4a6fa5")
        ax.errorbar(
            names,
            [m.median for m in cpu],
            yerr=[
                [m.median - min(m.samples) for m in cpu],
                [max(m.samples) - m.median for m in cpu],
            ],
            fmt="none",
            ecolor="black",
            capsize=4,
        )
        ax.set_ylabel("server CPU us per request (median; bars: min-max)")
        ax.set_title("HTTP: server CPU per request")
        ax = axes[0][2]
        width = 0.38
        xs = list(range(len(cases)))
        p50 = [http.measurement(f"http.{k}.p50").median for k in cases]
        p99 = [http.measurement(f"http.{k}.p99").median for k in cases]
        ax.bar([x - width / 2 for x in xs], p50, width, label="p50", color="#7fa7d9")
        ax.bar([x + width / 2 for x in xs], p99, width, label="p99", color="#c0392b")
        ax.set_xticks(xs, names)
        ax.set_yscale("log")
        ax.set_ylabel("latency ms (median over runs, log scale)")
        ax.set_title("HTTP: latency under wrk -c32")
        ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


# -- the docs page ---------------------------------------------------------------------------------

_INTRO = """\
# Benchmarks

What a trio_bg task costs next to a raw trio task and an anyio (>= 4.14) task handle, and what
trio_bg's middleware costs an HTTP server under Hypercorn's trio worker. The figures below were
written by the harness in `benchmarks/`; re-run it with

```console
$ .venv/bin/python -m benchmarks            # both parts (a few minutes)
$ .venv/bin/python -m benchmarks --only micro
$ .venv/bin/python -m benchmarks --quick --no-write   # smoke run: checks the harness only
$ .venv/bin/python -m benchmarks --profile  # where the time goes: cProfile, GC on/off runs
$ .venv/bin/python -m benchmarks --compare ../other-checkout   # P1 and HTTP (b): new / old
```

It prints the tables to stdout and, unless `--no-write` or `--quick`, rewrites this page, its
chart and `benchmarks/results/latest.json` (git-ignored). A run of one part (`--only`) keeps the
other part's figures from `latest.json` when it is there.

`--compare CHECKOUT` measures two versions of trio_bg in one run instead: P1 and HTTP case (b)
for this tree and for the trio_bg of another checkout or worktree, interleaved round by round,
each version in processes of its own (`PYTHONPATH` set to its checkout), with the ratios
new / old; raw trio's P1 in the same processes is the control that shows the run's noise. It
writes `benchmarks/results/compare.json` only, never this page.

The machine is shared with other engineers' test runs, so every figure is a **median over
repeated rounds**; the tables give the number of rounds, the median and the minimum. Ratios are
ratios of medians. Differences under ~10 % are noise on this machine.

What was optimised, what each change bought, and the floors behind the targets that are not met:
[Performance work](performance.md).
"""

_MICRO_METHOD = """\
Each sample is one fresh `trio.run` (`anyio.run(..., backend="trio")` for anyio) after a
`gc.collect()`, timed inside the run with `time.perf_counter()`, so the event loop's start-up is
not counted; the garbage collector stays enabled. The variants of a figure are interleaved round
by round, in an order rotated every round.

- **P1**: {spawn_tasks:,} tasks that return at once, started in a loop and finished (the time
  runs until the nursery / manager / task group has exited): raw `nursery.start_soon(noop)`;
  `tm.start_soon_named("noop", noop)` in `async with trio_bg.open_task_manager()`; anyio's
  `TaskGroup.start_soon(noop)` (which returns a `TaskHandle` since 4.14); and the floor of any
  task that can be cancelled on its own and keeps its result: raw trio, each task a wrapper
  coroutine that runs `noop` inside its own `trio.CancelScope` and stores the result. The rows
  marked "(gc disabled)" run raw trio and trio_bg again with `gc.disable()`, to tell the collector's
  pauses ({spawn_tasks:,} live coroutines and handles make its full collections long) from the
  rest. Where trio_bg has an instrument API (`trio_bg.add_instrument`), one more row runs
  trio_bg's case with one no-op instrument installed (`class Noop(trio_bg.Instrument): pass`,
  added before the `trio.run` and removed after it); the ratio table gives the difference of
  the medians as the added cost per task of one no-op instrument. Without that API the row is
  skipped, with a note.
- **P1 + result**: the same, then each result awaited in start order: `await handle.get()`
  (trio_bg), `await handle` (anyio's `TaskHandle.__await__`: wait, then `return_value`), and for
  raw trio a wrapper that stores the result in a list and sets a `trio.Event` per task.
- **P3**: {memory_tasks:,} tasks blocked in `trio.sleep_forever()`; bytes traced by
  `tracemalloc` from before the first start to once all are blocked
  (`trio.testing.wait_all_tasks_blocked()`), after a `gc.collect()`, per task; the floor row
  blocks in the same wrapper with its own cancel scope as P1's.
- **P6 cancel(id)**: {cancel_live_tasks:,} live (blocked) tasks; {cancel_calls} single
  `tm.cancel(task_id)` calls on different, random ids, each timed with `perf_counter_ns`; a
  round's figure is the median call. **cancel_all**: {small:,} and {large:,} blocked tasks;
  `tm.cancel_all()` then `await tm.wait_idle()`, against a raw nursery's
  `cancel_scope.cancel()` until the nursery has exited. Per task, so that the {large:,} /
  {small:,} ratio shows whether the cost grows linearly (~1) or worse.
- **Thread path**: {thread_calls:,} sync no-op functions: `tm.start_soon(sync_noop)` against
  `nursery.start_soon(trio.to_thread.run_sync, sync_noop)` (both with trio's default limiter of
  40 threads).
"""

_HTTP_METHOD = """\
The method of the shared HTTP baseline note. Each app of `benchmarks/apps.py` is served by
Hypercorn's trio worker (one process, h11) in a subprocess started by
`python -m benchmarks.server --runner {runner}`, pinned to CPU 0 with `taskset -c 0`
(`--runner hypercorn`: `hypercorn.trio.serve`, as in the note; `--runner trio_bg`:
`trio_bg.serve()` with its defaults, its garbage-collector settings included);
`wrk -t1 -c{connections} -d{duration}s --latency` runs pinned to CPU 1 on loopback, after an
unmeasured {warmup} s warm-up. Each run starts a fresh server; the cases are interleaved run by
run; {runs} run(s) per case, medians reported.

The server saturates its core, so **server CPU per request** is the steadier figure: the
`utime + stime` of the server process from `/proc/PID/stat` over the measured window, divided
by the requests wrk completed. The server times every garbage collection with `gc.callbacks`
during the measured window (same cost in every case).

- (a) raw ASGI, `200 OK`, no background work;
- (b) the same in `TaskMiddleware`, one tiny task per request:
  `request_tasks(scope).after_response.start_soon_named("tiny", tiny)`, where `tiny` is
  `await trio.lowlevel.checkpoint()`;
- (c) Starlette on trio, `PlainTextResponse("OK", background=BackgroundTask(tiny))`;
- (d) like (b) with a 2 s task (`trio.sleep(2)`): at ~2,500 req/s, ~5,000 tasks in flight;
- (e) the same work without trio_bg, for reference: raw ASGI that sleeps 2 s after sending the
  final body, in the same call (case E of the baseline note);
- (f) the floor for (b), without trio_bg: raw ASGI that opens a trio nursery per request and,
  after sending the final body, starts the same tiny task in it; the call returns once the task
  is done;
- (g) the stricter floor for (b): like (f), the task inside its own `trio.CancelScope` (as every
  trio_bg task is, so that it can be cancelled on its own). The ratio table shows (b) against
  both, and (g) / (a) as P4's floor.
"""


def _md_measurements(part: PartResult) -> list[str]:
    lines: list[str] = []
    for group, members in _groups(part.measurements).items():
        lines += [f"**{group}**", "", "| measurement | unit | rounds | median | min |",
                  "|---|---|--:|--:|--:|"]  # fmt: skip
        for m in members:
            label = m.label.strip()
            lines.append(f"| {label} | {m.unit} | {m.rounds} | {fmt(m.median)} | {fmt(m.min)} |")
        lines.append("")
    return lines


def _md_checks(parts: Iterable[PartResult]) -> list[str]:
    lines = ["| figure | value | target | met | note |", "|---|--:|--:|:-:|---|"]
    for part in parts:
        for c in part.checks:
            lines.append(
                f"| {c.label} | {fmt_check_value(c)} | {fmt_target(c)} | {fmt_met(c)} | {c.note} |"
            )
    return [*lines, ""]


def _md_machine(meta: dict[str, Any]) -> str:
    v = meta.get("versions", {})
    return (
        f"{meta.get('nproc')} cores ({meta.get('cpu_model')}), {meta.get('platform')}; "
        f"Python {meta.get('python')}, trio {v.get('trio')}, anyio {v.get('anyio')}, "
        f"hypercorn {v.get('hypercorn')} (h11 {v.get('h11')}), starlette {v.get('starlette')}; "
        f"trio_bg at {meta.get('trio_bg_code', 'unknown')}; load average "
        f"{meta.get('loadavg_at_end', meta.get('loadavg_at_start'))}; finished {meta.get('date')}."
    )


def markdown(parts: dict[str, PartResult]) -> str:
    ordered = [parts[name] for name in PART_ORDER if name in parts]
    lines = [_INTRO, "## Targets", ""]
    lines += _md_checks(ordered)
    lines += ["![Benchmark figures against their targets](img/benchmarks.png)", ""]
    micro = parts.get("micro")
    lines += ["## Micro benchmarks", ""]
    if micro is None:
        lines += ["Not measured in the last written run.", ""]
    else:
        cfg = dict(micro.meta.get("config", {}))
        small, large = cfg.get("cancel_all_sizes", (0, 0))
        lines += [f"Machine: {_md_machine(micro.meta)}", "", "### Method", ""]
        lines += [_MICRO_METHOD.format(small=small, large=large, **cfg), "### Figures", ""]
        lines += _md_measurements(micro)
    http = parts.get("http")
    lines += ["## HTTP under Hypercorn's trio worker", ""]
    if http is None:
        lines += ["Not measured in the last written run.", ""]
    else:
        cfg = {"runner": "hypercorn", **http.meta.get("config", {})}
        lines += [f"Machine: {_md_machine(http.meta)}", "", "### Method", ""]
        lines += [_HTTP_METHOD.format(**cfg), "### Figures", ""]
        lines += _md_measurements(http)
        rows = gc_rows(http)
        if rows:
            lines += [
                "**Server garbage collector during the measured window**: collections and "
                "pauses, median over runs; max pause: the largest single pause over all runs; "
                "% of window: pause time over the measured wall time; garbage objects/req: "
                "objects freed by the collector (so, in reference cycles) per request; GC-tracked "
                "objects and living trio tasks: in the server at the end of the window.",
                "",
                "| case | gen0 n | gen1 n | gen2 n | gen2 total ms | gen2 max ms "
                "| all gens total ms | max pause ms | % of window | garbage objects/req "
                "| GC-tracked objects | trio tasks |",
                "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
            ]
            for r in rows:
                lines.append(
                    f"| {r['case']} | {r['n0']:g} | {r['n1']:g} | {r['n2']:g} | "
                    f"{fmt(r['t2'])} | {fmt(r['m2'])} | {fmt(r['total'])} | {fmt(r['max'])} | "
                    f"{fmt(r['share'])} | {fmt(r['garbage'])} | {r['objects']:,.0f} | "
                    f"{r['tasks']:,.0f} |"
                )
            lines.append("")
        for note in http.extra.get("notes", []):
            lines.append(f"- note: {note}")
    return "\n".join(lines).rstrip() + "\n"


def write_all(new_parts: Sequence[PartResult], *, quick: bool) -> list[Path]:
    """Write the JSON (and, for a full run, the docs page and the chart); return the paths."""
    if quick:
        write_json(QUICK, {p.part: p for p in new_parts})
        return [QUICK]
    parts = load_parts(LATEST)
    parts.update({p.part: p for p in new_parts})
    write_json(LATEST, parts)
    return [LATEST, *render(parts)]


def render(parts: dict[str, PartResult]) -> list[Path]:
    """Draw the chart and write the docs page from ``parts``; return the paths written."""
    written: list[Path] = []
    try:
        write_chart(CHART, parts)
        written.append(CHART)
    except ImportError:
        print("matplotlib is not installed: the chart was not drawn (pip install matplotlib)")
    DOC.write_text(markdown(parts))
    written.append(DOC)
    return written
