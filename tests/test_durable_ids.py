"""Job ids: ``job-`` and 32 hex digits, time first, never the same in two processes."""

from __future__ import annotations

import os
import random
import re
import time

from trio_bg.durable._ids import key_id, random_id

ID = re.compile(r"job-[0-9a-f]{32}")


def test_ids_are_job_and_32_hex_digits_and_sort_by_time() -> None:
    first = random_id()
    time.sleep(0.002)  # the next millisecond: the time comes first
    second = random_id()
    assert ID.fullmatch(first) and ID.fullmatch(second)
    assert first < second
    assert len({random_id() for _ in range(10_000)}) == 10_000


def test_an_apps_random_seed_does_not_repeat_ids() -> None:
    random.seed(42)
    before = random_id()
    random.seed(42)
    assert random_id()[16:] != before[16:]


def test_a_forked_child_draws_other_ids_than_its_parent() -> None:
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: its ids, then out without running anything of the parent's
        os.write(write, " ".join(random_id() for _ in range(50)).encode())
        os._exit(0)
    os.close(write)
    _, status = os.waitpid(pid, 0)
    child = set(os.read(read, 1 << 16).decode().split())
    os.close(read)
    mine = {random_id() for _ in range(50)}
    assert os.waitstatus_to_exitcode(status) == 0
    assert len(child) == 50
    assert not {i[16:] for i in child} & {i[16:] for i in mine}


def test_a_keys_id_is_the_same_everywhere_and_shaped_like_the_others() -> None:
    assert key_id("emails", "send", "order-42") == key_id("emails", "send", "order-42")
    assert key_id("emails", "send", "order-42") != key_id("emails", "send", "order-43")
    assert ID.fullmatch(key_id("emails", "send", "order-42"))
