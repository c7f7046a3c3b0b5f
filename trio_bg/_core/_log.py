"""The ``trio_bg`` logger: failures, retries and shutdown reports go here."""

from __future__ import annotations

import logging

logger = logging.getLogger("trio_bg")
