"""Objects the garbage collector tracks per in-flight request: HTTP case (d) against (e).

``python -m benchmarks.tracked [--requests N] [--types]``

P5 compares the p99 latency of (d), a request that leaves a 2 s ``after_response`` task
(``benchmarks.apps:raw_sleep``), with (e), a raw ASGI call that sleeps 2 s after its body
(``raw_sleep_inline``). At 2,500 requests a second ~5,000 of either are in flight, and a full
collection's pause grows with the objects it walks: this counts them. Each app is called
directly, N requests at once in one trio run with a receive/send pair per request (the server's
own objects are the same for both and are left out), and once all N are waiting in their 2 s
sleep the GC-tracked objects are counted against the count before. ``--types`` prints what the
difference between the two is made of.
"""

from __future__ import annotations

import argparse
import gc
import logging
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

import trio
import trio.testing

from . import apps

App = Callable[[dict[str, Any], Any, Any], Awaitable[None]]


def _scope() -> dict[str, Any]:
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": "/",
        "raw_path": b"/",
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"localhost")],
        "client": ("127.0.0.1", 5000),
        "server": ("127.0.0.1", 8000),
    }


async def _request(app: App, responded: list[int], all_responded: trio.Event, n: int) -> None:
    done = trio.Event()

    async def receive() -> dict[str, Any]:
        if not done.is_set():
            return {"type": "http.request", "body": b"", "more_body": False}
        await trio.sleep_forever()
        raise AssertionError  # pragma: no cover

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.body" and not message.get("more_body"):
            responded.append(1)
            if len(responded) == n:
                all_responded.set()

    await app(_scope(), receive, send)


async def _in_flight(app: App, n: int, show: bool) -> tuple[float, Counter[str]]:
    """Tracked objects per request while ``n`` requests of ``app`` are in flight."""
    responded: list[int] = []
    all_responded = trio.Event()
    async with trio.open_nursery() as nursery:
        gc.collect()
        before_ids = {id(o) for o in gc.get_objects()} if show else set()
        before = len(gc.get_objects())
        for _ in range(n):
            nursery.start_soon(_request, app, responded, all_responded, n)
        await all_responded.wait()
        await trio.testing.wait_all_tasks_blocked()
        gc.collect()
        objects = gc.get_objects()
        after = len(objects)
        kinds: Counter[str] = Counter()
        if show:
            kinds = Counter(type(o).__qualname__ for o in objects if id(o) not in before_ids)
        del objects
        nursery.cancel_scope.cancel()
    return (after - before) / n, kinds


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.tracked")
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--types", action="store_true", help="what the difference is made of")
    args = parser.parse_args()
    logging.disable(logging.WARNING)  # the cancelled 2 s tasks, named by each shutdown report
    results: dict[str, tuple[float, Counter[str]]] = {}
    cases: dict[str, tuple[App, str]] = {
        "d": (apps.raw_sleep, "TaskMiddleware + a 2 s after_response task"),
        "floor": (apps.raw_nursery_scoped_sleep, "a nursery per request + a scoped 2 s task"),
        "e": (apps.raw_sleep_inline, "raw ASGI, 2 s sleep after the body"),
    }
    for case, (app, _) in cases.items():
        results[case] = trio.run(_in_flight, app, args.requests, args.types)
    print(f"GC-tracked objects per in-flight request, {args.requests} requests at once:")
    for case, (_, text) in cases.items():
        print(f"  {'(' + case + ')':8} {text:45} {results[case][0]:6.1f}")
    d, floor, e = results["d"][0], results["floor"][0], results["e"][0]
    print(f"  (d) - (floor): {d - floor:+.1f} per request; (d) - (e): {d - e:+.1f}")
    if args.types:
        diff = results["d"][1].copy()
        diff.subtract(results["floor"][1])
        print("  what (d) has more of than the floor, per request:")
        for kind, count in diff.most_common():
            if abs(count / args.requests) >= 0.5:
                print(f"    {count / args.requests:+5.1f}  {kind}")


if __name__ == "__main__":
    main()
