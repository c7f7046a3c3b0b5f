"""What to tell a user whose app runs on the wrong event loop or thread: server advice, which the
core does not give (it knows no server), for the ASGI layer and everything above it."""

from __future__ import annotations

SERVE_UNDER_TRIO = (
    "run Hypercorn with --worker-class trio (hypercorn --worker-class trio module:app), "
    "or python -m trio_bg serve module:app"
)
"""The advice of ``trio_bg needs trio, not asyncio: ...`` from an app's entry points."""

FROM_A_SYNC_ENDPOINT = ", such as a plain 'def' Starlette or FastAPI endpoint"
"""Where a request's start from a worker thread usually comes from (the core's thread message
ends with "a function that trio.to_thread.run_sync runs"; this follows it)."""
