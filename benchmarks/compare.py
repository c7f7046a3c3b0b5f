"""``python -m benchmarks --compare CHECKOUT``: two versions of trio_bg side by side in one run.

P1 (start and finish N no-op tasks) and HTTP case (b) (``TaskMiddleware``, one tiny
``after_response`` task per request) are measured for this tree's trio_bg ("new") and for the
trio_bg of another checkout or worktree ("old"), and each figure is printed with the ratio
new / old. No code is copied: each version runs in processes of its own, started through
:mod:`benchmarks.subject` with ``PYTHONPATH`` naming its checkout (this tree's side too, so both
are measured the same way); the harness itself (this package) is this tree's on both sides.

- P1: one long-lived worker process per version (this module run as a script) takes one sample
  per request, each in a fresh ``trio.run`` after a ``gc.collect()``, exactly as the micro part
  does. The samples are interleaved round by round, in an order rotated every round. Raw trio's
  P1 is measured in the same two processes as a control: its new / old ratio compares the same
  code, so its distance from 1 is the noise of the comparison.
- HTTP (b): a fresh server per run, the two versions interleaved run by run, as in the HTTP part.

Only the ratios are for reading: the absolute figures are comparable within a run, not with a
normal run's (a different process layout).
"""

from __future__ import annotations

import gc
import json
import subprocess
import sys
from pathlib import Path
from typing import IO

from . import http_load, micro
from .apps import CASES
from .model import Check, Measurement, PartResult, code_version, machine_info, ratio, rotated

ROOT = Path(__file__).resolve().parent.parent
SIDES = ("new", "old")


def _progress(text: str) -> None:
    print(f"  [compare] {text}", file=sys.stderr, flush=True)


def _side_labels(other: Path) -> dict[str, str]:
    return {
        "new": f"this tree {ROOT} ({code_version(ROOT)})",
        "old": f"{other} ({code_version(other)})",
    }


# -- P1 in worker processes ----------------------------------------------------------------------

_P1 = {"raw": micro.spawn_raw, "trio_bg": micro.spawn_trio_bg}


def worker(stdin: IO[str], stdout: IO[str]) -> int:
    """Serve P1 samples: read ``"<raw|trio_bg> <n>"`` lines, answer ``"SAMPLE <us per task>"``."""
    import trio_bg

    # One unmeasured run of each kind first: a fresh process's first trio.run is slower.
    for fn in _P1.values():
        micro._per_task_us(fn, 10_000)
    print(f"READY trio_bg={trio_bg.__file__}", file=stdout, flush=True)
    for line in stdin:
        kind, n = line.split()
        gc.collect()
        sample = micro._per_task_us(_P1[kind], int(n))
        print(f"SAMPLE {sample!r}", file=stdout, flush=True)
    return 0


class Worker:
    """One worker process with trio_bg imported from ``root``; stopped (by its PID) on close."""

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()
        command, env = http_load.subject_command(self.root, "benchmarks.compare")
        self.proc = subprocess.Popen(
            command, cwd=ROOT, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        ready = self._answer("READY trio_bg=")
        if not Path(ready).resolve().is_relative_to(self.root):
            self.close()
            raise RuntimeError(f"the P1 worker imported trio_bg from {ready}, not {self.root}")

    def _answer(self, prefix: str) -> str:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line.startswith(prefix):
            self.close()
            raise RuntimeError(
                f"the P1 worker for {self.root} answered {line!r} (exit code {self.proc.poll()}); "
                "its error, if any, is above"
            )
        return line.removeprefix(prefix).strip()

    def sample(self, kind: str, n: int) -> float:
        """Per-task microseconds of one P1 run of ``kind`` (``raw`` or ``trio_bg``)."""
        assert self.proc.stdin is not None
        self.proc.stdin.write(f"{kind} {n}\n")
        self.proc.stdin.flush()
        return float(self._answer("SAMPLE "))

    def close(self) -> None:
        if self.proc.stdin is not None and not self.proc.stdin.closed:
            self.proc.stdin.close()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def compare_micro(other: Path, config: micro.MicroConfig) -> PartResult:
    n, rounds = config.spawn_tasks, config.spawn_rounds
    labels = _side_labels(other)
    group = f"P1 start + finish {n:,} no-op tasks, each version in a worker process of its own"
    m: dict[tuple[str, str], Measurement] = {}
    for kind, what in (("trio_bg", 'trio_bg start_soon_named("noop", noop)'),
                       ("raw", "(control) raw trio nursery.start_soon")):  # fmt: skip
        for side in SIDES:
            m[kind, side] = Measurement(
                f"compare.p1.{kind}.{side}", f"{what}: {side}", "us/task", group=group
            )
    workers = {"new": Worker(ROOT), "old": Worker(other)}
    try:
        order = list(m)
        for r in range(rounds):
            for kind, side in rotated(order, r):
                m[kind, side].samples.append(workers[side].sample(kind, n))
            _progress(f"P1: round {r + 1}/{rounds}")
    finally:
        for w in workers.values():
            w.close()
    checks = [
        Check("P1.new/old", "P1 trio_bg: new / old (< 1: new is faster)",
              ratio(m["trio_bg", "new"], m["trio_bg", "old"])),
        Check("P1raw.new/old", "(control) P1 raw trio: new's process / old's",
              ratio(m["raw", "new"], m["raw", "old"]),
              note="the same code on both sides: its distance from 1 is this run's noise"),
        Check("P1.new", "P1 trio_bg / raw trio: new", ratio(m["trio_bg", "new"], m["raw", "new"])),
        Check("P1.old", "P1 trio_bg / raw trio: old", ratio(m["trio_bg", "old"], m["raw", "old"])),
    ]  # fmt: skip
    meta = machine_info()
    meta.update(sides=labels, config={"spawn_tasks": n, "spawn_rounds": rounds})
    return PartResult(
        part="compare micro", meta=meta, measurements=list(m.values()), checks=checks,
        extra={"notes": [f"{side}: {label}" for side, label in labels.items()]},
    )  # fmt: skip


# -- HTTP (b) ------------------------------------------------------------------------------------


def compare_http(other: Path, config: http_load.HttpConfig, workdir: Path) -> PartResult:
    labels = _side_labels(other)
    roots = {"new": ROOT, "old": other}
    description = CASES["b"][1]
    m: dict[tuple[str, str], Measurement] = {}
    for side in SIDES:
        group = f"HTTP (b) {description}: {side}"
        m[side, "rps"] = Measurement(f"compare.http.b.{side}.rps", "req/s", "req/s", group=group,
                                     lower_is_better=False)  # fmt: skip
        m[side, "p50"] = Measurement(f"compare.http.b.{side}.p50", "p50 latency", "ms", group=group)
        m[side, "p99"] = Measurement(f"compare.http.b.{side}.p99", "p99 latency", "ms", group=group)
        m[side, "cpu"] = Measurement(
            f"compare.http.b.{side}.cpu", "server CPU per request", "us/req", group=group
        )
    notes = [f"{side}: {label}" for side, label in labels.items()]
    for r in range(config.runs):
        for side in rotated(SIDES, r):
            run = http_load.measure_once("b", config, workdir, trio_bg_root=roots[side])
            m[side, "rps"].samples.append(run.wrk.rps)
            m[side, "p50"].samples.append(run.wrk.p50_ms)
            m[side, "p99"].samples.append(run.wrk.p99_ms)
            m[side, "cpu"].samples.append(run.cpu_us_per_request)
            notes += [f"{side} run {r + 1}: {note}" for note in run.notes]
            _progress(
                f"HTTP (b) run {r + 1}/{config.runs} ({side}): {run.wrk.rps:.0f} req/s, "
                f"p99 {run.wrk.p99_ms:.1f} ms, {run.cpu_us_per_request:.0f} us/req"
            )
    checks = [
        Check("P4.new/old", "HTTP (b) server CPU/req: new / old (< 1: new is cheaper)",
              ratio(m["new", "cpu"], m["old", "cpu"])),
        Check("P4r.new/old", "HTTP (b) req/s: new / old (higher is better)",
              ratio(m["new", "rps"], m["old", "rps"])),
        Check("P4p99.new/old", "HTTP (b) p99: new / old", ratio(m["new", "p99"], m["old", "p99"])),
    ]  # fmt: skip
    meta = machine_info()
    meta.update(sides=labels, config={k: getattr(config, k) for k in config.__slots__})
    return PartResult(
        part="compare http", meta=meta, measurements=list(m.values()), checks=checks,
        extra={"notes": notes},
    )  # fmt: skip


def check_checkout(other: Path) -> str | None:
    """Why ``other`` cannot be compared with, or None."""
    if not (other / "trio_bg" / "__init__.py").is_file():
        return f"{other} has no trio_bg package (trio_bg/__init__.py)"
    return None


def write(path: Path, parts: list[PartResult]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    data = {"parts": {p.part: p.to_json() for p in parts}}
    path.write_text(json.dumps(data, indent=2) + "\n")


if __name__ == "__main__":
    sys.exit(worker(sys.stdin, sys.stdout))
