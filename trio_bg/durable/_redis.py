"""RedisBackend: a DurableQueue's jobs in Redis Streams, through streaq."""

from __future__ import annotations

import functools
import time
from collections.abc import Awaitable, Mapping, Sequence
from contextlib import AsyncExitStack
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, NoReturn, cast

import trio
from coredis.exceptions import ResponseError, WatchError
from streaq import Worker
from streaq.task import RegisteredTask, Task
from streaq.types import Streaq
from streaq.utils import now_ms

from ._connection import client_options, first_failure, is_connection_failure
from ._dead import DeadLetter, dead_key, kept_data
from ._dead import parse as parse_dead
from ._exceptions import QueueUnavailable
from ._handle import DurableHandle, JobOwner
from ._job_state import JobState
from ._keys import results_set, retry_key, running_set
from ._periodic import (
    ScheduleState,
    Taken,
    instant_job_id,
    plan,
    run_periodic,
    schedule_state,
)
from ._progress import decode_progress, progress_key
from ._results import ResultPoller
from ._serialization import dumps, loads
from ._statistics import QueueStatistics
from ._stats import (
    CountingWorker,
    flush_outcomes_forever,
    read_statistics,
)

if TYPE_CHECKING:
    from ._backend import Publication
    from ._jobs import JobSpec
    from ._periodic import PeriodicSpec


class RedisBackend:
    """Redis through streaq: a client while open, a :class:`ResultPoller`, streaq workers."""

    def __init__(
        self,
        owner: JobOwner,
        *,
        url: str,
        jobs: Mapping[str, JobSpec],
        result_ttl: int,
        reclaim_timeout: float,
        poll_interval: float,
        enqueue_timeout: float,
    ) -> None:
        self._owner = owner
        self.url = url
        self._jobs = jobs
        self._result_ttl = result_ttl
        self.reclaim_timeout = reclaim_timeout
        self._poll_interval = poll_interval
        self._enqueue_timeout = enqueue_timeout
        self.worker: Worker[Any] | None = None
        self._stack: AsyncExitStack | None = None
        self._placeholders: dict[str, RegisteredTask] = {}
        self.results = ResultPoller(queue_name=owner.name, poll_interval=poll_interval)

    @property
    def where(self) -> str:
        return f"Redis at {self.url}"

    @property
    def name(self) -> str:
        return self._owner.name

    def open_worker(self) -> Worker[Any]:
        if self.worker is None:
            raise RuntimeError(f"durable queue {self.name!r} is not open")
        return self.worker

    async def open(self) -> None:
        worker = self.streaq_worker(block_seconds=self._enqueue_timeout)
        stack = AsyncExitStack()
        try:
            # Bounded by coredis's connect_timeout (enqueue_timeout): the client's context
            # holds a task group, which a cancel scope must not be wrapped around here.
            await stack.enter_async_context(worker)
        except BaseException as exc:
            await stack.aclose()
            self.unavailable(exc, "open")
        nursery = await stack.enter_async_context(trio.open_nursery())
        stack.callback(nursery.cancel_scope.cancel)
        self.results = ResultPoller(queue_name=self.name, poll_interval=self._poll_interval)
        nursery.start_soon(self.results.run, worker)
        nursery.start_soon(self.results.listen, worker)
        self._stack = stack
        self.worker = worker

    async def close(self) -> None:
        stack, self._stack, self.worker = self._stack, None, None
        self.results.close()
        if stack is not None:
            await stack.aclose()

    # -- enqueue ------------------------------------------------------------------------------

    async def publish(self, jobs: Sequence[Publication]) -> list[int | None]:
        worker = self.open_worker()
        enqueue_ms = now_ms()
        tasks: list[tuple[Task[..., Any], Any]] = []
        for job in jobs:
            placeholder = self._placeholder(worker, job.spec.name)
            task: Task[..., Any] = Task(job.args, {}, placeholder, worker, job.job.id)
            if job.delay:
                task.start(delay=timedelta(seconds=job.delay))
            tasks.append((task, await task.serialize(enqueue_ms)))
        published: list[object] = []
        # One scope, shielded and with the deadline, not a shield plus fail_after: every
        # enqueue passes here (a cancel scope costs ~4 µs to enter and leave).
        deadline = trio.current_time() + self._enqueue_timeout
        try:
            with trio.CancelScope(shield=True, deadline=deadline) as scope:
                try:
                    published = await _publish_tasks(worker, tasks, enqueue_ms)
                except ResponseError as exc:
                    if "function" not in str(exc).lower():
                        raise
                    # Redis restarted without persistence: load streaq's functions again.
                    await _reload_functions(worker)
                    published = await _publish_tasks(worker, tasks, enqueue_ms)
            if scope.cancelled_caught:
                raise trio.TooSlowError
        except BaseException as exc:
            self.unavailable(exc, "enqueue")
        # 0: the key's job already existed (it is queued, delayed or running): follow that one.
        return [None if result == 0 else enqueue_ms for result in published]

    def _placeholder(self, worker: Worker[Any], name: str) -> RegisteredTask:
        """streaq's stand-in registration for enqueueing job ``name`` by name, made once per
        job and client (``enqueue_unsafe`` makes one per call, and an id per task that an
        enqueue replaces)."""
        placeholder = self._placeholders.get(name)
        if placeholder is None or placeholder.worker is not worker:
            placeholder = worker.enqueue_unsafe(name).parent
            self._placeholders[name] = placeholder
        return placeholder

    def unavailable(self, exc: BaseException, what: str) -> NoReturn:
        """Raise QueueUnavailable for a lost Redis or a timeout; re-raise anything else.

        The message names the cause, and the chain is cut (``from None``): coredis's own chain
        for a refused connection is dozens of lines of its retry and connection machinery, five
        exception groups deep, which buried the one line that says what is wrong.
        """
        if isinstance(exc, trio.TooSlowError):
            raise QueueUnavailable(
                f"durable queue {self.name!r}: Redis at {self.url} did not answer the {what} "
                f"within {self._enqueue_timeout:g} s"
            ) from None
        if is_connection_failure(exc):
            cause = first_failure(exc)
            raise QueueUnavailable(
                f"durable queue {self.name!r}: cannot reach Redis at {self.url} to {what}: {cause}"
            ) from None
        raise exc

    # -- results ------------------------------------------------------------------------------

    def watch(self, job: JobState) -> None:
        self.results.watch(job)

    def unwatch(self, job: JobState) -> None:
        self.results.unwatch(job)

    def follow(self, job: JobState) -> None:
        self.results.follow(job)

    def abort(self, job: JobState) -> None:
        self.results.abort(job)

    async def dead_letters(self) -> list[DeadLetter]:
        worker = self.open_worker()
        try:
            with trio.fail_after(self._enqueue_timeout):
                stored = await worker.redis.hgetall(dead_key(worker))
        except BaseException as exc:
            self.unavailable(exc, "read the dead letters")
        letters = [parse_dead(str(entry), text) for entry, text in stored.items()]
        return sorted((letter for letter in letters if letter is not None), key=_letter_time)

    async def discard_dead(self, letter_id: str) -> bool:
        worker = self.open_worker()
        try:
            with trio.fail_after(self._enqueue_timeout):
                return bool(await worker.redis.hdel(dead_key(worker), [letter_id]))
        except BaseException as exc:
            self.unavailable(exc, "discard a dead letter")

    async def requeue_dead(self, letter_id: str) -> bool:
        worker = self.open_worker()
        redis = worker.redis
        try:
            with trio.fail_after(self._enqueue_timeout):
                stored = await redis.hget(dead_key(worker), letter_id)
                letter = None if stored is None else parse_dead(letter_id, stored)
                if letter is None:
                    return False
                job = letter.job
                if job is None:
                    raise ValueError(f"dead letter {letter_id!r} names no job: discard it")
                data = kept_data(stored)
                if data is None and not await redis.exists([worker.task_key + job]):
                    raise ValueError(f"dead letter {letter_id!r} kept no task data: discard it")
                async with redis.pipeline(transaction=True) as pipe:
                    if data is not None:
                        pipe.set(worker.task_key + job, data)
                    # streaq's stored failure and tries go: the job starts over.
                    pipe.delete([worker.results_key + job, retry_key(worker) + job])
                    pipe.zrem(results_set(worker), [job])
                    pipe.xadd(
                        worker.stream_key + worker.priorities[-1],
                        {"task_id": job, "enqueue_time": str(now_ms())},
                    )
                    pipe.hdel(dead_key(worker), [letter_id])
        except ValueError:
            raise
        except BaseException as exc:
            self.unavailable(exc, "requeue a dead letter")
        return True

    async def running_ids(self, limit: int) -> list[str]:
        worker = self.open_worker()
        try:
            with trio.fail_after(self._enqueue_timeout):
                members = await worker.redis.smembers(running_set(worker))
        except BaseException as exc:
            self.unavailable(exc, "read the running jobs")
        return sorted(str(m) for m in members)[:limit]

    async def schedules(self) -> list[ScheduleState]:
        worker = self.open_worker()
        periodic = [spec for spec in self._jobs.values() if spec.periodic is not None]
        try:
            with trio.fail_after(self._enqueue_timeout):
                async with worker.redis.pipeline(transaction=False) as pipe:
                    reads = [
                        pipe.hmget(schedule_key(worker, s.name), ["instant", "job"])
                        for s in periodic
                    ]
                taken = [await read for read in reads]
        except BaseException as exc:
            self.unavailable(exc, "read the schedules")
        now = time.time()
        states: list[ScheduleState] = []
        for spec, (instant, job) in zip(periodic, taken, strict=True):
            assert spec.periodic is not None
            last = None if instant is None else float(instant)
            last_job = None if job is None else str(job)
            states.append(schedule_state(spec.name, spec.periodic, now, last, last_job))
        return states

    async def take_instants(self, job: str, spec: PeriodicSpec, now: float) -> Taken:
        # A worker process's schedulers call the module function with their own streaq
        # worker; this is the same step on the queue's client (the Backend seam).
        return await take_instants(self.open_worker(), self.name, job, spec, now)

    async def find(self, job_id: str) -> DurableHandle[Any] | None:
        worker = self.open_worker()
        try:
            with trio.fail_after(self._enqueue_timeout):
                async with worker.redis.pipeline(transaction=True) as pipe:
                    data = pipe.get(worker.task_key + job_id)
                    result = pipe.get(worker.results_key + job_id)
                    reported = pipe.get(progress_key(worker, job_id))
                raw_data, raw_result = await data, await result
                progress = decode_progress(await reported)
        except BaseException as exc:
            self.unavailable(exc, "find a job")
        name: object = None
        record: dict[str, Any] | None = None
        if raw_result is not None:
            decoded: object = loads(raw_result)
            if isinstance(decoded, dict):
                record = cast("dict[str, Any]", decoded)
                name = record.get("f")
        if raw_data is not None and name is None:
            decoded = loads(raw_data)
            if isinstance(decoded, dict):
                data_record = cast("dict[str, Any]", decoded)
                name = data_record.get("f") or data_record.get("fn")
        if raw_data is None and record is None:
            return None
        job = JobState(job_id=job_id, name=str(name or "?"), enqueue_ms=None, tracker=self)
        job.published_now()
        if progress is not None:
            job.seen_progress(progress)
        if record is not None and raw_data is None:
            job.seen_result(record)
        else:
            self.results.follow(job)
        return DurableHandle(self._owner, job)

    async def statistics(self) -> QueueStatistics:
        worker = self.open_worker()
        try:
            with trio.fail_after(self._enqueue_timeout):
                return await read_statistics(worker)
        except BaseException as exc:
            self.unavailable(exc, "read statistics")

    # -- workers ------------------------------------------------------------------------------

    def streaq_worker(
        self,
        *,
        block_seconds: float | None = None,
        concurrency: int = 16,
        grace: float = 30.0,
        worker_id: str | None = None,
        register: bool = False,
        stop: trio.Event | None = None,
    ) -> Worker[Any]:
        """A streaq ``Worker`` for this queue (see :meth:`DurableQueue.streaq_worker`); with
        ``stop``, one that stops on that event instead of SIGTERM/SIGINT."""
        block = self.reclaim_timeout if block_seconds is None else block_seconds
        cls: type[Worker[Any]] = Worker
        if stop is not None:
            cls = _InProcessWorker
        elif register:
            cls = CountingWorker
        worker: Worker[Any] = cls(
            redis_url=self.url,
            redis_kwargs=client_options(
                block_seconds=max(block, self.reclaim_timeout),
                connect_timeout=self._enqueue_timeout,
            ),
            concurrency=concurrency,
            prefetch=1,
            queue_name=self.name,
            serializer=dumps,
            deserializer=loads,
            idle_timeout=self.reclaim_timeout,
            grace_period=int(-(-grace // 1)),  # streaq takes whole seconds: round up
            anyio_backend="trio",
            id=worker_id,
        )
        if isinstance(worker, _InProcessWorker):
            worker.stop_event = stop
        if register or stop is not None:
            for spec in self._jobs.values():
                spec.register(worker, result_ttl=self._result_ttl)
            if isinstance(worker, CountingWorker):
                worker.jobs = self._jobs
        return worker

    async def run_worker(
        self,
        *,
        concurrency: int,
        grace: float,
        stop: trio.Event,
        task_status: trio.TaskStatus[None],
    ) -> None:
        worker = self.streaq_worker(concurrency=concurrency, grace=grace, register=True, stop=stop)
        await run_streaq_worker(worker, queue=self.name, task_status=task_status)


class _InProcessWorker(CountingWorker):
    """A counting streaq worker that stops gracefully when its ``stop_event`` is set (an
    in-process worker must leave SIGTERM and SIGINT to the app)."""

    stop_event: trio.Event | None = None

    async def signal_handler(self, scope: trio.CancelScope) -> None:  # type: ignore[override]
        assert self.stop_event is not None
        await self.stop_event.wait()
        scope.cancel()
        deadline = trio.current_time() + self.grace_period
        for job_scope in self._cancel_scopes.values():
            job_scope.deadline = min(job_scope.deadline, deadline)


async def _publish_tasks(
    worker: Worker[Any], tasks: list[tuple[Any, Any]], enqueue_ms: int
) -> list[object]:
    """streaq's atomic publish of each task (SET NX of its data, then XADD or ZADD for a
    delay), all in one MULTI/EXEC: per task 0 if its id already existed (a ``key`` whose job
    is active), else the entry id or 1."""
    if len(tasks) == 1:
        task, data = tasks[0]
        request: Awaitable[object] = worker.publish_task(worker.redis, task, data, enqueue_ms)
        return [await request]
    async with worker.redis.pipeline(transaction=True) as pipe:
        lib = Streaq(pipe)
        requests: list[Awaitable[object]] = []
        for task, data in tasks:
            request = worker.publish_task(pipe, task, data, enqueue_ms, lib=lib)
            requests.append(request)
    return [await r for r in requests]


async def run_streaq_worker(
    worker: Worker[Any],
    *,
    queue: str,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """``worker.run_async()``, with a scheduler beside it for each periodic job it runs (a
    counting worker's ``jobs``) and the outcome counts' flusher (they stop when the worker
    does)."""
    jobs: Mapping[str, JobSpec] = worker.jobs if isinstance(worker, CountingWorker) else {}
    periodic = [spec for spec in jobs.values() if spec.periodic is not None]

    async def run(task_status: trio.TaskStatus[None]) -> None:
        await worker.run_async(task_status=task_status)
        schedulers.cancel_scope.cancel()

    async with trio.open_nursery() as schedulers:
        await schedulers.start(run)
        task_status.started()
        schedulers.start_soon(flush_outcomes_forever, worker)
        for spec in periodic:
            assert spec.periodic is not None
            schedulers.start_soon(
                functools.partial(
                    run_periodic,
                    queue=queue,
                    job=spec.name,
                    spec=spec.periodic,
                    now=time.time,
                    take=functools.partial(take_instants, worker, queue),
                )
            )


def _letter_time(letter: DeadLetter) -> datetime:
    return letter.at


def schedule_key(worker: Worker[Any], job: str) -> str:
    """The hash of a periodic job's last instant taken (``instant``) and its job id (``job``)."""
    return f"{worker.prefix}:schedule:{job}"


async def take_instants(
    worker: Worker[Any], queue: str, job: str, spec: PeriodicSpec, now: float
) -> Taken:
    """A periodic job's atomic step on Redis (see :mod:`._periodic`): ``WATCH`` its schedule
    hash, read it, plan, then one ``MULTI``/``EXEC`` with the jobs (streaq's own publish, ids
    from the instants) and the newest instant. If another process changed the hash since the
    ``WATCH``, ``EXEC`` does nothing and this process took nothing (the other one did)."""
    key = schedule_key(worker, job)
    enqueue_ms = int(now * 1000)
    try:
        async with worker.redis.pipeline(transaction=True) as pipe, pipe.watch(key):
            instant, last_job = await worker.redis.hmget(key, ["instant", "job"])
            last = None if instant is None else float(instant)
            chosen = plan(spec, last, now)
            if chosen.newest is None:
                return Taken((), (), 0)
            active = last_job is not None and spec.overlap == "skip"
            if active:
                active = bool(await worker.redis.exists([worker.task_key + str(last_job)]))
            enqueued: list[float] = []
            skipped: list[float] = []
            lib = Streaq(pipe)
            for moment in chosen.run:
                if active:
                    skipped.append(moment)
                    continue
                task = worker.enqueue_unsafe(job)
                task.id = instant_job_id(queue, job, moment)
                worker.publish_task(
                    pipe, task, await task.serialize(enqueue_ms), enqueue_ms, lib=lib
                )
                enqueued.append(moment)
                last_job = task.id
                # ``active`` stays as it was: overlap is judged against an earlier take's run
                # only (the instants of one take are one decision, as on the journal).
            mapping: dict[str, str] = {"instant": repr(chosen.newest)}
            if last_job is not None:
                mapping["job"] = str(last_job)
            pipe.hset(key, mapping)
    except WatchError:
        return Taken((), (), 0)
    return Taken(tuple(enqueued), tuple(skipped), chosen.dropped)


async def _reload_functions(worker: Worker[Any]) -> None:
    import streaq
    from anyio import Path

    text = await (Path(streaq.__file__).parent / "lua/streaq.lua").read_text()
    # Loading the library again is enough: the worker's handle on it calls its functions by
    # name (FCALL), and they are back.
    await Streaq(worker.redis, code=text, replace=True)
