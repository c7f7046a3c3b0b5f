"""HTTP benchmark: Hypercorn's trio worker serving each app of :mod:`benchmarks.apps`.

The method of ``shared/notes/http-baseline.md``: the server (:mod:`benchmarks.server`) runs in a
subprocess pinned to CPU 0 with ``taskset -c 0``; ``wrk -t1 -c32 --latency`` runs pinned to
CPU 1, on loopback, for ``duration`` seconds after an unmeasured warm-up of ``warmup`` seconds.
Each run starts a fresh server. The server saturates its core, so the steadier figure is its CPU
time per request: ``utime + stime`` of the server process (``/proc/PID/stat``, all threads)
over the measured window, divided by the requests ``wrk`` completed in it. The cases are
interleaved run by run, and the table reports medians over the runs.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .apps import CASES
from .model import Check, Measurement, PartResult, code_version, machine_info, ratio, rotated

ROOT = Path(__file__).resolve().parent.parent
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True, slots=True)
class HttpConfig:
    runs: int
    duration: int
    warmup: int
    connections: int = 32
    threads: int = 1
    runner: str = "hypercorn"
    """``hypercorn`` (``hypercorn.trio.serve``) or ``trio_bg`` (``trio_bg.serve`` defaults)."""


FULL = HttpConfig(runs=3, duration=10, warmup=2)
QUICK = HttpConfig(runs=1, duration=2, warmup=1)


def _install_wrk() -> None:
    """Install Debian's wrk when running as root on a machine with apt-get (as CI does)."""
    if shutil.which("apt-get") is None or os.geteuid() != 0:
        return
    for command in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", "wrk"]):
        subprocess.run(
            command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=300, check=False
        )


def missing_tool() -> str | None:
    """Why the HTTP part cannot run here, or None if it can (installing wrk if it may)."""
    if shutil.which("wrk") is None:
        _install_wrk()
    if shutil.which("wrk") is None:
        return "wrk is not installed (apt-get install wrk): the HTTP part is skipped"
    if not Path("/proc/self/stat").exists():
        return "/proc is not available (Linux only): the HTTP part is skipped"
    return None


def _pin(cpu: int) -> list[str]:
    """``taskset -c cpu`` when there are two cores and taskset exists; else nothing."""
    if shutil.which("taskset") is None or (os.cpu_count() or 1) < 2:
        return []
    return ["taskset", "-c", str(cpu)]


# -- wrk -------------------------------------------------------------------------------------------

_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3, "h": 3600e3}
_DURATION = r"([\d.]+)(us|ms|s|m|h)"


@dataclass(frozen=True, slots=True)
class WrkResult:
    requests: int
    seconds: float
    rps: float
    p50_ms: float
    p99_ms: float
    socket_errors: dict[str, int]
    non_2xx: int


def _ms(number: str, unit: str) -> float:
    return float(number) * _UNITS[unit]


def parse_wrk(text: str) -> WrkResult:
    """Read the figures out of ``wrk --latency`` output."""
    done = re.search(r"(\d+) requests in " + _DURATION, text)
    rps = re.search(r"Requests/sec:\s*([\d.]+)", text)
    p50 = re.search(r"^\s*50%\s+" + _DURATION, text, re.MULTILINE)
    p99 = re.search(r"^\s*99%\s+" + _DURATION, text, re.MULTILINE)
    if not (done and rps and p50 and p99):
        raise RuntimeError(f"could not parse wrk's output:\n{text}")
    errors: dict[str, int] = {}
    found = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    if found:
        errors = dict(zip(("connect", "read", "write", "timeout"), map(int, found.groups()),
                          strict=True))  # fmt: skip
    non_2xx = re.search(r"Non-2xx or 3xx responses:\s*(\d+)", text)
    return WrkResult(
        requests=int(done.group(1)),
        seconds=_ms(done.group(2), done.group(3)) / 1e3,
        rps=float(rps.group(1)),
        p50_ms=_ms(p50.group(1), p50.group(2)),
        p99_ms=_ms(p99.group(1), p99.group(2)),
        socket_errors=errors,
        non_2xx=int(non_2xx.group(1)) if non_2xx else 0,
    )


def run_wrk(url: str, config: HttpConfig, seconds: int, *, latency: bool) -> str:
    command = [
        *_pin(1), "wrk", f"-t{config.threads}", f"-c{config.connections}", f"-d{seconds}s",
        *(["--latency"] if latency else []), url,
    ]  # fmt: skip
    done = subprocess.run(
        command, capture_output=True, text=True, timeout=seconds + 30, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"wrk failed ({done.returncode}): {done.stderr or done.stdout}")
    return done.stdout


# -- the server ------------------------------------------------------------------------------------


def subject_command(
    trio_bg_root: Path, module: str, *args: str
) -> tuple[list[str], dict[str, str]]:
    """The command and environment that run ``python -m module args`` with trio_bg imported
    from the checkout ``trio_bg_root`` (and this harness's ``benchmarks``): see
    :mod:`benchmarks.subject`."""
    command = [sys.executable, "-P", str(ROOT / "benchmarks" / "subject.py"), module, *args]
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": str(trio_bg_root)}
    return command, env


class Server:
    """One :mod:`benchmarks.server` subprocess; stopped (by its PID) on exit.

    It imports trio_bg from the checkout ``trio_bg_root`` (this tree by default), and fails to
    start if the server reports a trio_bg from anywhere else.
    """

    def __init__(
        self,
        app: str,
        workdir: Path,
        *,
        runner: str = "hypercorn",
        gc_off: bool = False,
        profile_file: Path | None = None,
        trio_bg_root: Path = ROOT,
    ) -> None:
        self.log_path = workdir / "server.log"
        self.stats_path = workdir / "stats.json"
        self.stats_path.unlink(missing_ok=True)
        self.trio_bg_root = trio_bg_root.resolve()
        command, env = subject_command(
            self.trio_bg_root, "benchmarks.server", app,
            "--stats-file", str(self.stats_path), "--gc", "off" if gc_off else "on",
            "--runner", runner,
            *(["--profile-file", str(profile_file)] if profile_file is not None else []),
        )  # fmt: skip
        with self.log_path.open("w") as log:
            self.proc = subprocess.Popen(
                [*_pin(0), *command], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT
            )
        self.url = self._wait_ready()

    def _wait_ready(self, timeout: float = 60.0) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = re.search(
                r"^READY (\S+) trio_bg=(.+)$", self.log_path.read_text(), re.MULTILINE
            )
            if found:
                imported = Path(found.group(2)).resolve()
                if not imported.is_relative_to(self.trio_bg_root):
                    self.stop()
                    raise RuntimeError(
                        f"the server imported trio_bg from {imported}, not {self.trio_bg_root}"
                    )
                return found.group(1) + "/"
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"the server did not start:\n{self.log_path.read_text()}")

    def cpu_seconds(self) -> float:
        """utime + stime of the server process (all its threads) so far."""
        with open(f"/proc/{self.proc.pid}/stat", encoding="ascii") as f:
            fields = f.read().rpartition(")")[2].split()
        # fields[0] is field 3 (state); utime and stime are fields 14 and 15.
        return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS

    def begin_window(self) -> None:
        self.proc.send_signal(signal.SIGUSR1)
        time.sleep(0.05)

    def end_window(self, timeout: float = 30.0) -> dict[str, Any]:
        import json

        self.proc.send_signal(signal.SIGUSR2)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.stats_path.exists():
                stats: dict[str, Any] = json.loads(self.stats_path.read_text())
                return stats
            if self.proc.poll() is not None:
                break
            time.sleep(0.02)
        raise RuntimeError(f"the server wrote no statistics:\n{self.log_path.read_text()}")

    def stop(self, timeout: float = 30.0) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def __enter__(self) -> Server:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


@dataclass(slots=True)
class RunResult:
    case: str
    wrk: WrkResult
    cpu_us_per_request: float
    gc: dict[str, Any]
    log_tail: str = ""
    notes: list[str] = field(default_factory=list[str])


def measure_once(
    case: str,
    config: HttpConfig,
    workdir: Path,
    *,
    gc_off: bool = False,
    profile_file: Path | None = None,
    trio_bg_root: Path = ROOT,
) -> RunResult:
    """Start a fresh server for ``case`` (with trio_bg from ``trio_bg_root``), warm it up,
    measure one window, stop it."""
    app = CASES[case][0]
    with Server(
        app, workdir, runner=config.runner, gc_off=gc_off, profile_file=profile_file,
        trio_bg_root=trio_bg_root,
    ) as server:  # fmt: skip
        run_wrk(server.url, config, config.warmup, latency=False)
        server.begin_window()
        cpu_before = server.cpu_seconds()
        output = run_wrk(server.url, config, config.duration, latency=True)
        cpu_after = server.cpu_seconds()
        gc_stats = server.end_window()
    result = parse_wrk(output)
    cpu = (cpu_after - cpu_before) / max(result.requests, 1) * 1e6
    gc_stats["requests"] = result.requests
    run = RunResult(case=case, wrk=result, cpu_us_per_request=cpu, gc=gc_stats)
    log = server.log_path.read_text()
    run.log_tail = "\n".join(log.splitlines()[-5:])
    if result.non_2xx or any(result.socket_errors.values()):
        run.notes.append(
            f"wrk reported errors: non-2xx={result.non_2xx} socket={result.socket_errors}"
        )
    return run


def _progress(text: str) -> None:
    print(f"  [http] {text}", file=sys.stderr, flush=True)


def run_http(config: HttpConfig, workdir: Path) -> PartResult:
    """Measure every case ``config.runs`` times, interleaved; return the table and the checks."""
    measurements: list[Measurement] = []
    per_case: dict[str, dict[str, Measurement]] = {}
    for case, (_, description) in CASES.items():
        group = f"HTTP ({case}) {description}"
        per_case[case] = {
            "rps": Measurement(f"http.{case}.rps", "req/s", "req/s", group=group,
                               lower_is_better=False),
            "p50": Measurement(f"http.{case}.p50", "p50 latency", "ms", group=group),
            "p99": Measurement(f"http.{case}.p99", "p99 latency", "ms", group=group),
            "cpu": Measurement(f"http.{case}.cpu", "server CPU per request", "us/req",
                               group=group),
        }  # fmt: skip
        measurements += per_case[case].values()
    gc_runs: dict[str, list[dict[str, Any]]] = {case: [] for case in CASES}
    notes: list[str] = []
    codes: list[str] = []
    for r in range(config.runs):
        for case in rotated(list(CASES), r):
            code = code_version()
            if code not in codes:
                codes.append(code)
            run = measure_once(case, config, workdir)
            m = per_case[case]
            m["rps"].samples.append(run.wrk.rps)
            m["p50"].samples.append(run.wrk.p50_ms)
            m["p99"].samples.append(run.wrk.p99_ms)
            m["cpu"].samples.append(run.cpu_us_per_request)
            gc_runs[case].append(run.gc)
            notes += [f"({case}) run {r + 1}: {n}" for n in run.notes]
            _progress(
                f"run {r + 1}/{config.runs} ({case}): {run.wrk.rps:.0f} req/s, "
                f"p99 {run.wrk.p99_ms:.1f} ms, {run.cpu_us_per_request:.0f} us/req"
            )
    a, b, c, d, e, f, g, h, i = (per_case[k] for k in "abcdefghi")
    checks = [
        Check("P4", "P4 server CPU/req: (b) trio_bg tiny / (a) raw", ratio(b["cpu"], a["cpu"]),
              target=1.10),
        Check("P4c", "P4 server CPU/req: (b) trio_bg tiny / (c) Starlette tiny",
              ratio(b["cpu"], c["cpu"]), note="no target given; < 1 means cheaper than Starlette"),
        Check("P4r", "req/s: (b) / (c) (higher is better)", ratio(b["rps"], c["rps"]),
              note="for comparison"),
        Check("P4f", "P4 server CPU/req: (b) trio_bg tiny / (f) raw nursery + tiny task",
              ratio(b["cpu"], f["cpu"]),
              note="(f): a nursery per request and one raw task, no trio_bg: the floor for (b)"),
        Check("P4g", "P4 server CPU/req: (b) trio_bg tiny / (g) raw nursery + scoped task",
              ratio(b["cpu"], g["cpu"]),
              note="(g): the task in its own cancel scope, as every trio_bg task: the stricter "
              "floor"),
        Check("P4floor", "(floor) P4 server CPU/req: (g) raw nursery + scoped task / (a) raw",
              ratio(g["cpu"], a["cpu"]),
              note="what a nursery per request and one separately cancellable task cost; "
              "trio_bg cannot go below it"),
        Check("P4h", "server CPU/req: (h) (b) + dashboard, Prometheus, OTel / (b)",
              ratio(h["cpu"], b["cpu"]),
              note="what seeing the tasks costs per request; the difference in us is printed too"),
        Check("P4hus", "server CPU/req added by dashboard + Prometheus + OTel (us)",
              h["cpu"].median - b["cpu"].median, unit="us"),
        Check("P5", "P5 p99: (d) 2 s tasks / (a) raw", ratio(d["p99"], a["p99"]), target=1.5),
        Check("P5e", "p99: (e) raw 2 s sleep, no trio_bg / (a) raw", ratio(e["p99"], a["p99"]),
              note="the same work without trio_bg, for reference"),
        Check("P5de", "p99: (d) trio_bg 2 s task / (e) raw 2 s sleep", ratio(d["p99"], e["p99"]),
              note="trio_bg's own share of P5"),
        Check("P5di", "p99: (d) trio_bg 2 s task / (i) its floor", ratio(d["p99"], i["p99"]),
              note="(i): a nursery per request and the 2 s task in its own scope, no trio_bg"),
        Check("P5ie", "(floor) p99: (i) nursery + scoped 2 s task / (e) raw 2 s sleep",
              ratio(i["p99"], e["p99"]),
              note="what running the 2 s wait as a task of its own costs in the tail, without "
              "trio_bg; (d)/(e) cannot go below it"),
        Check("P5cpu", "server CPU/req: (d) 2 s tasks / (a) raw", ratio(d["cpu"], a["cpu"]),
              note="for comparison"),
        Check("P5cpue", "server CPU/req: (d) trio_bg 2 s task / (e) raw 2 s sleep",
              ratio(d["cpu"], e["cpu"]), note="for comparison"),
    ]  # fmt: skip
    meta = machine_info()
    meta["config"] = {k: getattr(config, k) for k in config.__slots__}
    meta["trio_bg_code"] = ", ".join(codes)
    if len(codes) > 1:
        changes = " -> ".join(codes)
        notes.append(f"trio_bg changed between runs ({changes}): re-run for clean figures")
    meta["command"] = (
        f"server: {' '.join(_pin(0)) or '(unpinned)'} python -m benchmarks.server <app> "
        f"--runner {config.runner}; "
        f"load: {' '.join(_pin(1)) or '(unpinned)'} wrk -t{config.threads} "
        f"-c{config.connections} -d{config.duration}s --latency, after -d{config.warmup}s"
    )
    return PartResult(
        part="http",
        meta=meta,
        measurements=measurements,
        checks=checks,
        extra={"gc": gc_runs, "notes": notes},
    )
