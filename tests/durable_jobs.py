"""The jobs of the durable-queue tests, and the queue the worker processes run.

Worker processes run ``python -m trio_bg worker tests.durable_jobs:queue``; the queue reads its
Redis URL and reclaim timeout from the environment (``TRIO_BG_TEST_REDIS_URL``,
``TRIO_BG_TEST_RECLAIM``). The test process builds its own queue on the fixture's Redis with
:func:`make_queue`, which registers the same functions under the same names.

Side effects are counted in Redis itself (INCR on ``effects:<tag>``), over a plain socket, so a
test can tell how many times each job's body ran, in whichever process.
"""

from __future__ import annotations

import os
from typing import Literal
from urllib.parse import urlsplit

import trio

from trio_bg import Retry
from trio_bg.durable import DurableQueue

QUEUE_NAME = "tests"


async def redis_command(url: str, *args: str) -> bytes:
    """Send one command to Redis over a fresh socket; return the raw reply line."""
    parts = urlsplit(url)
    stream = await trio.open_tcp_stream(parts.hostname or "127.0.0.1", parts.port or 6379)
    async with stream:
        payload = f"*{len(args)}\r\n" + "".join(f"${len(a.encode())}\r\n{a}\r\n" for a in args)
        await stream.send_all(payload.encode())
        reply = b""
        while not reply.endswith(b"\r\n"):
            chunk = await stream.receive_some(4096)
            if not chunk:
                raise ConnectionError("Redis closed the connection")
            reply += chunk
        return reply


def _url() -> str:
    return os.environ.get("TRIO_BG_TEST_REDIS_URL", "redis://127.0.0.1:6379")


async def count_effect(tag: str) -> None:
    await redis_command(_url(), "INCR", f"effects:{tag}")


async def add(a: int, b: int) -> int:
    return a + b


async def record(tag: str) -> str:
    """Count one run of ``tag``; return it."""
    await count_effect(tag)
    return tag


async def slow(tag: str, seconds: float) -> str:
    """Count a start of ``tag``, sleep, count a finished run; return it."""
    await redis_command(_url(), "INCR", f"started:{tag}")
    await trio.sleep(seconds)
    await count_effect(tag)
    return tag


async def fail(message: str) -> None:
    raise ValueError(message)


async def flaky(tag: str, failures: int) -> int:
    """Fail the first ``failures`` runs of ``tag``; then return how many runs it took."""
    reply = await redis_command(_url(), "INCR", f"effects:{tag}")
    runs = int(reply[1:].strip())
    if runs <= failures:
        raise RuntimeError(f"run {runs} of {tag} fails")
    return runs


async def returns_set() -> set[int]:
    return {1, 2}


async def reports(steps: int, release: str) -> int:
    """Report ``k / steps`` after each step, then wait until the file ``release`` exists."""
    import trio_bg

    for k in range(1, steps + 1):
        trio_bg.report_progress(k / steps, f"step {k} of {steps}")
        await trio.sleep(0.01)
    # The test creates the file from its own process: nothing to wait on but the file.
    while not await trio.Path(release).exists():  # noqa: ASYNC110
        await trio.sleep(0.02)
    return steps


def make_queue(url: str, **options: float) -> DurableQueue:
    """A queue on ``url`` with every job of this module registered."""
    queue = DurableQueue(url, name=QUEUE_NAME, **options)  # type: ignore[arg-type]
    for job in (add, record, slow, fail, returns_set, reports):
        queue.task(job)
    queue.task(retry=Retry(attempts=3, backoff=0.2, jitter=False))(flaky)
    return queue


_reclaim = os.environ.get("TRIO_BG_TEST_RECLAIM")
queue = (
    make_queue(_url())  # the queue's own default reclaim timeout
    if not _reclaim
    else make_queue(_url(), reclaim_timeout=float(_reclaim))
)

if os.environ.get("TRIO_BG_TEST_PERIODIC"):  # the schedule tests' worker processes only

    @queue.periodic(every=float(os.environ["TRIO_BG_TEST_PERIODIC"]), overlap="allow", name="tick")
    async def tick() -> None:
        await count_effect("tick")


if os.environ.get("TRIO_BG_TEST_PERIODICS"):  # the catch-up tests: one job per rule

    def _register_periodic(catch_up: Literal["latest", "all", "none"]) -> None:
        async def tick() -> None:
            await count_effect(f"tick-{catch_up}")

        queue.periodic(
            every=float(os.environ["TRIO_BG_TEST_PERIODICS"]),
            catch_up=catch_up,
            overlap="allow",
            name=f"tick-{catch_up}",
        )(tick)

    for _rule in ("latest", "all", "none"):
        _register_periodic(_rule)
