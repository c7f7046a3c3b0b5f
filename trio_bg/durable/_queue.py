"""DurableQueue: jobs registered by name, enqueued into Redis Streams, run by streaq workers."""

from __future__ import annotations

# The durable package's internals (_queue, _handle, _results) are being redesigned around a
# journal; until then they share private state, as they did before the core moved.
# pyright: reportPrivateUsage=false
import hashlib
import inspect
import logging
import uuid
from collections.abc import Awaitable, Callable, Mapping
from contextlib import AsyncExitStack
from datetime import timedelta
from types import MappingProxyType, TracebackType
from typing import (
    TYPE_CHECKING,
    Any,
    NoReturn,
    TypeVar,
    TypeVarTuple,
    Unpack,
    cast,
    final,
    overload,
)

import trio
from coredis.exceptions import ResponseError
from streaq import Worker
from streaq.utils import now_ms

from .._core._callables import reject_non_function
from .._core._checks import check_optional_str, check_seconds
from .._core._retry import Retry
from .._core._starter import TaskStarter
from .._core._state import TaskState
from ._connection import client_options, first_failure, is_connection_failure
from ._exceptions import QueueUnavailable
from ._handle import DurableHandle
from ._jobs import JobSpec
from ._results import ResultPoller
from ._serialization import check_arguments, dumps, loads
from ._stats import CountingWorker, QueueStatistics, read_statistics

if TYPE_CHECKING:
    from typing import Self

T = TypeVar("T")
F = TypeVar("F", bound=Callable[..., Awaitable[Any]])
PosArgsT = TypeVarTuple("PosArgsT")

logger = logging.getLogger("trio_bg.durable")


@final
class DurableQueue:
    """A queue of durable jobs in Redis: enqueued here, run by ``python -m trio_bg worker``.

    ``DurableQueue(redis_url, name=...)`` only describes the queue; nothing connects until
    ``async with queue:`` (in the app's lifespan: coredis wants the task that opened its client
    to close it). Jobs are async functions registered with ``@queue.task``, by name, in a module
    that both the app and the workers import. Arguments and results travel as JSON, never
    pickle. Delivery is at-least-once: a job may run again if a worker dies while running it.

    Args:
        redis_url: ``redis://host:port/db`` of the Redis every app and worker shares.
        name: the queue's name; the Redis keys start with ``streaq:<name>:``.
        result_ttl: seconds a job's result is kept in Redis after it finished (whole seconds).
        reclaim_timeout: seconds after which a job held by a worker that stopped answering (it
            died, or lost Redis) is given to another worker; workers refresh their jobs every
            0.9 of it. Also how long a worker blocks reading the stream.
        poll_interval: seconds between two rounds of the result poller (see :meth:`enqueue`).
        enqueue_timeout: seconds an enqueue may take before it raises
            :class:`QueueUnavailable`.
    """

    __slots__ = (
        "_enqueue_timeout",
        "_jobs",
        "_jobs_by_fn",
        "_poll_interval",
        "_reclaim_timeout",
        "_result_ttl",
        "_results",
        "_stack",
        "_url",
        "_worker",
        "name",
    )

    def __init__(
        self,
        redis_url: str,
        *,
        name: str = "default",
        result_ttl: int = 600,
        reclaim_timeout: float = 60.0,
        poll_interval: float = 0.05,
        enqueue_timeout: float = 5.0,
    ) -> None:
        if not isinstance(cast(object, redis_url), str):
            raise TypeError(f"redis_url must be a str, got {type(redis_url).__name__}")
        if not redis_url.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError(f"redis_url must be a redis:// URL, got {redis_url!r}")
        if not isinstance(cast(object, name), str):
            raise TypeError(f"name must be a str, got {type(name).__name__}")
        if not name or ":" in name:
            raise ValueError(f"name must be a non-empty str without ':', got {name!r}")
        if isinstance(result_ttl, bool) or not isinstance(cast(object, result_ttl), int):
            raise TypeError(
                f"result_ttl must be an int of seconds, got {type(result_ttl).__name__}"
            )
        if result_ttl < 1:
            raise ValueError(f"result_ttl must be >= 1, got {result_ttl}")
        self._url = redis_url
        self.name = name
        """The queue's name (the Redis keys start with ``streaq:<name>:``)."""
        self._result_ttl = result_ttl
        self._reclaim_timeout = _positive("reclaim_timeout", reclaim_timeout)
        self._poll_interval = _positive("poll_interval", poll_interval)
        self._enqueue_timeout = _positive("enqueue_timeout", enqueue_timeout)
        self._jobs: dict[str, JobSpec] = {}
        self._jobs_by_fn: dict[Callable[..., Any], JobSpec] = {}
        self._worker: Worker[Any] | None = None
        self._stack: AsyncExitStack | None = None
        self._results = ResultPoller(queue_name=name, poll_interval=self._poll_interval)

    # -- registration ---------------------------------------------------------------------------

    @overload
    def task(self, fn: F, /) -> F: ...
    @overload
    def task(
        self,
        /,
        *,
        name: str | None = None,
        retry: Retry | None = None,
        timeout: float | None = None,
    ) -> Callable[[F], F]: ...

    def task(
        self,
        fn: F | None = None,
        /,
        *,
        name: str | None = None,
        retry: Retry | None = None,
        timeout: float | None = None,
    ) -> F | Callable[[F], F]:
        """Register an async function as a job of this queue; return the function unchanged.

        ``@queue.task`` or ``@queue.task(name="receipts.send", retry=Retry(attempts=5),
        timeout=30)``. The name (the function's ``__qualname__`` by default) is what travels
        to the workers, so the app and the workers must register the same functions under the
        same names, and a name is registered once per queue. ``retry`` retries a job that raised
        on the worker, after a backoff (``Retry.delay``, rounded up to streaq's 0.5 s
        scheduling tick); ``timeout`` cancels an attempt after that many seconds (it then fails
        with ``TimeoutError``).
        """
        if retry is not None and not isinstance(cast(object, retry), Retry):
            raise TypeError(f"retry must be a trio_bg.Retry or None, got {type(retry).__name__}")
        checked_timeout = None if timeout is None else _positive("timeout", timeout)
        check_optional_str("name", name)

        def register(fn: F) -> F:
            target: object = fn  # checked through another name: the check narrows its type
            if not inspect.iscoroutinefunction(target):
                reject_non_function("task", fn)
                raise TypeError(
                    f"durable jobs must be async functions, got {type(fn).__name__} "
                    f"{getattr(fn, '__qualname__', fn)!r}"
                )
            job_name = name or fn.__qualname__
            if job_name in self._jobs:
                raise ValueError(
                    f"durable queue {self.name!r} already has a job named {job_name!r}"
                )
            spec = JobSpec(fn=fn, name=job_name, retry=retry, timeout=checked_timeout)
            self._jobs[job_name] = spec
            self._jobs_by_fn[fn] = spec
            return fn

        if fn is not None:
            return register(fn)
        return register

    @property
    def jobs(self) -> Mapping[str, Callable[..., Awaitable[Any]]]:
        """The registered job functions by name (read-only)."""
        return MappingProxyType({name: spec.fn for name, spec in self._jobs.items()})

    # -- open / close ---------------------------------------------------------------------------

    @property
    def is_open(self) -> bool:
        return self._worker is not None

    async def __aenter__(self) -> Self:
        """Open the Redis client and start the result poller.

        Raises :class:`QueueUnavailable` if Redis cannot be reached (within
        ``enqueue_timeout``). Leaving the block stops the poller (waiters raise
        QueueUnavailable) and closes the client; jobs in Redis are not touched.
        """
        if self._stack is not None:
            raise RuntimeError(f"durable queue {self.name!r} is already open")
        worker = self.streaq_worker(block_seconds=self._enqueue_timeout)
        stack = AsyncExitStack()
        try:
            # Bounded by coredis's connect_timeout (enqueue_timeout): the client's context
            # holds a task group, which a cancel scope must not be wrapped around here.
            await stack.enter_async_context(worker)
        except BaseException as exc:
            await stack.aclose()
            self._raise_unavailable(exc, "open")
        nursery = await stack.enter_async_context(trio.open_nursery())
        stack.callback(nursery.cancel_scope.cancel)
        self._results = ResultPoller(queue_name=self.name, poll_interval=self._poll_interval)
        nursery.start_soon(self._results.run, worker)
        self._stack = stack
        self._worker = worker
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        stack, self._stack, self._worker = self._stack, None, None
        self._results.close()
        if stack is not None:
            await stack.aclose()

    if not TYPE_CHECKING:

        def __enter__(self) -> NoReturn:
            raise TypeError("use 'async with queue:', not 'with queue:'")

        def __exit__(self, *exc_info: object) -> None:  # pragma: no cover - never entered
            return None

    def _open_worker(self, method: str) -> Worker[Any]:
        worker = self._worker
        if worker is None:
            raise RuntimeError(
                f"durable queue {self.name!r} is not open: {method}() needs 'async with queue:' "
                "around it (in the app's lifespan)"
            )
        return worker

    # -- enqueue --------------------------------------------------------------------------------

    async def enqueue(
        self,
        fn: Callable[[Unpack[PosArgsT]], Awaitable[T]],
        *args: Unpack[PosArgsT],
        delay: float | None = None,
        key: str | None = None,
    ) -> DurableHandle[T]:
        """Enqueue a run of the job ``fn(*args)``; return its handle once Redis has it.

        ``delay=S`` makes the job runnable S seconds from now (at streaq's 0.5 s tick).
        ``key="order-42"``: while a job with that key is queued, delayed or running, enqueueing
        it again enqueues nothing and returns a handle to that job (a key names one job id).

        The arguments are checked first: ``fn`` must be registered with ``@queue.task``
        (ValueError otherwise) and every argument must be JSON (TypeError naming the type
        otherwise; tuples arrive as lists). Redis down, or not answering within
        ``enqueue_timeout``: :class:`QueueUnavailable`. On any error nothing is enqueued. The
        write is one atomic Redis function call, shielded from cancellation (bounded by
        ``enqueue_timeout``), so a cancelled caller never leaves a job half-enqueued.
        """
        spec, handle = self._prepare("enqueue", fn, args, delay, key)
        await self._publish(handle, spec, args, delay)
        return handle

    def enqueue_soon(
        self,
        starter: TaskStarter,
        fn: Callable[[Unpack[PosArgsT]], Awaitable[T]],
        *args: Unpack[PosArgsT],
        delay: float | None = None,
        key: str | None = None,
    ) -> DurableHandle[T]:
        """Enqueue ``fn(*args)`` through ``starter``: when it runs its tasks, not now.

        ``queue.enqueue_soon(request_tasks(scope).after_response, send_receipt, 42)`` enqueues
        the job once the response was sent; any starter works (a manager: at once, in the
        background; a group; ``after_route``). Synchronous: the arguments are checked and the
        handle returned at once (PENDING, not yet in Redis), and the enqueue runs as a task of
        the starter named ``enqueue <job name>``. If that task never runs (its timing point
        never came) the handle ends CANCELLED; if the enqueue fails, FAILED with the error
        (``get()`` raises it), and the starter's task fails with it too. ``handle.cancel()``
        before the enqueue means the job is never enqueued. Errors in the arguments, and a
        closed queue, raise here, and nothing is started.
        """
        if not isinstance(cast(object, starter), TaskStarter):
            raise TypeError(
                "enqueue_soon() takes a trio_bg starter first (a manager, a group, or a timing "
                f"point such as request_tasks(scope).after_response), got {type(starter).__name__}"
            )
        spec, handle = self._prepare("enqueue_soon", fn, args, delay, key)
        handle._publisher = starter.start_soon_named(
            f"enqueue {spec.name}", self._publish_later, handle, spec, args, delay
        )
        return handle

    def _prepare(
        self,
        method: str,
        fn: object,
        args: tuple[Any, ...],
        delay: float | None,
        key: str | None,
    ) -> tuple[JobSpec, DurableHandle[Any]]:
        """Check everything, make the PENDING handle; nothing touches Redis."""
        if not callable(fn) or inspect.iscoroutine(fn):
            reject_non_function(method, fn)
        spec = self._jobs_by_fn.get(cast("Callable[..., Any]", fn))
        if spec is None:
            fn_name = getattr(fn, "__qualname__", repr(fn))
            raise ValueError(
                f"{fn_name} is not a job of durable queue {self.name!r}: "
                "register it with @queue.task"
            )
        if delay is not None:
            check_seconds("delay", delay, allow_inf=False)
        check_optional_str("key", key)
        check_arguments(spec.name, args)
        self._open_worker(method)
        if key is None:
            job_id = "job-" + uuid.uuid4().hex
        else:
            digest = hashlib.sha256(f"{self.name}\0{spec.name}\0{key}".encode()).hexdigest()
            job_id = "job-" + digest[:32]
        handle: DurableHandle[Any] = DurableHandle(
            self, job_id=job_id, name=spec.name, enqueue_ms=None
        )
        return spec, handle

    async def _publish_later(
        self,
        handle: DurableHandle[Any],
        spec: JobSpec,
        args: tuple[Any, ...],
        delay: float | None,
    ) -> None:
        if handle.done:  # cancelled before its timing point
            return
        try:
            await self._publish(handle, spec, args, delay)
        except Exception as exc:
            handle._finish(TaskState.FAILED, exc)
            raise

    async def _publish(
        self,
        handle: DurableHandle[Any],
        spec: JobSpec,
        args: tuple[Any, ...],
        delay: float | None,
    ) -> None:
        worker = self._open_worker("enqueue")
        task = worker.enqueue_unsafe(spec.name, *args)
        task.id = handle.id
        if delay:
            task.start(delay=timedelta(seconds=delay))
        enqueue_ms = now_ms()
        data = await task.serialize(enqueue_ms)
        published: object = None
        try:
            with trio.CancelScope(shield=True), trio.fail_after(self._enqueue_timeout):
                try:
                    published = await _publish_task(worker, task, data, enqueue_ms)
                except ResponseError as exc:
                    if "function" not in str(exc).lower():
                        raise
                    # Redis restarted without persistence: load streaq's functions again.
                    await _reload_functions(worker)
                    published = await _publish_task(worker, task, data, enqueue_ms)
        except BaseException as exc:
            self._raise_unavailable(exc, "enqueue")
        # 0: the key's job already existed (it is queued, delayed or running): follow that one.
        handle._enqueue_ms = None if published == 0 else enqueue_ms
        handle._published_now()
        self._results.follow(handle)

    def _raise_unavailable(self, exc: BaseException, what: str) -> NoReturn:
        """Raise QueueUnavailable for a lost Redis or a timeout; re-raise anything else."""
        if isinstance(exc, trio.TooSlowError):
            raise QueueUnavailable(
                f"durable queue {self.name!r}: Redis at {self._url} did not answer the {what} "
                f"within {self._enqueue_timeout:g} s"
            ) from exc
        if is_connection_failure(exc):
            cause = first_failure(exc)
            raise QueueUnavailable(
                f"durable queue {self.name!r}: cannot reach Redis at {self._url} to {what}: {cause}"
            ) from cause
        raise exc

    # -- for workers, the dashboard and tests ---------------------------------------------------

    def streaq_worker(
        self,
        *,
        block_seconds: float | None = None,
        concurrency: int = 16,
        grace: float = 30.0,
        worker_id: str | None = None,
        register: bool = False,
    ) -> Worker[Any]:
        """A streaq ``Worker`` for this queue: JSON (de)serializer, trio backend, the reclaim
        timeout, coredis timeouts at least 1.5 times its longest blocking read. With
        ``register=True`` it also has every job and counts their outcomes in Redis (what
        ``python -m trio_bg worker`` runs)."""
        block = self._reclaim_timeout if block_seconds is None else block_seconds
        worker: Worker[Any] = (CountingWorker if register else Worker)(
            redis_url=self._url,
            redis_kwargs=client_options(
                block_seconds=max(block, self._reclaim_timeout),
                connect_timeout=self._enqueue_timeout,
            ),
            concurrency=concurrency,
            prefetch=1,
            queue_name=self.name,
            serializer=dumps,
            deserializer=loads,
            idle_timeout=self._reclaim_timeout,
            grace_period=int(-(-grace // 1)),  # streaq takes whole seconds: round up
            anyio_backend="trio",
            id=worker_id,
        )
        if register:
            for spec in self._jobs.values():
                spec.register(worker, result_ttl=self._result_ttl)
        return worker

    async def statistics(self) -> QueueStatistics:
        """Read the queue's numbers from Redis: jobs waiting (``depth``), ``delayed``,
        ``in_flight`` (delivered, not acked), the outcome counts the workers keep
        (``succeeded``, ``failed``, ``cancelled``) and the live ``workers``.

        A few round trips, bounded by ``enqueue_timeout``: :class:`QueueUnavailable` if Redis
        cannot be reached or does not answer in time; RuntimeError if the queue is not open.
        Cancelling the call abandons the reading (it changes nothing in Redis).
        """
        worker = self._open_worker("statistics")
        try:
            with trio.fail_after(self._enqueue_timeout):
                return await read_statistics(worker)
        except BaseException as exc:
            self._raise_unavailable(exc, "read statistics")

    @property
    def redis(self) -> Any:
        """The open queue's coredis client (``coredis.Redis``); RuntimeError if not open."""
        return self._open_worker("redis").redis

    @property
    def reclaim_timeout(self) -> float:
        return self._reclaim_timeout

    @property
    def redis_url(self) -> str:
        return self._url

    def __repr__(self) -> str:
        state = "open" if self.is_open else "closed"
        return f"<DurableQueue {self.name!r} {self._url} {state}, {len(self._jobs)} jobs>"


async def _publish_task(worker: Worker[Any], task: Any, data: Any, enqueue_ms: int) -> object:
    """streaq's atomic publish (SET NX of the job's data, then XADD or ZADD for a delay):
    0 if the job id already existed (a ``key`` whose job is active), else the entry id or 1."""
    request: Awaitable[object] = worker.publish_task(worker.redis, task, data, enqueue_ms)
    return await request


async def _reload_functions(worker: Worker[Any]) -> None:
    import streaq
    from anyio import Path
    from streaq.types import Streaq

    text = await (Path(streaq.__file__).parent / "lua/streaq.lua").read_text()
    worker._lib = await Streaq(worker.redis, code=text, replace=True)


def _positive(what: str, value: object) -> float:
    seconds = check_seconds(what, value, allow_inf=False)
    if seconds == 0:
        raise ValueError(f"{what} must be > 0, got {value!r}")
    return seconds
