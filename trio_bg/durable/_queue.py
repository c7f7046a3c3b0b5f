"""DurableQueue: jobs registered by name, enqueued into a backend (Redis or the journal), run by
workers in this process or others."""

from __future__ import annotations

import inspect
import logging
from collections.abc import AsyncGenerator, Awaitable, Callable, Iterable, Mapping
from contextlib import asynccontextmanager
from types import MappingProxyType, TracebackType
from typing import (
    TYPE_CHECKING,
    Any,
    Literal,
    NoReturn,
    TypeVar,
    TypeVarTuple,
    Unpack,
    cast,
    final,
    overload,
)

import trio

from .._core._callables import check_arguments, reject_non_function
from .._core._checks import check_count, check_name, check_optional_str, check_seconds
from .._core._retry import Retry
from .._core._schedule import make_schedule
from .._core._starter import TaskStarter
from .._core._state import TaskState
from .._core._trio_only import require_trio
from ._backend import Backend, Publication
from ._dead import DeadLetter
from ._exceptions import QueueUnavailable
from ._handle import DurableHandle
from ._ids import key_id, random_id
from ._job_state import JobState
from ._jobs import JobSpec
from ._journal import JournalBackend, journal_path
from ._periodic import CatchUp, Overlap, PeriodicSpec, ScheduleState
from ._serialization import encode_arguments
from ._statistics import QueueStatistics

if TYPE_CHECKING:
    from typing import Self

    from ._redis import RedisBackend

T = TypeVar("T")
F = TypeVar("F", bound=Callable[..., Awaitable[Any]])
PosArgsT = TypeVarTuple("PosArgsT")

logger = logging.getLogger("trio_bg.durable")


@final
class DurableQueue:
    """A queue of durable jobs, in Redis or in an SQLite journal file; run by workers.

    ``DurableQueue(url, name=...)`` only describes the queue; nothing connects until
    ``async with queue:`` (in the app's lifespan: ``TaskMiddleware(queues=[queue])`` does it;
    coredis wants the task that opened its client to close it). The URL picks the backend:
    ``redis://host:port/db`` (any number of hosts; workers ``python -m trio_bg worker``) or
    ``sqlite:///jobs.db`` (a relative path; ``sqlite:////abs/jobs.db`` an absolute one: the
    embedded journal, processes of one host). Jobs are async functions registered with
    ``@queue.task``, by name, in a module that both the app and the workers import. Arguments
    and results travel as JSON, never pickle. Delivery is at-least-once: a job may run again if
    a worker dies while running it.

    Args:
        url: ``redis://…`` or ``sqlite:///…`` (see above).
        name: the queue's name; the Redis keys start with ``streaq:<name>:``; in a journal, the
            ``queue`` column (several queues may share one file).
        result_ttl: seconds a job's result is kept after it finished (whole seconds).
        reclaim_timeout: Redis: a worker without a heartbeat for half of it is dead, and the
            next beat of another (every eighth of it) puts its jobs back in the stream (10 s:
            a dead worker's job runs again within about 6 s); streaq's own reclaim of entries
            idle this long stays as the fallback. Also how long a worker blocks reading the
            stream.
        poll_interval: seconds between two rounds of the result poller (Redis); the journal's
            longest wait between two looks at the file when it is quiet.
        enqueue_timeout: seconds an enqueue may take before it raises
            :class:`QueueUnavailable` (for the journal: how long a locked file is waited for).
        durability: journal: ``"normal"`` (commits survive any process crash; an OS crash or
            power loss may lose the last commit group) or ``"full"`` (every commit fsync'd).
        lease_timeout: journal: seconds a claimed job stays with its worker without a
            heartbeat (renewed every third of it); after that it runs again elsewhere.
    """

    __slots__ = (
        "_backend",
        "_jobs",
        "_jobs_by_fn",
        "_open_stack",
        "_unavailable",
        "_url",
        "name",
    )

    def __init__(
        self,
        url: str,
        *,
        name: str = "default",
        result_ttl: int = 600,
        reclaim_timeout: float = 10.0,
        poll_interval: float = 0.05,
        enqueue_timeout: float = 5.0,
        durability: Literal["normal", "full"] = "normal",
        lease_timeout: float = 5.0,
    ) -> None:
        if not isinstance(cast(object, url), str):
            raise TypeError(f"url must be a str, got {type(url).__name__}")
        is_redis = url.startswith(("redis://", "rediss://", "unix://"))
        if not is_redis and not url.startswith("sqlite:///"):
            raise ValueError(f"url must be a redis:// or sqlite:/// URL, got {url!r}")
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
        if durability not in ("normal", "full"):
            raise ValueError(f"durability must be 'normal' or 'full', got {durability!r}")
        if is_redis and durability != "normal":
            raise ValueError("durability='full' is for a journal (sqlite:///); Redis has its own")
        self._url = url
        self.name = name
        """The queue's name (the Redis keys start with ``streaq:<name>:``)."""
        reclaim = _positive("reclaim_timeout", reclaim_timeout)
        poll = _positive("poll_interval", poll_interval)
        enqueue_limit = _positive("enqueue_timeout", enqueue_timeout)
        lease = _positive("lease_timeout", lease_timeout)
        self._jobs: dict[str, JobSpec] = {}
        self._jobs_by_fn: dict[Callable[..., Any], JobSpec] = {}
        self._open_stack: list[bool] = []
        self._unavailable: QueueUnavailable | None = None
        """Why the app's lifespan could not open the queue (TaskMiddleware(queues=...))."""
        self._backend: RedisBackend | JournalBackend
        if is_redis:
            from ._redis import RedisBackend  # only for Redis: streaq is the durable extra

            self._backend = RedisBackend(
                self,
                url=url,
                jobs=self._jobs,
                result_ttl=result_ttl,
                reclaim_timeout=reclaim,
                poll_interval=poll,
                enqueue_timeout=enqueue_limit,
            )
        else:
            self._backend = JournalBackend(
                self,
                path=journal_path(url),
                jobs=self._jobs,
                synchronous="FULL" if durability == "full" else "NORMAL",
                lease_timeout=lease,
                result_ttl=result_ttl,
                poll_interval=poll,
                busy_timeout=enqueue_limit,
            )

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
        register = self._registrar("task", name, retry, timeout, None)
        if fn is not None:
            return register(fn)
        return register

    def periodic(
        self,
        *,
        cron: str | None = None,
        every: float | None = None,
        tz: str | None = None,
        catch_up: CatchUp = "latest",
        overlap: Overlap = "skip",
        name: str | None = None,
        retry: Retry | None = None,
        timeout: float | None = None,
    ) -> Callable[[F], F]:
        """Register an async function of no arguments as a job that runs on a schedule:
        ``@queue.periodic(cron="0 3 * * *", tz="Europe/Berlin")`` or
        ``@queue.periodic(every=60)``; return the function unchanged.

        Every process that runs a worker of this queue schedules it, and each instant is
        enqueued exactly once however many of them run (an atomic step per instant in the
        store; no leader). Runs are ordinary jobs of the queue (handles through
        :meth:`find_job`, retries, timeouts, the dashboard). ``every`` instants are the
        multiples of ``every`` seconds since the epoch (``every=60``: each full minute, UTC);
        ``cron`` instants are in ``tz`` (default UTC), with cron's rule across DST changes
        (docs/schedules.md). After every worker was down, ``catch_up="latest"`` runs the most
        recent missed instant once, ``"all"`` each missed one, ``"none"`` none; with
        ``overlap="skip"`` an instant is skipped while the previous run is still queued or
        running (``"allow"`` runs it anyway). ``cron`` needs the ``cron`` extra.

        Raises:
            TypeError, ValueError: a wrong schedule or option, a function that is not async or
                that needs arguments, a name already registered. Nothing is registered.
            RuntimeError: ``cron`` without the cronsim package.
        """
        schedule = make_schedule(every, cron, tz)
        if catch_up not in ("latest", "all", "none"):
            raise ValueError(f"catch_up must be 'latest', 'all' or 'none', got {catch_up!r}")
        if overlap not in ("skip", "allow"):
            raise ValueError(f"overlap must be 'skip' or 'allow', got {overlap!r}")
        spec = PeriodicSpec(schedule=schedule, catch_up=catch_up, overlap=overlap)
        return self._registrar("periodic", name, retry, timeout, spec)

    def _registrar(
        self,
        method: str,
        name: str | None,
        retry: Retry | None,
        timeout: float | None,
        periodic: PeriodicSpec | None,
    ) -> Callable[[F], F]:
        """The checked options of ``@queue.task`` or ``@queue.periodic``, and what registers a
        function with them."""
        if retry is not None and not isinstance(cast(object, retry), Retry):
            raise TypeError(f"retry must be a trio_bg.Retry or None, got {type(retry).__name__}")
        checked_timeout = None if timeout is None else _positive("timeout", timeout)
        check_optional_str("name", name)

        def register(fn: F) -> F:
            target: object = fn  # checked through another name: the check narrows its type
            if not inspect.iscoroutinefunction(target):
                reject_non_function(method, fn)
                raise TypeError(
                    f"durable jobs must be async functions, got {type(fn).__name__} "
                    f"{getattr(fn, '__qualname__', fn)!r}"
                )
            job_name = name or fn.__qualname__
            if periodic is not None:
                check_arguments(method, job_name, fn, ())  # a schedule calls it with none
            if job_name in self._jobs:
                raise ValueError(
                    f"durable queue {self.name!r} already has a job named {job_name!r}"
                )
            spec = JobSpec(
                fn=fn, name=job_name, retry=retry, timeout=checked_timeout, periodic=periodic
            )
            self._jobs[job_name] = spec
            self._jobs_by_fn[fn] = spec
            return fn

        return register

    @property
    def jobs(self) -> Mapping[str, Callable[..., Awaitable[Any]]]:
        """The registered job functions by name (read-only)."""
        return MappingProxyType({name: spec.fn for name, spec in self._jobs.items()})

    # -- open / close ---------------------------------------------------------------------------

    @property
    def is_open(self) -> bool:
        return bool(self._open_stack)

    async def __aenter__(self) -> Self:
        """Connect to the store (Redis, or open the journal file) and start following results.

        Raises :class:`QueueUnavailable` naming the cause if it cannot (Redis down, within
        ``enqueue_timeout``; a journal file that cannot be created, is read-only, corrupted,
        locked by another program past ``enqueue_timeout``, or on a full disk). A missing
        parent directory of a journal is created. Leaving the block stops following results
        (waiters raise QueueUnavailable) and disconnects; stored jobs are not touched. A queue
        that could not be opened remembers why: its enqueues raise that QueueUnavailable (not
        "not open") until it opens, which is what an app started without its Redis shows.
        """
        require_trio()
        if self._open_stack:
            raise RuntimeError(f"durable queue {self.name!r} is already open")
        try:
            await self._backend.open()
        except QueueUnavailable as exc:
            self._unavailable = exc  # until it opens, its enqueues say why it could not
            raise
        self._unavailable = None
        self._open_stack.append(True)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if not self._open_stack:
            return
        self._open_stack.clear()
        await self._backend.close()

    if not TYPE_CHECKING:

        def __enter__(self) -> NoReturn:
            raise TypeError("use 'async with queue:', not 'with queue:'")

        def __exit__(self, *exc_info: object) -> None:  # pragma: no cover - never entered
            return None

    def _open_backend(self, method: str) -> Backend:
        if not self._open_stack:
            if self._unavailable is not None:
                raise QueueUnavailable(str(self._unavailable))
            raise RuntimeError(
                f"durable queue {self.name!r} is not open: {method}() needs 'async with queue:' "
                "around it (in the app's lifespan)"
            )
        return self._backend

    # -- enqueue --------------------------------------------------------------------------------

    async def enqueue(
        self,
        fn: Callable[[Unpack[PosArgsT]], Awaitable[T]],
        *args: Unpack[PosArgsT],
        delay: float | None = None,
        key: str | None = None,
    ) -> DurableHandle[T]:
        """Enqueue a run of the job ``fn(*args)``; return its handle once the store has it
        (Redis answered; the journal committed).

        ``delay=S`` makes the job runnable S seconds from now (Redis: at streaq's 0.5 s tick).
        ``key="order-42"``: while a job with that key is queued, delayed or running, enqueueing
        it again enqueues nothing and returns a handle to that job (a key names one job id).

        The arguments are checked first: ``fn`` must be registered with ``@queue.task``
        (ValueError otherwise) and every argument must be JSON (TypeError naming the type
        otherwise; tuples arrive as lists). Redis down or not answering within
        ``enqueue_timeout``, or a journal file that cannot be written (locked longer than
        ``enqueue_timeout``, read-only, full disk): :class:`QueueUnavailable`. On any error
        nothing is enqueued. The write is atomic (one Redis function call; one transaction) and
        shielded from cancellation, so a cancelled caller never leaves a job half-enqueued.
        """
        spec, handle, job, encoded = self._prepare("enqueue", fn, args, delay, key)
        await self._publish([Publication(job, spec, args, encoded, delay, key)])
        return handle

    async def enqueue_many(
        self, jobs: Iterable[tuple[Callable[..., Awaitable[Any]], tuple[Any, ...]]]
    ) -> list[DurableHandle[Any]]:
        """Enqueue ``[(fn, args), ...]`` in one atomic write; their handles, in order.

        Every job is checked first as :meth:`enqueue` checks it (nothing is written if one is
        refused); then one Redis transaction, or one journal transaction, writes them all or
        none. Same errors and cancellation as :meth:`enqueue`.
        """
        publications: list[Publication] = []
        handles: list[DurableHandle[Any]] = []
        for entry in jobs:
            if not isinstance(cast(object, entry), tuple) or len(entry) != 2:
                raise TypeError(
                    "enqueue_many() takes (fn, args) pairs, got "
                    f"{type(cast(object, entry)).__name__}"
                )
            fn, args = entry
            if not isinstance(cast(object, args), tuple):
                raise TypeError(
                    f"enqueue_many() takes (fn, args) pairs with args a tuple, got "
                    f"{type(cast(object, args)).__name__}"
                )
            spec, handle, job, encoded = self._prepare("enqueue_many", fn, args, None, None)
            publications.append(Publication(job, spec, args, encoded, None, None))
            handles.append(handle)
        if publications:
            await self._publish(publications)
        return handles

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
        handle returned at once (PENDING, not yet in the store), and the enqueue runs as a task of
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
        spec, handle, job, encoded = self._prepare("enqueue_soon", fn, args, delay, key)
        job.publishing(
            starter.start_soon_named(
                f"enqueue {spec.name}",
                self._publish_later,
                Publication(job, spec, args, encoded, delay, key),
            )
        )
        return handle

    def _prepare(
        self,
        method: str,
        fn: object,
        args: tuple[Any, ...],
        delay: float | None,
        key: str | None,
    ) -> tuple[JobSpec, DurableHandle[Any], JobState, str]:
        """Check everything, make the PENDING handle and the arguments' JSON; nothing touches
        the store."""
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
        encoded = encode_arguments(spec.name, args)
        self._open_backend(method)
        job_id = random_id() if key is None else key_id(self.name, spec.name, key)
        job = JobState(job_id=job_id, name=spec.name, enqueue_ms=None, tracker=self._backend)
        return spec, DurableHandle(self, job), job, encoded

    async def _publish_later(self, publication: Publication) -> None:
        if publication.job.done:  # cancelled before its timing point
            return
        try:
            await self._publish([publication])
        except Exception as exc:
            publication.job.finish(TaskState.FAILED, exc)
            raise

    async def _publish(self, publications: list[Publication]) -> None:
        backend = self._open_backend("enqueue")
        stamps = await backend.publish(publications)
        for publication, stamp in zip(publications, stamps, strict=True):
            job = publication.job
            job.published_at(stamp)
            backend.follow(job)

    # -- find, workers, statistics ----------------------------------------------------------------

    async def running_jobs(self, limit: int = 20) -> list[DurableHandle[Any]]:
        """Handles of up to ``limit`` jobs running now, on any worker (with their
        ``progress``): for dashboards and people.

        Raises:
            QueueUnavailable: the store cannot be read.
        """
        check_count("limit", limit, 0)
        backend = self._open_backend("running_jobs")
        found: list[DurableHandle[Any]] = []
        for job_id in await backend.running_ids(limit):
            handle = await backend.find(job_id)
            if handle is not None:
                found.append(handle)
        return found

    async def dead_letters(self) -> list[DeadLetter]:
        """The messages this queue's workers could not run and kept, oldest first: see
        docs/durable.md, "No message stops a worker". Cancelling the call abandons the reading.

        Raises:
            QueueUnavailable: the store cannot be read.
        """
        return await self._open_backend("dead_letters").dead_letters()

    async def requeue_dead(self, letter_id: str) -> bool:
        """Run a dead letter's job again from its first attempt and delete the letter; False
        if there is no letter with that id. Its task data goes back as it was kept: a job still
        bad (or still registered in no worker) is dead-lettered again. Cancelling the call
        before Redis answers may leave the job requeued.

        Raises:
            ValueError: the letter names no job, or kept no task data (over 1 MB): discard it.
            QueueUnavailable: the store cannot be reached.
        """
        check_name("letter_id", letter_id)
        return await self._open_backend("requeue_dead").requeue_dead(letter_id)

    async def discard_dead(self, letter_id: str) -> bool:
        """Delete one dead letter; False if there is none with that id.

        Raises:
            QueueUnavailable: the store cannot be reached.
        """
        check_name("letter_id", letter_id)
        return await self._open_backend("discard_dead").discard_dead(letter_id)

    async def schedules(self) -> list[ScheduleState]:
        """Each periodic job of this queue (``@queue.periodic``): its schedule, next instant,
        the last instant taken and the id of its last job (``find_job`` gives its state and
        outcome).

        Raises:
            QueueUnavailable: the store cannot be read.
        """
        return await self._open_backend("schedules").schedules()

    async def find_job(self, job_id: str) -> DurableHandle[Any] | None:
        """A handle for the job ``job_id`` if the store still knows it, else None.

        Known: queued, delayed, running, or finished less than ``result_ttl`` ago, enqueued by
        any process (also before a restart). Any id this queue never made (not a str, not
        ``job-`` and 32 hex digits) is None at once, whatever it holds. The handle's ``state``
        is the job's as read now; ``get()`` waits for its result. RuntimeError if the queue is
        not open; :class:`QueueUnavailable` if the store cannot be read.
        """
        backend = self._open_backend("find_job")
        if not _is_job_id(job_id):
            return None
        return await backend.find(job_id)

    @asynccontextmanager
    async def open_worker(
        self, *, concurrency: int = 16, grace: float = 30.0
    ) -> AsyncGenerator[None, None]:
        """Run this queue's jobs in this process while the block runs.

        ``async with queue.open_worker(concurrency=8, grace=10):`` opens the queue if it is not
        open (and closes it after), then runs up to ``concurrency`` jobs at once, beside any
        other workers (processes, hosts) of the queue. Leaving the block stops it gracefully:
        no new job is taken, running ones get ``grace`` seconds to finish, then they are
        cancelled and handed back (they run again, here later or elsewhere). Cancelling the
        block cancels the running jobs at once; a journal gets them back after
        ``lease_timeout``, Redis after ``reclaim_timeout``. SIGTERM and SIGINT stay with the
        app (``python -m trio_bg worker`` is the worker that handles them).
        """
        check_count("concurrency", concurrency, 1)
        check_seconds("grace", grace, allow_inf=False)
        opened = not self.is_open
        if opened:
            await self.__aenter__()
        try:
            stop = trio.Event()
            async with trio.open_nursery() as nursery:
                await nursery.start(self._run_worker, concurrency, grace, stop)
                try:
                    yield
                finally:
                    stop.set()
        finally:
            if opened:
                await self.__aexit__(None, None, None)

    async def _run_worker(
        self,
        concurrency: int,
        grace: float,
        stop: trio.Event,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        await self._backend.run_worker(
            concurrency=concurrency, grace=grace, stop=stop, task_status=task_status
        )

    async def statistics(self) -> QueueStatistics:
        """Read the queue's numbers: jobs waiting (``depth``), ``delayed``, ``in_flight``
        (claimed, not finished), the outcome counts (``succeeded``, ``failed``, ``cancelled``)
        and the live ``workers``.

        Bounded by ``enqueue_timeout``: :class:`QueueUnavailable` if the store cannot be
        reached or read in time; RuntimeError if the queue is not open. Cancelling the call
        abandons the reading (it changes nothing).
        """
        return await self._open_backend("statistics").statistics()

    # -- Redis only: for the Redis worker command, the dashboard and tests ------------------------

    def streaq_worker(
        self,
        *,
        block_seconds: float | None = None,
        concurrency: int = 16,
        grace: float = 30.0,
        worker_id: str | None = None,
        register: bool = False,
    ) -> Any:
        """A streaq ``Worker`` for this Redis queue: JSON (de)serializer, trio backend, the
        reclaim timeout, coredis timeouts at least 1.5 times its longest blocking read. With
        ``register=True`` it also has every job and counts their outcomes in Redis (what
        ``python -m trio_bg worker`` runs). RuntimeError for a journal."""
        return self._redis("streaq_worker").streaq_worker(
            block_seconds=block_seconds,
            concurrency=concurrency,
            grace=grace,
            worker_id=worker_id,
            register=register,
        )

    def _redis(self, what: str) -> RedisBackend:
        backend = self._backend
        if isinstance(backend, JournalBackend):
            raise RuntimeError(f"durable queue {self.name!r} is a journal: {what} is for Redis")
        return backend

    @property
    def redis(self) -> Any:
        """The open queue's coredis client (``coredis.Redis``); RuntimeError if not open."""
        worker = self._redis("redis").worker
        if worker is None:
            self._open_backend("redis")
        assert worker is not None
        return worker.redis

    @property
    def reclaim_timeout(self) -> float:
        return self._redis("reclaim_timeout").reclaim_timeout

    @property
    def redis_url(self) -> str:
        return self._redis("redis_url").url

    @property
    def url(self) -> str:
        """The URL the queue was made with (Redis or ``sqlite:///``)."""
        return self._url

    @property
    def is_journal(self) -> bool:
        """True for a ``sqlite:///`` journal, False for Redis."""
        return isinstance(self._backend, JournalBackend)

    def __repr__(self) -> str:
        state = "open" if self.is_open else "closed"
        return f"<DurableQueue {self.name!r} {self._url} {state}, {len(self._jobs)} jobs>"


def _is_job_id(job_id: object) -> bool:
    if not isinstance(job_id, str) or len(job_id) != 36 or not job_id.startswith("job-"):
        return False
    return all(c in "0123456789abcdef" for c in job_id[4:])


def _positive(what: str, value: object) -> float:
    seconds = check_seconds(what, value, allow_inf=False)
    if seconds == 0:
        raise ValueError(f"{what} must be > 0, got {value!r}")
    return seconds
