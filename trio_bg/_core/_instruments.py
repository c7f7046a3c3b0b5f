"""Instruments: objects whose hooks are called at each step of every task's life.

Shaped like trio's own instruments (``trio.abc.Instrument``): a class of no-op hooks that a user
overrides in part. Installed process-wide with :func:`add_instrument`, or for one manager with
``open_task_manager(instruments=...)`` / ``TaskMiddleware(instruments=...)``.

Each manager holds one dict, ``hook name -> instruments that override it``, built when it opens
and rebuilt for every open manager when an instrument is added or removed. The task path asks
``if "task_started" in self._hooks`` before it builds any argument, so a manager without
instruments pays one lookup in an empty dict per transition.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from ._log import logger

if TYPE_CHECKING:
    from ._handle import TaskHandle
    from ._manager import TaskManager
    from ._statistics import ShutdownReport


class Instrument:
    """The base class of instruments: override any subset of the hooks; each defaults to a no-op.

    Hooks are plain (synchronous) methods, called in the trio thread, in this order for each
    task, each exactly once: ``task_created`` -> ``task_started`` -> ``task_retrying`` (once per
    failed attempt that is retried) -> ``task_finished``; ``task_progress`` comes between the
    start and the finish, once per ``report_progress`` call. A task cancelled, or discarded, before
    it got a running slot goes ``task_created`` -> ``task_finished``. A start that is refused
    calls ``task_rejected`` only (no handle exists). An instrument sees the transitions that come
    after it was installed: a task already active then shows only its later hooks. A hook must
    not block; one that raises is
    logged on the ``trio_bg`` logger and its instrument is removed (everywhere it was installed);
    the task is unaffected.
    """

    __slots__ = ()

    def manager_opened(self, manager: TaskManager) -> None:
        """A manager was opened (an app manager, or a request's)."""

    def manager_closed(self, manager: TaskManager, report: ShutdownReport) -> None:
        """A manager's close has ended; ``report`` names the tasks the close cancelled."""

    def task_created(self, handle: TaskHandle[Any]) -> None:
        """A start was accepted: the handle exists and is PENDING (counted in ``started``)."""

    def task_started(self, handle: TaskHandle[Any]) -> None:
        """The task got its running slot and is RUNNING (its function is called at trio's next
        scheduling pass; ``handle.started_at`` is set then)."""

    def task_retrying(self, handle: TaskHandle[Any], exc: BaseException, delay: float) -> None:
        """An attempt failed with ``exc``; the next one begins in ``delay`` seconds."""

    def task_progress(self, handle: TaskHandle[Any]) -> None:
        """A RUNNING task reported how far it is: ``handle.progress`` is what it said. Called
        once per ``trio_bg.report_progress`` call (a task may call it often: keep this cheap)."""

    def task_finished(self, handle: TaskHandle[Any]) -> None:
        """The task reached its terminal state; its outcome (if any) is set."""

    def task_rejected(self, manager: TaskManager, name: str, reason: str) -> None:
        """A start of a task called ``name`` was refused; no handle exists.

        ``reason`` is one of ``"closed"`` (the manager is closing or closed), ``"max_pending"``
        (the pending queue is full), ``"max_tasks"`` (the request's cap is reached),
        ``"group_closed"`` (the group's block has ended).
        """


HOOK_NAMES = (
    "manager_opened",
    "manager_closed",
    "task_created",
    "task_started",
    "task_retrying",
    "task_progress",
    "task_finished",
    "task_rejected",
)

Hooks = Mapping[str, tuple["Callable[..., None]", ...]]
"""A manager's hook table: hook name -> the bound hooks of the instruments that override it."""
NO_HOOKS: Hooks = {}
"""The hooks of a manager without instruments (shared, never changed)."""


class InstrumentSet:
    """An ordered set of instruments, shared by every manager it was given to.

    The process-wide set is :data:`GLOBAL`; ``TaskMiddleware(instruments=...)`` makes one for the
    app manager and all its request managers, so an instrument removed after a failure is gone
    from all of them.
    """

    __slots__ = ("_instruments",)

    def __init__(self, instruments: Iterable[Instrument] = ()) -> None:
        self._instruments: list[Instrument] = []
        for instrument in instruments:
            check_instrument(instrument)
            if instrument not in self._instruments:
                self._instruments.append(instrument)

    def __bool__(self) -> bool:
        return bool(self._instruments)

    def __iter__(self) -> Iterator[Instrument]:
        return iter(self._instruments)

    def __contains__(self, instrument: object) -> bool:
        return instrument in self._instruments

    def add(self, instrument: Instrument) -> None:
        if instrument not in self._instruments:
            self._instruments.append(instrument)

    def discard(self, instrument: Instrument) -> bool:
        if instrument in self._instruments:
            self._instruments.remove(instrument)
            return True
        return False


GLOBAL = InstrumentSet()
"""The process-wide instruments: every manager calls them."""


def check_instrument(instrument: object) -> None:
    if not isinstance(instrument, Instrument):
        raise TypeError(
            f"an instrument must be a trio_bg.Instrument, got {type(instrument).__name__}"
        )


DEBUG_INSTRUMENTS: list[Instrument] = []
"""Instruments a manager includes if the ``trio_bg`` logger is enabled for DEBUG when it opens
(the task log of :mod:`trio_bg._tasklog`, which adds itself here)."""


def hooks_for(own: InstrumentSet | None) -> Hooks:
    """The hook table of a manager: the process-wide instruments first, then its own, then the
    task log if DEBUG is on."""
    debug = DEBUG_INSTRUMENTS if logger.isEnabledFor(logging.DEBUG) else ()
    if not GLOBAL and not own and not debug:
        return NO_HOOKS
    instruments = [*GLOBAL, *(i for i in (own or ()) if i not in GLOBAL), *debug]
    table: dict[str, tuple[Callable[..., None], ...]] = {}
    for name in HOOK_NAMES:
        base: object = getattr(Instrument, name)
        # Bound methods, made once per manager: a call is then one call, not a getattr first
        # (docs/performance.md).
        overriding = tuple(getattr(i, name) for i in instruments if _hook_of(i, name) is not base)
        if overriding:
            table[name] = overriding
    return table


class HasInstruments(Protocol):
    _instruments: InstrumentSet | None


def _hook_of(instrument: Instrument, name: str) -> object:
    cls: type[Instrument] = type(instrument)
    hook: object = getattr(cls, name)
    return hook


def call_hooks(hooks: Hooks, owner: HasInstruments, name: str, *args: Any) -> None:
    """Call hook ``name`` of every instrument in ``hooks`` (a manager's table) that overrides it.

    An instrument whose hook raises is logged and removed from the process-wide set and from the
    sets of the owner and (through the :func:`on_change` listeners) of every open manager (a
    middleware's set is shared with its future request managers, so it is gone from those too);
    every open manager's hook table is rebuilt.
    """
    failed: list[Instrument] = []
    for hook in hooks.get(name, ()):
        try:
            hook(*args)
        except Exception:
            instrument: Instrument = getattr(hook, "__self__")  # noqa: B009 - a bound method's
            logger.exception("instrument %r raised in %s; it has been removed", instrument, name)
            failed.append(instrument)
    if failed:
        if owner._instruments is not None:
            for instrument in failed:
                owner._instruments.discard(instrument)
        for instrument in failed:
            GLOBAL.discard(instrument)
        _changed(failed)


Listener = Callable[[Sequence[Instrument]], None]
"""Called after instruments came or went, with those removed because a hook raised (to be
taken out of every open manager's own set too)."""
_listeners: list[Listener] = []


def on_change(listener: Listener) -> None:
    """Call ``listener`` whenever instruments are added or removed (the registry does)."""
    _listeners.append(listener)


def _changed(removed: Sequence[Instrument] = ()) -> None:
    for listener in _listeners:
        listener(removed)


def add_instrument(instrument: Instrument) -> None:
    """Install ``instrument`` process-wide: every manager, open now or later, calls its hooks.

    Adding an instrument that is already installed does nothing.

    Raises:
        TypeError: ``instrument`` is not a :class:`trio_bg.Instrument`.
    """
    check_instrument(instrument)
    GLOBAL.add(instrument)
    _changed()


def remove_instrument(instrument: Instrument) -> None:
    """Remove a process-wide instrument; from now on no manager calls it.

    Raises:
        KeyError: ``instrument`` is not installed process-wide.
    """
    if not GLOBAL.discard(instrument):
        raise KeyError(f"instrument {instrument!r} is not installed")
    _changed()
