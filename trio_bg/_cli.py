"""What the commands of ``python -m trio_bg`` share: importing ``module:attribute``, the one-line
``error:`` they end with, ``--grace``-style seconds, and the logging set-up."""

from __future__ import annotations

import argparse
import importlib
import logging
import math
import os
import sys


class CommandError(Exception):
    """A command that cannot run as given: ``python -m trio_bg`` prints ``error: <message>`` as
    one line and exits with ``code`` (2 for something it cannot load, 1 for an address that
    cannot be bound)."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


def import_object(path: str, kind: str) -> object:
    """Import ``"package.module:attribute"`` (the attribute may be dotted) from the cwd too.

    Raises:
        CommandError: the path is malformed, the module is not found (``ModuleNotFoundError``,
            for it or a module it imports) or an attribute is missing; ``kind`` ("app",
            "queue") names what the path was for. Any other exception raised by the module's
            own code propagates with its traceback.
    """
    module_name, sep, attribute = path.partition(":")
    if not sep or not module_name or not attribute:
        raise CommandError(f"the {kind} must be given as module:attribute, got {path!r}", 2)
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        target: object = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        raise CommandError(f"cannot import module {module_name!r}: {exc}", 2) from None
    owner = f"module {module_name!r}"
    found: list[str] = []
    for part in attribute.split("."):
        try:
            target = getattr(target, part)
        except AttributeError:
            raise CommandError(f"{owner} has no attribute {part!r}", 2) from None
        found.append(part)
        owner = repr(f"{module_name}:{'.'.join(found)}")
    return target


def seconds_argument(text: str) -> float:
    """An argparse ``type``: a finite number of seconds >= 0 (argparse reports the error and
    exits 2)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not (0 <= value < math.inf):
        raise argparse.ArgumentTypeError(f"must be a finite number of seconds >= 0, got {text!r}")
    return value


def configure_logging(level: str) -> None:
    """One root handler on stderr, at ``level`` (``--log-level``)."""
    logging.basicConfig(
        level=level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
