"""The trio_bg benchmark harness: ``python -m benchmarks`` (``--help`` for the options).

Two parts, each a table of medians over repeated rounds and the ratios that matter:

- ``micro`` (:mod:`benchmarks.micro`): the cost of a task against raw trio and anyio's task
  handles, in fresh ``trio.run`` calls in this process;
- ``http`` (:mod:`benchmarks.http_load`): Hypercorn's trio worker serving the apps of
  :mod:`benchmarks.apps` in a subprocess pinned to CPU 0, loaded by ``wrk`` pinned to CPU 1.

The figures go to stdout, to ``benchmarks/results/latest.json`` and to ``docs/benchmarks.md``
(with the chart ``docs/img/benchmarks.png``); see :mod:`benchmarks.report`.

``--compare CHECKOUT`` (:mod:`benchmarks.compare`) measures P1 and HTTP case (b) for this tree's
trio_bg and another checkout's in one run, each in processes of its own started through
:mod:`benchmarks.subject`, and prints the ratios new / old.
"""
