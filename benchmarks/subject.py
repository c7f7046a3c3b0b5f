"""Run a module of this harness against the trio_bg of a given checkout, in a fresh process.

    PYTHONPATH=/path/to/checkout python -P benchmarks/subject.py benchmarks.server ARGS...

``-P`` keeps this file's directory and the working directory off ``sys.path``, so the first
``import trio_bg`` finds the checkout named first in ``PYTHONPATH`` (``PYTHONPATH`` comes before
site-packages, and so before an editable install's path). If trio_bg came from anywhere else
(no ``trio_bg/`` in that checkout, say), this exits with an error instead of measuring the wrong
code. Then this harness's root goes first on ``sys.path``, so ``benchmarks`` is this tree's even
when the checkout has its own; trio_bg stays the module already imported, and its submodules
are found through its package path.

Nothing else is imported from this tree before trio_bg, which is why this file is run by path
and imports only the standard library.
"""

from __future__ import annotations

import os
import runpy
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    if len(sys.argv) < 2:
        raise SystemExit("usage: PYTHONPATH=CHECKOUT python -P subject.py MODULE [ARGS...]")
    if sys.flags.safe_path != 1:
        raise SystemExit("subject.py must be run with python -P")
    entries = [e for e in os.environ.get("PYTHONPATH", "").split(os.pathsep) if e]
    if not entries:
        raise SystemExit("subject.py: PYTHONPATH must name the trio_bg checkout to measure")
    checkout = Path(entries[0]).resolve()
    import trio_bg

    imported = Path(trio_bg.__file__ or "").resolve()
    if not imported.is_relative_to(checkout):
        raise SystemExit(f"subject.py: trio_bg was imported from {imported}, not from {checkout}")
    sys.path.insert(0, str(ROOT))
    sys.argv = sys.argv[1:]
    runpy.run_module(sys.argv[0], run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
