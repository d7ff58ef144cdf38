"""Every Python block of README.md runs as it is written (from the repository root, each in a fresh namespace)."""

import os
import re
from pathlib import Path

import pytest

import codec

ROOT = Path(__file__).resolve().parents[1]
BLOCKS = re.findall(r"^```python\n(.*?)^```", (ROOT / "README.md").read_text(encoding="utf-8"), re.S | re.M)


def test_the_readme_has_python_blocks():
    assert len(BLOCKS) >= 6


@pytest.mark.parametrize("index", range(len(BLOCKS)), ids=lambda i: f"block{i}")
def test_readme_python_block_runs(index, monkeypatch):
    code = BLOCKS[index]
    if re.search(r"""["'](image|audio)["']|examples/""", code) and codec.bundled_models() != ["audio", "image"]:
        pytest.skip("this block uses the bundled models or the examples")
    monkeypatch.chdir(ROOT)
    monkeypatch.setitem(os.environ, "TQDM_DISABLE", "1")
    exec(compile(code, f"README.md python block {index}", "exec"), {"__name__": "readme"})
