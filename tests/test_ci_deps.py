"""``.ci/deps`` waits (bounded) for another apt that holds the package locks, instead of failing
at once: run for real against a stand-in ``apt-get`` (and ``sudo``) on ``PATH`` that says "Could
not get lock" as apt does, with ``DEPS_BIN`` pointing where no package is installed."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
LOCKED = (
    "E: Could not get lock /var/lib/apt/lists/lock. It is held by process 4242 (apt-get)\n"
    "E: Unable to lock directory /var/lib/apt/lists/\n"
)
APT_GET = f"""#!/usr/bin/env bash
# A stand-in apt-get: notes its arguments; "update" fails on the lock while $LOCKED_RUNS > 0.
echo "$*" >> "$CALLS"
if [ "$1" != "-o" ] || [ "${{2%%=*}}" != "DPkg::Lock::Timeout" ]; then
    echo "E: no DPkg::Lock::Timeout" >&2; exit 100
fi
if [ "$3" = update ]; then
    runs=$(cat "$COUNT" 2>/dev/null || echo 0)
    echo $((runs + 1)) > "$COUNT"
    if [ "$runs" -lt "$LOCKED_RUNS" ]; then printf '%s' "{LOCKED}" >&2; exit 100; fi
fi
if [ "$3" = install ] && [ -n "${{FAIL_INSTALL:-}}" ]; then
    echo "E: Unable to locate package chromium" >&2; exit 100
fi
exit 0
"""


def run_deps(
    tmp_path: Path, *, locked_runs: int, lock_wait: int, fail_install: bool = False
) -> tuple[subprocess.CompletedProcess[str], list[str], float]:
    stubs = tmp_path / "stubs"
    stubs.mkdir(parents=True)
    (stubs / "apt-get").write_text(APT_GET)
    (stubs / "sudo").write_text('#!/usr/bin/env bash\nexec "$@"\n')
    for stub in stubs.iterdir():
        stub.chmod(0o755)
    empty = tmp_path / "bin"
    empty.mkdir()
    env = {
        **os.environ,
        "PATH": f"{stubs}:{os.environ['PATH']}",
        "DEPS_BIN": str(empty),
        "APT_LOCK_WAIT": str(lock_wait),
        "CALLS": str(tmp_path / "calls"),
        "COUNT": str(tmp_path / "count"),
        "LOCKED_RUNS": str(locked_runs),
        **({"FAIL_INSTALL": "1"} if fail_install else {}),
    }
    began = time.monotonic()
    done = subprocess.run(
        ["bash", str(ROOT / ".ci" / "deps")], env=env, capture_output=True, text=True, timeout=60
    )
    calls_file = tmp_path / "calls"
    calls = calls_file.read_text().splitlines() if calls_file.exists() else []
    return done, calls, time.monotonic() - began


@pytest.mark.slow
def test_apt_get_waits_for_a_lock_another_apt_holds(tmp_path: Path) -> None:
    done, calls, _ = run_deps(tmp_path, locked_runs=2, lock_wait=30)
    assert done.returncode == 0, done.stderr
    assert calls == [
        "-o DPkg::Lock::Timeout=30 update -q",
        "-o DPkg::Lock::Timeout=30 update -q",
        "-o DPkg::Lock::Timeout=30 update -q",
        "-o DPkg::Lock::Timeout=30 install -y -q --no-install-recommends "
        "chromium chromium-driver redis-server",
    ]
    assert done.stderr.count(".ci/deps: apt-get update: waiting for another apt") == 2


@pytest.mark.slow
def test_the_wait_is_bounded_and_other_failures_are_not_retried(tmp_path: Path) -> None:
    done, calls, took = run_deps(tmp_path / "locked", locked_runs=1000, lock_wait=2)
    assert done.returncode == 100
    assert done.stderr.endswith(".ci/deps: apt-get update: another apt held the lock for 2 s\n")
    assert 2 <= took < 10 and 2 <= len(calls) <= 4
    assert all(call.startswith("-o DPkg::Lock::Timeout=2 update") for call in calls)

    done, calls, _ = run_deps(tmp_path / "other", locked_runs=0, lock_wait=30, fail_install=True)
    assert done.returncode == 100
    assert done.stderr.endswith("E: Unable to locate package chromium\n")
    assert [call.split()[2] for call in calls] == ["update", "install"]  # tried once
