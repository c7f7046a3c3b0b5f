"""Make the public names of a package say where users import them from."""

from __future__ import annotations

from collections.abc import Mapping


def fixup_module_metadata(module_name: str, namespace: Mapping[str, object]) -> None:
    """Set ``__module__`` to ``module_name`` on every public object of ``namespace`` (and on the
    methods of public classes) that was defined in a private module of this package, so reprs,
    docs and pickling-free tracebacks say ``trio_bg.TaskHandle``, not ``trio_bg._core._handle...``.
    Like trio's own ``fixup_module_metadata``; no hand-kept list to forget a name in.
    """
    seen: set[int] = set()

    def fix(obj: object) -> None:
        if id(obj) in seen:
            return
        seen.add(id(obj))
        module = getattr(obj, "__module__", None)
        if not isinstance(module, str) or not module.startswith(f"{module_name}._"):
            return
        try:
            setattr(obj, "__module__", module_name)  # noqa: B010 - any object's attribute
        except (AttributeError, TypeError):  # a builtin or slot-less object: leave it
            return
        if isinstance(obj, type):
            for value in vars(obj).values():
                fix(value)

    for name, obj in namespace.items():
        if not name.startswith("_"):
            fix(obj)
