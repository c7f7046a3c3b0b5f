"""Small task functions shared by the core tests."""

from __future__ import annotations

import trio


async def sleep_then_return(seconds: float, value: object) -> object:
    await trio.sleep(seconds)
    return value


async def sleep_then_raise(seconds: float, exc: BaseException) -> None:
    await trio.sleep(seconds)
    raise exc
