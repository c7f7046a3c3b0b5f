"""The house rules that import-linter cannot see, read from the source with ``ast``.

- Outside ``trio_bg/_core`` no module writes a private attribute of another object, nor reads
  one by name through ``getattr`` (observers read public views; the core's internals change only
  through the core).
- Inside the core, each field of a handle is written by one module, the lifecycle (after the
  handle's ``__init__``), and the close state of a manager by the close policy only.
- A durable job's fields are written by its ``JobState`` only, and no file outside the core
  switches pyright's ``reportPrivateUsage`` off for itself.
- The instruments' imports of the task machinery are for annotations only (the contract in
  pyproject.toml ignores exactly those two).
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "trio_bg"
CORE = PACKAGE / "_core"
SET_UP = {"__init__", "_create", "_init_lifecycle", "_init_closing", "__new__"}
"""Functions that set every field once, as a constructor does."""


def _writes(path: Path) -> list[tuple[int, str, str, str]]:
    """``(line, object, attribute, function)`` for every assignment, augmented assignment or
    ``del`` of a private attribute in ``path``, outside the set-up functions."""
    found: list[tuple[int, str, str, str]] = []

    def visit(node: ast.AST, function: str) -> None:
        for child in ast.iter_child_nodes(node):
            name = function
            if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef):
                name = child.name
            targets: list[ast.expr] = []
            if isinstance(child, ast.Assign | ast.Delete):
                targets = list(child.targets)
            elif isinstance(child, ast.AugAssign | ast.AnnAssign):
                targets = [child.target]
            for target in targets:
                parts = target.elts if isinstance(target, ast.Tuple) else [target]
                for part in parts:
                    if (
                        isinstance(part, ast.Attribute)
                        and part.attr.startswith("_")
                        and not part.attr.startswith("__")
                        and function not in SET_UP
                    ):
                        found.append((part.lineno, ast.unparse(part.value), part.attr, function))
            visit(child, name)

    visit(ast.parse(path.read_text()), "<module>")
    return found


OTHER_LIBRARIES = {
    ("testing/_fixtures.py", "_force_trio_fixture"): "pytest-trio's own mark for a trio fixture",
}
"""Private attributes of other libraries' protocols that trio_bg sets as they document."""


def test_no_module_outside_the_core_writes_another_objects_private_attribute() -> None:
    offending = [
        f"{path.relative_to(PACKAGE.parent)}:{line} {owner}.{attr} (in {function})"
        for path in sorted(PACKAGE.rglob("*.py"))
        if CORE not in path.parents
        for line, owner, attr, function in _writes(path)
        if owner not in ("self", "cls")
        and (str(path.relative_to(PACKAGE)), attr) not in OTHER_LIBRARIES
    ]
    assert offending == []


def _private_lookups(path: Path) -> list[tuple[int, str, str]]:
    """``(line, object, name)`` of every ``getattr``/``hasattr`` of a private name (a string
    literal) on an object other than ``self``/``cls``: a private read the type checker cannot
    see."""
    found: list[tuple[int, str, str]] = []
    for node in ast.walk(ast.parse(path.read_text())):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id in ("getattr", "hasattr")
            and len(node.args) >= 2
            and isinstance(node.args[1], ast.Constant)
            and isinstance(node.args[1].value, str)
            and node.args[1].value.startswith("_")
            and not node.args[1].value.startswith("__")
        ):
            owner = ast.unparse(node.args[0])
            if owner not in ("self", "cls"):
                found.append((node.lineno, owner, node.args[1].value))
    return found


def test_no_module_outside_the_core_reads_a_private_attribute_by_name() -> None:
    offending = [
        f"{path.relative_to(PACKAGE.parent)}:{line} getattr({owner}, {name!r})"
        for path in sorted(PACKAGE.rglob("*.py"))
        if CORE not in path.parents
        for line, owner, name in _private_lookups(path)
    ]
    assert offending == []


def test_no_module_outside_the_core_switches_off_the_private_usage_check() -> None:
    """pyright's ``reportPrivateUsage`` is on outside ``trio_bg/_core`` (pyproject.toml): no
    file there turns it off for itself."""
    offending = [
        str(path.relative_to(PACKAGE.parent))
        for path in sorted(PACKAGE.rglob("*.py"))
        if CORE not in path.parents
        and any(
            line.lstrip().startswith("#") and "reportPrivateUsage" in line
            for line in path.read_text().splitlines()
        )
    ]
    assert offending == []


JOB_FIELDS = [
    "_attempts",
    "_cancel_requested",
    "_enqueue_ms",
    "_error",
    "_finished_at",
    "_outcome",
    "_progress",
    "_published",
    "_publisher",
    "_started_at",
    "_state",
]


@pytest.mark.parametrize("field", JOB_FIELDS)
def test_each_field_of_a_durable_job_is_written_by_its_job_state_only(field: str) -> None:
    writers = {
        path.name
        for path in sorted((PACKAGE / "durable").glob("*.py"))
        for _line, _owner, attr, _function in _writes(path)
        if attr == field
    }
    assert writers <= {"_job_state.py"}, writers


HANDLE_FIELDS = [
    "_args",
    "_attempts",
    "_cancel_requested",
    "_finished",
    "_fn",
    "_in_queue",
    "_manager",
    "_options",
    "_result",
    "_scope",
    "_started",
    "_state",
]
CLOSE_FIELDS = [
    "_closed",
    "_close_started",
    "_close_span",
    "_shield_deadline",
    "_report",
    "_nursery",
    "_thread",
]


def _writers() -> dict[str, set[str]]:
    writers: dict[str, set[str]] = defaultdict(set)
    for path in sorted(CORE.glob("*.py")):
        for _line, owner, attr, _function in _writes(path):
            if path.name == "_handle.py" and owner == "self":
                continue  # the handle's own __init__-time slots (none after it) and properties
            writers[attr].add(path.name)
    return writers


@pytest.mark.parametrize("field", HANDLE_FIELDS)
def test_each_field_of_a_handle_is_written_by_the_lifecycle_only(field: str) -> None:
    assert _writers()[field] <= {"_lifecycle.py"}


@pytest.mark.parametrize("field", CLOSE_FIELDS)
def test_the_close_state_of_a_manager_is_written_by_the_close_policy_only(field: str) -> None:
    assert _writers()[field] <= {"_closing.py"}


def test_the_instruments_import_the_task_machinery_for_annotations_only() -> None:
    tree = ast.parse((CORE / "_instruments.py").read_text())
    run_time: list[str] = []
    for node in tree.body:  # module level only: a TYPE_CHECKING block is an `if` statement
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            run_time.append(node.module or "")
    assert run_time == ["_log"]
