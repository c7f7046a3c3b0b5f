"""TaskGroup: a named set of a manager's tasks that can be awaited together."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar, cast, final, overload

import outcome
import trio

from ._checks import check_name
from ._exceptions import TaskCancelled
from ._starter import TaskStarter

if TYPE_CHECKING:
    from types import TracebackType

    from ._handle import TaskHandle
    from ._manager import TaskManager
    from ._options import TaskOptions


T = TypeVar("T")


@final
class TaskGroup(TaskStarter):
    """Tasks started together and awaited together: ``async with tm.open_group("name") as g``.

    The tasks run in the manager's nursery (so the manager's caps, shielding and close rules apply
    and they show in ``active_tasks``); the group only tracks them. Leaving the block waits for
    all of them, then checks for cancellation (a task's KeyboardInterrupt has cancelled the
    manager's nursery: the body stops there). If the block raises, or is cancelled while waiting,
    the group's unshielded tasks are cancelled and the exception propagates at once; the manager
    still owns and waits for them. Made by :meth:`TaskManager.open_group`, never by hand.
    """

    __slots__ = ("_done", "_entered", "_exited", "_handles", "_manager", "_name", "_unfinished")
    _manager: TaskManager
    _name: str
    _handles: list[TaskHandle[Any]]
    _unfinished: int
    _done: trio.Event | None
    _entered: bool
    _exited: bool

    def __init__(self) -> None:
        raise TypeError("trio_bg.TaskGroup has no public constructor; use tm.open_group(name)")

    @classmethod
    def _create(cls, manager: TaskManager, name: str) -> TaskGroup:
        check_name("group name", name)
        self = object.__new__(cls)
        self._manager = manager
        self._name = name
        self._handles = []
        self._unfinished = 0
        self._done = None
        self._entered = False
        self._exited = False
        return self

    @property
    def name(self) -> str:
        """The group's name."""
        return self._name

    @property
    def handles(self) -> tuple[TaskHandle[Any], ...]:
        """The group's tasks, in start order."""
        return tuple(self._handles)

    def _start(
        self,
        method: str,
        name: str,
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        shield: bool,
        options: TaskOptions | None,
    ) -> TaskHandle[Any]:
        return self._manager._spawn(method, name, fn, args, shield, options, group=self)

    def _check_open(self, name: str) -> None:
        """Refuse a start outside the block. The manager calls this after validating the start,
        so a rejected coroutine object is closed first; a refusal counts as ``rejected``."""
        if not self._entered:
            raise RuntimeError(
                f"enter group {self._name!r} with 'async with' before starting tasks"
            )
        if self._exited:
            raise self._manager._task_rejected(
                name, "group_closed", f"group {self._name!r} is closed to new tasks"
            )

    def _add(self, handle: TaskHandle[Any]) -> None:
        self._handles.append(handle)
        self._unfinished += 1

    def _task_done(self) -> None:
        self._unfinished -= 1
        if self._unfinished == 0 and self._done is not None:
            self._done.set()
            self._done = None

    async def _wait(self) -> None:
        if self._unfinished == 0:
            await trio.lowlevel.checkpoint()
            return
        if self._done is None:
            self._done = trio.Event()
        await self._done.wait()

    @overload
    async def wait_all(self) -> list[object]: ...

    @overload
    async def wait_all(self, of: type[T]) -> list[T]: ...

    async def wait_all(self, of: type[Any] = object) -> list[Any]:
        """Wait for every task of the group; return their values in start order.

        A group may hold tasks of any result type, so the values are ``object``s; pass ``of``
        (``await group.wait_all(str)``) when they share one type, and get a ``list[str]`` that is
        checked value by value. Cancelling the caller stops the wait; it does not cancel the
        tasks.

        Raises:
            BaseExceptionGroup: if any task failed or was cancelled, holding each failure (the
                task's own exception object) and a TaskCancelled for each cancelled task, in
                start order, once every task is done.
            TypeError: a value is not an instance of ``of``.
        """
        if not isinstance(cast(object, of), type):
            raise TypeError(f"wait_all() takes a class, got {type(of).__name__}")
        await self._wait()
        values: list[object] = []
        errors: list[BaseException] = []
        for handle in self._handles:
            result = handle.outcome
            if isinstance(result, outcome.Value):
                values.append(result.value)
            elif isinstance(result, outcome.Error):
                errors.append(result.error)
            else:
                errors.append(TaskCancelled(f"task {handle.name!r} ({handle.id}) was cancelled"))
        if errors:
            raise BaseExceptionGroup(
                f"{len(errors)} of {len(self._handles)} tasks in group {self._name!r} failed",
                errors,
            )
        if of is not object:
            for handle, value in zip(self._handles, values, strict=True):
                if not isinstance(value, of):
                    raise TypeError(
                        f"task {handle.name!r} ({handle.id}) of group {self._name!r} returned "
                        f"{type(value).__name__}, not {of.__name__}"
                    )
        return values

    def _cancel_unshielded(self) -> None:
        for handle in self._handles:
            if not handle.shielded:
                handle.cancel()

    async def __aenter__(self) -> TaskGroup:
        if self._entered:
            raise RuntimeError(f"group {self._name!r} was already entered")
        self._entered = True
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._exited = True
        if exc is not None:
            self._cancel_unshielded()
            return
        try:
            await self._wait()
            # A task ended by KeyboardInterrupt / SystemExit has passed it to the manager's
            # nursery, which cancels the body: stop here rather than run on to the next
            # checkpoint (no wait when nothing was cancelled).
            await trio.lowlevel.checkpoint_if_cancelled()
        except BaseException:
            self._cancel_unshielded()
            raise

    if not TYPE_CHECKING:  # hidden from type checkers, so that `with` is a static error too

        def __enter__(self) -> NoReturn:
            raise TypeError("use 'async with tm.open_group(...)', not 'with'")

        def __exit__(self, *exc_info: object) -> None:  # pragma: no cover - __enter__ raises
            return None

    def __repr__(self) -> str:
        size = len(self._handles)
        return f"<TaskGroup {self._name!r} tasks={size} unfinished={self._unfinished}>"
