"""JobSpec: a function registered with ``@queue.task``, and how a worker runs it under streaq."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from .._core._progress import reporter, sink
from .._core._retry import Retry
from .._core._text import safe_str
from ._progress import outbox_for

if TYPE_CHECKING:
    from ._periodic import PeriodicSpec
from ._serialization import check_result

if TYPE_CHECKING:
    from streaq import Worker

logger = logging.getLogger("trio_bg.durable")

REDELIVERIES = 3
"""Deliveries a job gets beyond its retry attempts, for runs lost with a worker (SIGKILL, a
lost Redis). Past ``attempts + REDELIVERIES`` deliveries streaq fails the job ("Max retry
attempts reached"), so a job that kills every worker that runs it cannot loop forever."""


@dataclass(frozen=True, slots=True)
class JobSpec:
    """What ``@queue.task`` registered: the function, its name in Redis and its options."""

    fn: Callable[..., Awaitable[Any]]
    name: str
    retry: Retry | None
    timeout: float | None
    periodic: PeriodicSpec | None = None
    """Its schedule, for a job registered with ``@queue.periodic``."""

    @property
    def max_deliveries(self) -> int:
        """Deliveries a job gets: its retry attempts and :data:`REDELIVERIES` lost runs."""
        return (self.retry.attempts if self.retry is not None else 1) + REDELIVERIES

    def retry_delay(self, error: Exception, tries: int) -> float | None:
        """Seconds to wait before another attempt after ``error`` on try ``tries``, or None
        if the job fails (no retry, not an exception it retries on, or its last attempt)."""
        retry = self.retry
        if retry is not None and tries < retry.attempts and isinstance(error, retry.on):
            return retry.delay(tries)
        return None

    def register(self, worker: Worker[Any], *, result_ttl: int) -> None:
        """Register the job with a streaq worker, wrapped so that:

        - an exception in ``retry.on`` before the last attempt becomes streaq's
          ``StreaqRetry`` with the backoff delay (streaq re-enqueues it, delayed);
        - any other exception, or one on the last attempt, is left to streaq, which stores it
          as a failed result (through the JSON serializer: a plain dict) and acks the message;
        - a return value JSON cannot carry becomes a TypeError (a failed result), instead of
          an error while storing it, which would crash the worker and leave a poison message.
        """
        from streaq import StreaqRetry  # only for Redis: streaq is the durable extra

        fn, name, retry = self.fn, self.name, self.retry
        attempts = retry.attempts if retry is not None else 1

        async def run(*args: Any, **kwargs: Any) -> Any:
            # This job's task context: report_progress inside it (and its threads) finds it.
            reporting = reporter.set(
                sink(outbox_for(worker, result_ttl).reporter(registered.context.task_id))
            )
            try:
                result = await fn(*args, **kwargs)
            except Exception as exc:
                tries = registered.context.tries
                if retry is not None and tries < retry.attempts and isinstance(exc, retry.on):
                    seconds = retry.delay(tries)
                    # One line for an expected retry (streaq's own, with two tracebacks, is
                    # filtered out); the traceback comes once, at the final failure.
                    logger.warning(
                        "job %s (%s) attempt %d/%d failed: %s: %s; retry in %.1f s",
                        name, registered.context.task_id, tries, retry.attempts,
                        type(exc).__name__, safe_str(exc, 300), seconds,
                    )  # fmt: skip
                    raise StreaqRetry(
                        f"{type(exc).__name__}: {exc}", delay=timedelta(seconds=seconds)
                    ) from None
                raise
            finally:
                reporter.reset(reporting)
            check_result(name, result)
            return result

        registered = worker.task(
            name=name,
            max_tries=attempts + REDELIVERIES,
            timeout=None if self.timeout is None else timedelta(seconds=self.timeout),
            ttl=result_ttl,
        )(run)
