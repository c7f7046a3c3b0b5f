"""The jobs of the journal tests, and the queue that worker processes run.

Worker processes run ``python -m trio_bg worker tests.journal_jobs:queue``; the queue reads its
file from ``TRIO_BG_TEST_JOURNAL`` and its lease from ``TRIO_BG_TEST_LEASE``. Side effects are
lines appended to the file named by ``TRIO_BG_TEST_EFFECTS`` (one ``write`` of a short line
with O_APPEND each: whole lines from any number of processes), so a test can count how many
times each job's body ran, in whichever process.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

import trio

from trio_bg import Retry
from trio_bg.durable import DurableQueue

QUEUE_NAME = "tests"


def effects_file() -> str:
    return os.environ.get("TRIO_BG_TEST_EFFECTS", "effects.txt")


def count_effect(tag: str) -> None:
    fd = os.open(effects_file(), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, f"{os.getpid()} {tag}\n".encode())
    finally:
        os.close(fd)


def effects(path: str | Path, tag_prefix: str = "") -> dict[str, int]:
    """How many runs of each tag the effects file holds."""
    counted: dict[str, int] = {}
    try:
        text = Path(path).read_text()
    except FileNotFoundError:
        return counted
    for line in text.splitlines():
        tag = line.split(" ", 1)[1]
        if tag.startswith(tag_prefix):
            counted[tag] = counted.get(tag, 0) + 1
    return counted


async def add(a: int, b: int) -> int:
    return a + b


async def record(tag: str) -> str:
    count_effect(tag)
    return tag


async def slow(tag: str, seconds: float) -> str:
    """Count a start of ``tag``, sleep, count a finished run; return it."""
    count_effect(f"started:{tag}")
    await trio.sleep(seconds)
    count_effect(tag)
    return tag


async def sleepy(seconds: float) -> None:
    """Registered with a 0.2 s timeout."""
    await trio.sleep(seconds)


async def fail(message: str) -> None:
    raise ValueError(message)


async def flaky(tag: str, failures: int) -> int:
    """Fail the first ``failures`` runs of ``tag``; then return how many runs it took."""
    count_effect(tag)
    runs = effects(effects_file()).get(tag, 0)
    if runs <= failures:
        raise RuntimeError(f"run {runs} of {tag} fails")
    return runs


async def reports(steps: int, release: str) -> int:
    """Report ``k / steps`` with a message after each step, then wait until the file named
    ``release`` exists (the test looks at the progress meanwhile)."""
    import trio_bg

    for k in range(1, steps + 1):
        trio_bg.report_progress(k / steps, f"step {k} of {steps}")
        await trio.sleep(0.01)
    # Another process creates the file: nothing to wait on but the file itself.
    while not await trio.Path(release).exists():  # noqa: ASYNC110
        await trio.sleep(0.02)
    return steps


def make_queue(url: str, **options: float) -> DurableQueue:
    """A queue on ``url`` with every job of this module registered."""
    queue = DurableQueue(url, name=QUEUE_NAME, **options)  # type: ignore[arg-type]
    for job in (add, record, slow, fail, reports):
        queue.task(job)
    queue.task(retry=Retry(attempts=3, backoff=0.1, jitter=False))(flaky)
    queue.task(timeout=0.2)(sleepy)
    return queue


queue = make_queue(
    "sqlite:///" + os.environ.get("TRIO_BG_TEST_JOURNAL", "jobs.db"),
    lease_timeout=float(os.environ.get("TRIO_BG_TEST_LEASE", "5")),
)

if os.environ.get("TRIO_BG_TEST_PERIODIC"):  # the schedule tests' worker processes only

    @queue.periodic(
        every=float(os.environ["TRIO_BG_TEST_PERIODIC"]),
        catch_up=os.environ.get("TRIO_BG_TEST_CATCH_UP", "latest"),  # type: ignore[arg-type]
        overlap="allow",
        name="tick",
    )
    async def tick() -> None:
        count_effect("tick")


if os.environ.get("TRIO_BG_TEST_PERIODICS"):  # the catch-up tests: one job per rule

    def _register_periodic(catch_up: Literal["latest", "all", "none"]) -> None:
        async def tick() -> None:
            count_effect(f"tick-{catch_up}")

        queue.periodic(
            every=float(os.environ["TRIO_BG_TEST_PERIODICS"]),
            catch_up=catch_up,
            overlap="allow",
            name=f"tick-{catch_up}",
        )(tick)

    for _rule in ("latest", "all", "none"):
        _register_periodic(_rule)
