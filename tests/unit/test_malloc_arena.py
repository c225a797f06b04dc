"""`trustyard serve` caps glibc at one malloc arena before its workers fork (cli/serve.py)."""

from __future__ import annotations

import subprocess
import sys

import pytest

# In a fresh interpreter: optionally cap the arenas, let four threads allocate, then count the
# arenas glibc reports (malloc_stats writes one "Arena N:" block per arena to stderr).
_PROGRAM = """
import ctypes, sys, threading
if sys.argv[1] == "capped":
    from trustyard.cli.serve import _one_malloc_arena
    _one_malloc_arena()
barrier = threading.Barrier(4)
def work():
    barrier.wait()  # all four threads allocate at once, so none can reuse a free arena
    keep = [bytes(300_000) for _ in range(20)]
    barrier.wait()
threads = [threading.Thread(target=work) for _ in range(4)]
for t in threads: t.start()
for t in threads: t.join()
ctypes.CDLL(None).malloc_stats()
"""


def _arenas(mode: str) -> int:
    done = subprocess.run(
        [sys.executable, "-c", _PROGRAM, mode], capture_output=True, text=True, check=True
    )
    return sum(1 for line in done.stderr.splitlines() if line.startswith("Arena "))


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc malloc_stats")
def test_threads_share_one_arena_once_capped() -> None:
    uncapped = _arenas("uncapped")
    assert uncapped > 1, "glibc gave the threads no arenas of their own: nothing to compare"
    assert _arenas("capped") == 1
