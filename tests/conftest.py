"""Test setup: run Triton kernels through the interpreter on CPU-only machines.

TRITON_INTERPRET must be set before triton is first imported, so it is set here, at collection time.
"""

import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402

# Tiny shapes: one thread is as fast, and far faster when the 2 cores are shared with other work.
torch.set_num_threads(1)

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield
