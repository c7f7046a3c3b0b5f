"""The live task dashboard: ``from trio_bg.dashboard import Dashboard``, an ASGI app to mount.

This module only re-exports (the map is ``docs/architecture.md``; the page is
``docs/dashboard.md``).
"""

from __future__ import annotations

from .._public import fixup_module_metadata as _fixup_module_metadata
from ._app import Dashboard as Dashboard

_fixup_module_metadata(__name__, globals())

__all__ = ["Dashboard"]
