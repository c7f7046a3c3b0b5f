"""A durable job's error is stored whatever the exception holds: a ``__str__`` that raises, a
lone surrogate, megabytes of text. The worker must still store and ack the job (never a poison
record), and the caller gets one :class:`JobFailed` with a message it can print."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
import trio

from trio_bg import TaskState
from trio_bg.durable import DurableQueue, JobFailed
from trio_bg.durable._serialization import ERROR_KEY, dumps


class StrRaises(Exception):
    def __str__(self) -> str:
        raise RuntimeError("no str for you")


class ReprRaises(Exception):
    def __repr__(self) -> str:
        raise RuntimeError("no repr for you")


async def raise_str_raises() -> None:
    raise StrRaises


async def raise_repr_raises() -> None:
    raise ReprRaises("plain")


async def raise_surrogate() -> None:
    raise ValueError("bad name \udcff")


async def raise_huge() -> None:
    raise ValueError("x" * 1_000_000)


@pytest.mark.parametrize(
    "exc",
    [StrRaises(), ValueError("\udcff\x00"), ValueError("y" * 1_000_000)],
    ids=["str-raises", "surrogate-and-nul", "a-megabyte"],
)
def test_the_redis_error_record_of_a_hostile_exception_is_json(exc: BaseException) -> None:
    record = json.loads(dumps(exc))[ERROR_KEY]
    message = record["message"]
    message.encode("utf-8")
    assert len(message) <= 1000


def test_an_unprintable_exception_is_named_in_its_error_record() -> None:
    assert json.loads(dumps(StrRaises()))[ERROR_KEY]["message"] == (
        "<unprintable StrRaises: RuntimeError in __str__>"
    )


@pytest.mark.parametrize(
    ("job", "message"),
    [
        (raise_str_raises, r"<unprintable StrRaises: RuntimeError in __str__>"),
        (raise_repr_raises, r"plain"),
        (raise_surrogate, r"bad name \\udcff"),
        (raise_huge, r"x{999}\u2026"),
    ],
)
async def test_a_journal_job_with_a_hostile_error_fails_cleanly(
    tmp_path: Path, job: Callable[[], Awaitable[None]], message: str
) -> None:
    queue = DurableQueue(f"sqlite:///{tmp_path / 'jobs.db'}", name="hostile")
    queue.task(job)
    async with queue.open_worker(concurrency=1, grace=1):
        handle = await queue.enqueue(job)
        with trio.fail_after(10), pytest.raises(JobFailed, match=rf"raised .*: {message}$"):
            await handle.get()
    assert handle.state is TaskState.FAILED
