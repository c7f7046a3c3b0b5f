"""The package version (one place, read by ``trio_bg.__version__`` and the OTel instrument)."""

from __future__ import annotations

__version__ = "0.1.0"
