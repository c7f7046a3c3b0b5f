"""The random workload the property tests share (test_core_properties, test_instruments and
test_chaos): a step of a schedule, drawn by hypothesis, and the task functions the steps start.

A :class:`Step` says what to start (``kind``), after how long (``gap``), for how long the task
works (``seconds``), and one small number each harness reads its own way (``n``: the handle to
cancel, how many attempts fail before one succeeds, which key, which request variant). The task
kinds every harness knows are started by :func:`start_step`; a harness handles its own kinds
(cancel, groups, requests) and passes the rest here.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import trio
from hypothesis import strategies as st

from trio_bg import Retry, TaskHandle, TaskStarter

TASK_KINDS = ("succeed", "fail", "sleep", "forever", "timeout", "shield", "retry", "keyed")
"""The kinds :func:`start_step` starts."""


@dataclass(frozen=True)
class Step:
    kind: str
    gap: int  # seconds to wait before the step
    seconds: int  # how long the task's work takes
    n: int  # which handle to cancel / failures before success / key / request variant


def steps(
    kinds: Sequence[str], *, gaps: tuple[int, int] = (0, 2), most_n: int = 19
) -> st.SearchStrategy[Step]:
    """Steps of the given kinds, with gaps and work of 0-4 s."""
    return st.builds(
        Step,
        kind=st.sampled_from(kinds),
        gap=st.integers(*gaps),
        seconds=st.integers(0, 4),
        n=st.integers(0, most_n),
    )


class PlannedFailure(Exception):
    """What a ``fail`` task raises."""


async def succeed(seconds: float) -> int:
    await trio.sleep(seconds)
    return 1


async def fail(seconds: float) -> None:
    await trio.sleep(seconds)
    raise PlannedFailure(f"planned failure after {seconds:g} s")


class Flaky:
    """A task that fails its first ``failures`` attempts (ConnectionError), each after
    ``seconds``, then returns ``"recovered"``."""

    def __init__(self, failures: int, seconds: float) -> None:
        self.failures = failures
        self.seconds = seconds
        self.attempts = 0

    async def run(self) -> str:
        self.attempts += 1
        await trio.sleep(self.seconds)
        if self.attempts <= self.failures:
            raise ConnectionError(f"attempt {self.attempts}")
        return "recovered"


def start_step(starter: TaskStarter, step: Step) -> TaskHandle[Any]:
    """Start the task of a step whose kind is in :data:`TASK_KINDS`.

    ``timeout`` works a second longer than its timeout (and is retried once for an odd ``n``);
    ``shield`` works three times ``seconds``; ``retry`` fails ``n % 5`` attempts before it
    succeeds, with up to 3 attempts; ``keyed`` uses one of two keys.
    """
    kind, seconds, n = step.kind, step.seconds, step.n
    if kind == "succeed":
        return starter.start_soon(succeed, seconds)
    if kind == "fail":
        return starter.start_soon(fail, seconds)
    if kind == "sleep":
        return starter.start_soon(trio.sleep, 100 + seconds)
    if kind == "forever":
        return starter.start_soon(trio.sleep_forever, shield=n % 3 == 0)
    if kind == "timeout":
        retry = Retry(attempts=2, backoff=1, jitter=False) if n % 2 else None
        return starter.start_soon(succeed, seconds + 1, timeout=seconds, retry=retry)
    if kind == "shield":
        return starter.start_soon(succeed, 3 * seconds, shield=True)
    if kind == "retry":
        retry = Retry(attempts=3, backoff=seconds / 2, jitter=False)
        return starter.start_soon_named("flaky", Flaky(n % 5, seconds).run, retry=retry)
    if kind == "keyed":
        return starter.start_soon_named("keyed", succeed, seconds, key=f"k{n % 2}")
    raise ValueError(f"not a task kind: {kind!r}")


def work_for(
    kind: str, seconds: int, failures: int
) -> tuple[Callable[[], Awaitable[object]], object]:
    """A task function for the stateful harness and the value it returns if it succeeds
    (``object()``: identity tells the task's own value from any other). ``hang`` never ends;
    ``timeout`` works a second longer than ``seconds``; ``fail`` raises PlannedFailure; ``retry``
    raises ConnectionError for its first ``failures`` attempts."""
    value = object()
    flaky = Flaky(failures if kind == "retry" else 0, seconds)

    async def work() -> object:
        if kind == "hang":
            await trio.sleep_forever()
        if kind == "timeout":
            await trio.sleep(seconds + 1)  # longer than its timeout
        elif kind == "fail":
            await fail(seconds)
        else:
            await flaky.run()
        return value

    return work, value
