"""What a benchmark run produces: measurements (samples over rounds), checks (ratios against
their targets) and the machine they were taken on. Everything here turns into plain JSON."""

from __future__ import annotations

import contextlib
import importlib.metadata
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(slots=True)
class Measurement:
    """One figure measured over several rounds: the table shows its median and its minimum."""

    key: str
    """Stable id, e.g. ``"p1.trio_bg"``; checks refer to measurements by it."""
    label: str
    unit: str
    samples: list[float] = field(default_factory=list[float])
    group: str = ""
    """The table section it is printed under."""
    lower_is_better: bool = True

    @property
    def rounds(self) -> int:
        return len(self.samples)

    @property
    def median(self) -> float:
        return statistics.median(self.samples) if self.samples else float("nan")

    @property
    def min(self) -> float:
        return min(self.samples) if self.samples else float("nan")

    @property
    def best(self) -> float:
        """The best round: the minimum, or the maximum where higher is better (req/s)."""
        if not self.samples:
            return float("nan")
        return min(self.samples) if self.lower_is_better else max(self.samples)

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data.update(rounds=self.rounds, median=self.median, min=self.min)
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Measurement:
        return cls(
            key=data["key"],
            label=data["label"],
            unit=data["unit"],
            samples=[float(x) for x in data["samples"]],
            group=data.get("group", ""),
            lower_is_better=data.get("lower_is_better", True),
        )


@dataclass(slots=True)
class Check:
    """A derived figure (a ratio of medians, or one median) against its target, if it has one.

    ``target`` is an upper bound (``value <= target`` meets it); ``None`` means the figure is
    shown for comparison only.
    """

    key: str
    label: str
    value: float
    unit: str = "x"
    target: float | None = None
    note: str = ""

    @property
    def met(self) -> bool | None:
        if self.target is None or self.value != self.value:  # no target, or NaN
            return None
        return self.value <= self.target

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["met"] = self.met
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Check:
        return cls(
            key=data["key"],
            label=data["label"],
            value=float(data["value"]),
            unit=data.get("unit", "x"),
            target=None if data.get("target") is None else float(data["target"]),
            note=data.get("note", ""),
        )


@dataclass(slots=True)
class PartResult:
    """The outcome of one part (``micro`` or ``http``) of a run."""

    part: str
    meta: dict[str, Any]
    measurements: list[Measurement]
    checks: list[Check]
    extra: dict[str, Any] = field(default_factory=dict[str, Any])
    """Part-specific detail (the HTTP part's garbage-collector statistics, per case)."""

    def measurement(self, key: str) -> Measurement:
        for m in self.measurements:
            if m.key == key:
                return m
        raise KeyError(key)

    def to_json(self) -> dict[str, Any]:
        return {
            "part": self.part,
            "meta": self.meta,
            "measurements": [m.to_json() for m in self.measurements],
            "checks": [c.to_json() for c in self.checks],
            "extra": self.extra,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> PartResult:
        return cls(
            part=data["part"],
            meta=dict(data["meta"]),
            measurements=[Measurement.from_json(m) for m in data["measurements"]],
            checks=[Check.from_json(c) for c in data["checks"]],
            extra=dict(data.get("extra", {})),
        )


def ratio(numerator: Measurement, denominator: Measurement) -> float:
    """The ratio of two medians (NaN if either is missing)."""
    den = denominator.median
    if den != den or den == 0:
        return float("nan")
    return numerator.median / den


def rotated(items: Sequence[Any], round_index: int) -> list[Any]:
    """``items`` rotated by the round number, so no variant always runs first (or last)."""
    if not items:
        return []
    k = round_index % len(items)
    return [*items[k:], *items[:k]]


def _version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.partition(":")[2].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def code_version(root: str | os.PathLike[str] | None = None) -> str:
    """The git commit of the checkout ``root`` (this one by default), with ``+dirty`` if its
    trio_bg/ has uncommitted changes."""
    if root is None:
        root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

    def git(*args: str) -> str:
        done = subprocess.run(
            ["git", *args], cwd=root, capture_output=True, text=True, timeout=10, check=False
        )
        return done.stdout.strip() if done.returncode == 0 else ""

    try:
        commit = git("rev-parse", "--short", "HEAD") or "unknown"
        dirty = git("status", "--porcelain", "--", "trio_bg")
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return f"{commit}+dirty" if dirty else commit


def machine_info() -> dict[str, Any]:
    """The machine and the versions a result was measured with."""
    load: list[float] = []
    with contextlib.suppress(OSError):
        load = [round(x, 2) for x in os.getloadavg()]
    return {
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "nproc": os.cpu_count(),
        "cpu_model": _cpu_model(),
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "loadavg_at_end": load,
        "trio_bg_code": code_version(),
        "versions": {
            name: _version(name)
            for name in ("trio", "anyio", "hypercorn", "starlette", "h11", "trio-bg")
        },
    }
