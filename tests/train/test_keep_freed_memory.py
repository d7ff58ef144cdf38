"""codec.train.memory.keep_freed_memory: after it, glibc serves a large block from its heap (not mmap) and keeps
it when freed; before it, the same block is mmapped. Measured with glibc's own mallinfo2 in a fresh process, so
the test process's allocator is left alone."""

import json
import os
import subprocess
import sys

import pytest

PROBE = """
import ctypes, json, os
import numpy as np
from codec.train.memory import keep_freed_memory

class Info(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in
                "arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks keepcost".split()]

libc = ctypes.CDLL("libc.so.6")
libc.mallinfo2.restype = Info
out = {}
for phase in ("before", "after"):
    if phase == "after":
        out["applied"] = keep_freed_memory()
    block = np.ones(40_000_000 // 8)  # 40 MB: above glibc's largest mmap threshold (32 MiB)
    held = libc.mallinfo2()
    del block
    freed = libc.mallinfo2()
    out[phase] = {"mmapped_while_held": held.hblkhd, "heap_free_after": freed.fordblks}
print(json.dumps(out))
"""


def _probe(env: dict) -> dict:
    proc = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's allocator")
def test_large_blocks_come_from_the_heap_and_stay():
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    got = _probe(env)
    assert got["applied"] is True
    assert got["before"]["mmapped_while_held"] >= 40_000_000  # glibc's default: mmap, given back on free
    assert got["after"]["mmapped_while_held"] < 40_000_000  # now from the heap ...
    assert got["after"]["heap_free_after"] >= 40_000_000  # ... and kept there, free for the next step
    tuned = _probe({**env, "MALLOC_ARENA_MAX": "2"})  # the user tuned the allocator: left as it is
    assert tuned["applied"] is False and tuned["after"]["mmapped_while_held"] >= 40_000_000
