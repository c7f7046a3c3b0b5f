"""Micro benchmarks: what a trio_bg task costs next to a raw trio task and an anyio task handle.

Every sample is one fresh ``trio.run`` (``anyio.run(..., backend="trio")`` for anyio), timed
inside the run with ``time.perf_counter`` (the event loop's own start-up is not counted), after a
``gc.collect()``. The garbage collector stays enabled during the measurement, as in production.
The variants of one figure are interleaved round by round, in an order rotated every round, so
that a noisy neighbour on the shared machine hits them all alike.
"""

from __future__ import annotations

import functools
import gc
import importlib.metadata
import random
import sys
import time
import tracemalloc
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import trio
import trio.testing

import trio_bg

from .model import Check, Measurement, PartResult, code_version, machine_info, ratio, rotated

R = TypeVar("R")

# -- the work ------------------------------------------------------------------------------------


async def noop() -> int:
    return 1


async def idle() -> None:
    await trio.sleep_forever()


def sync_noop() -> int:
    return 1


# -- configuration -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class MicroConfig:
    spawn_tasks: int
    spawn_rounds: int
    memory_tasks: int
    memory_rounds: int
    cancel_live_tasks: int
    cancel_calls: int
    cancel_rounds: int
    cancel_all_sizes: tuple[int, int]
    cancel_all_rounds: int
    thread_calls: int
    thread_rounds: int


FULL = MicroConfig(
    spawn_tasks=100_000,
    spawn_rounds=5,
    memory_tasks=10_000,
    memory_rounds=5,
    cancel_live_tasks=100_000,
    cancel_calls=200,
    cancel_rounds=3,
    cancel_all_sizes=(10_000, 100_000),
    cancel_all_rounds=5,
    thread_calls=2_000,
    thread_rounds=5,
)
QUICK = MicroConfig(
    spawn_tasks=5_000,
    spawn_rounds=2,
    memory_tasks=1_000,
    memory_rounds=2,
    cancel_live_tasks=10_000,
    cancel_calls=50,
    cancel_rounds=2,
    cancel_all_sizes=(1_000, 10_000),
    cancel_all_rounds=2,
    thread_calls=200,
    thread_rounds=2,
)


def anyio_version() -> tuple[int, ...] | None:
    """anyio's version if it is installed and has task handles (>= 4.14), else None."""
    try:
        text = importlib.metadata.version("anyio")
    except importlib.metadata.PackageNotFoundError:
        return None
    version = tuple(int(p) for p in text.split(".")[:2] if p.isdigit())
    return version if version >= (4, 14) else None


def _trio_run(fn: Callable[[int], Awaitable[R]], n: int) -> R:
    return trio.run(fn, n)


def _anyio_run(fn: Callable[[int], Awaitable[R]], n: int) -> R:
    import anyio

    result: R = anyio.run(fn, n, backend="trio")
    return result


# -- P1: start and finish N no-op tasks ----------------------------------------------------------


async def spawn_raw(n: int) -> float:
    began = time.perf_counter()
    async with trio.open_nursery() as nursery:
        for _ in range(n):
            nursery.start_soon(noop)
    return time.perf_counter() - began


async def _scoped(fn: Callable[[], Awaitable[object]], results: list[object]) -> None:
    # The floor of any task that can be cancelled on its own and keeps its result: a wrapper
    # coroutine and one cancel scope, nothing else.
    with trio.CancelScope():
        results.append(await fn())


async def spawn_raw_scoped(n: int) -> float:
    results: list[object] = []
    began = time.perf_counter()
    async with trio.open_nursery() as nursery:
        for _ in range(n):
            nursery.start_soon(_scoped, noop, results)
    return time.perf_counter() - began


async def spawn_trio_bg(n: int) -> float:
    began = time.perf_counter()
    async with trio_bg.open_task_manager() as tm:
        for _ in range(n):
            tm.start_soon_named("noop", noop)
    return time.perf_counter() - began


def noop_instrument() -> object | None:
    """A fresh no-op trio_bg instrument, or None if this trio_bg has no instrument API."""
    api: Any = trio_bg  # the instrument API is newer than some of the trees this harness measures
    if not hasattr(api, "add_instrument"):
        return None

    # Every hook overridden with a no-op body: trio_bg calls only the hooks an instrument
    # overrides, so this is the dearest no-op instrument, and measures the cost of the calls
    # themselves (created, started and finished per task), not of anything they do.
    class Noop(api.Instrument):  # type: ignore[misc]  # (subclasses Any, for the check above)
        def manager_opened(self, manager: object) -> None:
            pass

        def manager_closed(self, manager: object, report: object) -> None:
            pass

        def task_created(self, handle: object) -> None:
            pass

        def task_started(self, handle: object) -> None:
            pass

        def task_retrying(self, handle: object, exc: BaseException, delay: float) -> None:
            pass

        def task_finished(self, handle: object) -> None:
            pass

        def task_rejected(self, manager: object, name: str, reason: str) -> None:
            pass

    return Noop()


def instrumented(instrument: object, fn: Callable[[], float]) -> Callable[[], float]:
    """``fn`` run with ``instrument`` installed (process-wide), removed again afterwards."""
    api: Any = trio_bg

    def run() -> float:
        api.add_instrument(instrument)
        try:
            return fn()
        finally:
            api.remove_instrument(instrument)

    return run


async def spawn_anyio(n: int) -> float:
    import anyio

    began = time.perf_counter()
    async with anyio.create_task_group() as tg:
        for _ in range(n):
            tg.start_soon(noop)
    return time.perf_counter() - began


# -- P1 with results: start N tasks, then wait for each one's result -----------------------------


async def _store(i: int, results: list[int], done: trio.Event) -> None:
    results[i] = await noop()
    done.set()


async def results_raw(n: int) -> float:
    began = time.perf_counter()
    results = [0] * n
    events: list[trio.Event] = []
    total = 0
    async with trio.open_nursery() as nursery:
        for i in range(n):
            done = trio.Event()
            events.append(done)
            nursery.start_soon(_store, i, results, done)
        for i, done in enumerate(events):
            await done.wait()
            total += results[i]
    elapsed = time.perf_counter() - began
    assert total == n
    return elapsed


async def results_trio_bg(n: int) -> float:
    began = time.perf_counter()
    total = 0
    async with trio_bg.open_task_manager() as tm:
        handles = [tm.start_soon_named("noop", noop) for _ in range(n)]
        for handle in handles:
            total += await handle.get()
    elapsed = time.perf_counter() - began
    assert total == n
    return elapsed


async def results_anyio(n: int) -> float:
    import anyio

    began = time.perf_counter()
    total = 0
    async with anyio.create_task_group() as tg:
        handles = [tg.start_soon(noop) for _ in range(n)]
        for handle in handles:
            total += await handle
    elapsed = time.perf_counter() - began
    assert total == n
    return elapsed


# -- P3: memory per idle task --------------------------------------------------------------------


async def _traced_growth(spawn: Callable[[], None], n: int) -> tuple[float, float]:
    """Bytes traced by tracemalloc, and objects tracked by the garbage collector, per task,
    once ``n`` spawned tasks are all blocked."""
    gc.collect()
    objects_before = len(gc.get_objects())
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for _ in range(n):
            spawn()
        await trio.testing.wait_all_tasks_blocked()
        gc.collect()
        after = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    objects_after = len(gc.get_objects())
    return (after - before) / n, (objects_after - objects_before) / n


async def memory_raw(n: int) -> tuple[float, float]:
    async with trio.open_nursery() as nursery:

        def spawn() -> None:
            nursery.start_soon(idle)

        per_task = await _traced_growth(spawn, n)
        nursery.cancel_scope.cancel()
    return per_task


async def memory_raw_scoped(n: int) -> tuple[float, float]:
    results: list[object] = []
    async with trio.open_nursery() as nursery:

        def spawn() -> None:
            nursery.start_soon(_scoped, idle, results)

        per_task = await _traced_growth(spawn, n)
        nursery.cancel_scope.cancel()
    return per_task


async def memory_trio_bg(n: int) -> tuple[float, float]:
    async with trio_bg.open_task_manager() as tm:

        def spawn() -> None:
            tm.start_soon_named("idle", idle)

        per_task = await _traced_growth(spawn, n)
        tm.cancel_all()
    return per_task


async def memory_anyio(n: int) -> tuple[float, float]:
    import anyio

    async with anyio.create_task_group() as tg:

        def spawn() -> None:
            tg.start_soon(idle)

        per_task = await _traced_growth(spawn, n)
        tg.cancel_scope.cancel()
    return per_task


# -- P6: cancel(id) among N live tasks; cancel_all() of N live tasks -------------------------------


def cancel_one_among(n: int, calls: int, seed: int) -> tuple[float, float]:
    """Time ``calls`` single ``tm.cancel(task_id)`` calls among ``n`` live tasks, on different
    ids; return the median and the minimum of one call, in microseconds."""

    async def main() -> tuple[float, float]:
        async with trio_bg.open_task_manager() as tm:
            handles = [tm.start_soon_named("idle", idle) for _ in range(n)]
            await trio.testing.wait_all_tasks_blocked()
            ids = [handles[i].id for i in random.Random(seed).sample(range(n), calls)]
            del handles
            timings: list[int] = []
            clock = time.perf_counter_ns
            cancel = tm.cancel
            for task_id in ids:
                began = clock()
                found = cancel(task_id)
                timings.append(clock() - began)
                assert found
            tm.cancel_all()
        timings.sort()
        return timings[len(timings) // 2] / 1000, timings[0] / 1000

    return trio.run(main)


async def cancel_all_trio_bg(n: int) -> float:
    async with trio_bg.open_task_manager() as tm:
        for _ in range(n):
            tm.start_soon_named("idle", idle)
        await trio.testing.wait_all_tasks_blocked()
        began = time.perf_counter()
        tm.cancel_all()
        await tm.wait_idle()
        elapsed = time.perf_counter() - began
    return elapsed


async def cancel_all_raw(n: int) -> float:
    began = 0.0
    async with trio.open_nursery() as nursery:
        for _ in range(n):
            nursery.start_soon(idle)
        await trio.testing.wait_all_tasks_blocked()
        began = time.perf_counter()
        nursery.cancel_scope.cancel()
    return time.perf_counter() - began


# -- the thread path: N sync no-op functions -----------------------------------------------------


async def threads_raw(n: int) -> float:
    began = time.perf_counter()
    async with trio.open_nursery() as nursery:
        for _ in range(n):
            nursery.start_soon(trio.to_thread.run_sync, sync_noop)
    return time.perf_counter() - began


async def threads_trio_bg(n: int) -> float:
    began = time.perf_counter()
    async with trio_bg.open_task_manager() as tm:
        for _ in range(n):
            tm.start_soon(sync_noop)
    return time.perf_counter() - began


# -- the part ------------------------------------------------------------------------------------

Variant = tuple[Measurement, Callable[[], float]]


def _interleaved(variants: list[Variant], rounds: int, title: str) -> None:
    for r in range(rounds):
        for m, fn in rotated(variants, r):
            gc.collect()
            m.samples.append(fn())
        _progress(f"{title}: round {r + 1}/{rounds}")


def _without_gc(fn: Callable[[], float]) -> Callable[[], float]:
    """``fn`` run with the garbage collector disabled (to tell its pauses from the rest)."""

    def run() -> float:
        gc.disable()
        try:
            return fn()
        finally:
            gc.enable()

    return run


def _progress(text: str) -> None:
    print(f"  [micro] {text}", file=sys.stderr, flush=True)


def _per_task_us(fn: Callable[[int], Awaitable[float]], n: int, *, anyio: bool = False) -> float:
    run = _anyio_run if anyio else _trio_run
    return run(fn, n) / n * 1e6


def run_micro(config: MicroConfig) -> PartResult:
    """Run every micro benchmark; return the measurements and the checks against the targets."""
    code = code_version()
    has_anyio = anyio_version() is not None
    if not has_anyio:
        _progress("anyio >= 4.14 is not installed: the anyio rows are skipped")
    measurements: list[Measurement] = []

    def make(key: str, label: str, unit: str, group: str) -> Measurement:
        m = Measurement(key=key, label=label, unit=unit, group=group)
        measurements.append(m)
        return m

    def per_task(
        fn: Callable[[int], Awaitable[float]], n: int, *, anyio: bool = False
    ) -> Callable[[], float]:
        return lambda: _per_task_us(fn, n, anyio=anyio)

    # P1 and P1 with results
    n = config.spawn_tasks
    g1 = f"P1 start + finish {n:,} no-op tasks"
    p1_raw = make("p1.raw", "raw trio nursery.start_soon", "us/task", g1)
    p1_floor = make(
        "p1.raw_scoped", "raw trio + wrapper + own CancelScope (the floor)", "us/task", g1
    )
    p1_bg = make("p1.trio_bg", 'trio_bg tm.start_soon_named("noop", noop)', "us/task", g1)
    g2 = f"P1 + result: {n:,} tasks, each result awaited"
    r_raw = make("p1r.raw", "raw trio, result via list + Event", "us/task", g2)
    r_bg = make("p1r.trio_bg", "trio_bg await handle.get()", "us/task", g2)
    variants: list[Variant] = [
        (p1_raw, per_task(spawn_raw, n)),
        (p1_floor, per_task(spawn_raw_scoped, n)),
        (p1_bg, per_task(spawn_trio_bg, n)),
        (r_raw, per_task(results_raw, n)),
        (r_bg, per_task(results_trio_bg, n)),
    ]
    if has_anyio:
        p1_any = make("p1.anyio", "anyio TaskGroup.start_soon (trio backend)", "us/task", g1)
        r_any = make("p1r.anyio", "anyio await handle (trio backend)", "us/task", g2)
        variants += [
            (p1_any, per_task(spawn_anyio, n, anyio=True)),
            (r_any, per_task(results_anyio, n, anyio=True)),
        ]
    p1_raw_nogc = make("p1.raw.nogc", "(gc disabled) raw trio nursery.start_soon", "us/task", g1)
    p1_bg_nogc = make("p1.trio_bg.nogc", "(gc disabled) trio_bg start_soon_named", "us/task", g1)
    variants += [
        (p1_raw_nogc, _without_gc(per_task(spawn_raw, n))),
        (p1_bg_nogc, _without_gc(per_task(spawn_trio_bg, n))),
    ]
    instrument = noop_instrument()
    p1_instr: Measurement | None = None
    notes: list[str] = []
    if instrument is None:
        note = "this trio_bg has no add_instrument(): the P1 row with a no-op instrument is skipped"
        notes.append(note)
        _progress(note)
    else:
        p1_instr = make(
            "p1.trio_bg.instrument", "trio_bg start_soon_named, one no-op instrument installed",
            "us/task", g1,
        )  # fmt: skip
        variants.append((p1_instr, instrumented(instrument, per_task(spawn_trio_bg, n))))
    _interleaved(variants, config.spawn_rounds, "P1")

    # P3
    n = config.memory_tasks
    g3 = f"P3 memory per idle task ({n:,} tasks in trio.sleep_forever())"
    memory: list[tuple[Measurement, Measurement, Callable[[], tuple[float, float]]]] = []
    kinds = [
        ("raw", "raw trio task", memory_raw),
        ("trio_bg", "trio_bg task", memory_trio_bg),
        ("raw_scoped", "raw + wrapper + own CancelScope", memory_raw_scoped),
    ]
    if has_anyio:
        kinds.append(("anyio", "anyio task (trio backend)", memory_anyio))
    for kind, label, fn in kinds:
        run = _anyio_run if kind == "anyio" else _trio_run
        memory.append((
            make(f"p3.{kind}", f"{label}: bytes (tracemalloc)", "B/task", g3),
            make(f"p3.objects.{kind}", f"{label}: objects tracked by the GC", "obj/task", g3),
            functools.partial(run, fn, n),
        ))  # fmt: skip
    for r in range(config.memory_rounds):
        for size, objects, measure in rotated(memory, r):
            gc.collect()
            per_task_bytes, per_task_objects = measure()
            size.samples.append(per_task_bytes)
            objects.samples.append(per_task_objects)
        _progress(f"P3: round {r + 1}/{config.memory_rounds}")
    m_raw, m_bg = memory[0][0], memory[1][0]

    # P6 cancel(id)
    n = config.cancel_live_tasks
    g6 = "P6 cancel"
    c_one = make(
        "p6.cancel_id",
        f"tm.cancel(id) among {n:,} live tasks: median of {config.cancel_calls} calls",
        "us/call",
        g6,
    )
    c_one_min = make("p6.cancel_id_fastest", "  the fastest of those calls", "us/call", g6)
    for r in range(config.cancel_rounds):
        gc.collect()
        med, fastest = cancel_one_among(n, config.cancel_calls, seed=r)
        c_one.samples.append(med)
        c_one_min.samples.append(fastest)
        _progress(f"P6 cancel(id): round {r + 1}/{config.cancel_rounds}")

    # P6 cancel_all()
    small, large = config.cancel_all_sizes
    ca: dict[tuple[str, int], Measurement] = {}
    variants = []
    for size in (small, large):
        ca["trio_bg", size] = make(
            f"p6.cancel_all.trio_bg.{size}",
            f"trio_bg cancel_all() + wait_idle(), {size:,} tasks",
            "us/task",
            g6,
        )
        ca["raw", size] = make(
            f"p6.cancel_all.raw.{size}",
            f"raw cancel_scope.cancel() until exited, {size:,} tasks",
            "us/task",
            g6,
        )
        variants += [
            (ca["trio_bg", size], per_task(cancel_all_trio_bg, size)),
            (ca["raw", size], per_task(cancel_all_raw, size)),
        ]
    _interleaved(variants, config.cancel_all_rounds, "P6 cancel_all")

    # threads
    n = config.thread_calls
    gt = f"Thread path: {n:,} sync no-op functions"
    t_raw = make("threads.raw", "raw nursery.start_soon(trio.to_thread.run_sync, f)", "us/call", gt)
    t_bg = make("threads.trio_bg", "trio_bg tm.start_soon(f)", "us/call", gt)
    variants = [(t_raw, per_task(threads_raw, n)), (t_bg, per_task(threads_trio_bg, n))]
    _interleaved(variants, config.thread_rounds, "threads")

    by_key = {m.key: m for m in measurements}
    checks = [
        Check("P1", "P1 start+finish: trio_bg / raw trio", ratio(p1_bg, p1_raw), target=1.25),
        Check(
            "P1floor",
            "(floor) P1 raw trio + wrapper + own CancelScope / raw trio",
            ratio(p1_floor, p1_raw),
            note="what any separately cancellable task costs; trio_bg cannot go below it",
        ),
        Check("P1r", "P1 + result: trio_bg / raw trio", ratio(r_bg, r_raw)),
    ]
    if p1_instr is not None:
        checks.append(
            Check("P1instr", "P1 added cost per task (µs) of one no-op instrument",
                  p1_instr.median - p1_bg.median, unit="us",
                  note="median with the instrument minus median without, same rounds")
        )  # fmt: skip
    checks += [
        Check(
            "P1nogc",
            "P1 start+finish, gc disabled: trio_bg / raw trio",
            ratio(p1_bg_nogc, p1_raw_nogc),
            note="the ratio without collector pauses",
        ),
    ]
    if has_anyio:
        checks += [
            Check("P2", "P2 start+finish: trio_bg / anyio", ratio(p1_bg, by_key["p1.anyio"]),
                  target=0.5),
            Check("P2r", "P2 + result: trio_bg / anyio", ratio(r_bg, by_key["p1r.anyio"]),
                  note="no target given; shown beside P2"),
            Check("P2a", "(context) anyio / raw trio, start+finish",
                  ratio(by_key["p1.anyio"], p1_raw), note="PEERS.md: measured 2.8x"),
        ]  # fmt: skip
    checks += [
        Check("P3", "P3 memory per idle task: trio_bg / raw trio", ratio(m_bg, m_raw), target=1.5),
        Check("P3floor", "(floor) P3 raw trio + wrapper + own CancelScope / raw trio",
              ratio(by_key["p3.raw_scoped"], m_raw),
              note="what any separately cancellable task costs; trio_bg cannot go below it"),
        Check("P3o", "P3 GC-tracked objects per idle task: trio_bg / raw trio",
              ratio(by_key["p3.objects.trio_bg"], by_key["p3.objects.raw"]),
              note="no target given; what a collection must traverse per in-flight task"),
        Check("P6id", "P6 cancel(id) among live tasks, median call", c_one.median, unit="us",
              target=50.0),
    ]  # fmt: skip
    for size in (small, large):
        checks.append(
            Check(f"P6all{size}", f"P6 cancel_all {size:,}: trio_bg / raw trio",
                  ratio(ca["trio_bg", size], ca["raw", size]), target=2.0)
        )  # fmt: skip
    for kind in ("trio_bg", "raw"):
        checks.append(
            Check(f"P6lin.{kind}", f"P6 cancel-all per-task cost {large:,} / {small:,}: {kind}",
                  ratio(ca[kind, large], ca[kind, small]), target=1.5,
                  note="linear growth is ~1; quadratic would be ~"
                  f"{large // small}; 1.5 is this harness's line")
        )  # fmt: skip
    checks.append(Check("threads", "Thread path: trio_bg / raw trio", ratio(t_bg, t_raw)))

    meta = machine_info()
    meta["config"] = {k: getattr(config, k) for k in config.__slots__}
    if meta["trio_bg_code"] != code:
        notes.append(
            f"trio_bg changed during the run ({code} -> {meta['trio_bg_code']}); "
            f"the figures are for the code imported at the start ({code})"
        )
    meta["trio_bg_code"] = code
    return PartResult(
        part="micro", meta=meta, measurements=measurements, checks=checks,
        extra={"notes": notes},
    )  # fmt: skip


def profile_spawn(n: int) -> tuple[float, Any]:
    """Run the trio_bg P1 case once under cProfile; return its time and the profile."""
    import cProfile

    profiler = cProfile.Profile()
    gc.collect()
    profiler.enable()
    elapsed = trio.run(spawn_trio_bg, n)
    profiler.disable()
    return elapsed, profiler
