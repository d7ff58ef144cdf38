"""Atomic files (codec.store.files): a failed write leaves the old file, and a replaced file keeps its mode."""

import os

import pytest

from codec.store.files import atomic_write, atomic_write_bytes, atomic_write_text


def _no_temp_files(directory) -> bool:
    return not [p for p in os.listdir(directory) if p.endswith(".tmp")]


def test_atomic_write_keeps_old_content_when_the_writer_fails(tmp_path):
    path = tmp_path / "out.bin"
    path.write_bytes(b"old")
    with pytest.raises(RuntimeError, match="midway"), atomic_write(path) as f:
        f.write(b"new partial data")
        raise RuntimeError("midway")
    assert path.read_bytes() == b"old" and _no_temp_files(tmp_path)

    atomic_write_bytes(path, b"new")
    atomic_write_text(tmp_path / "t.txt", "h\u00e9")
    assert path.read_bytes() == b"new" and (tmp_path / "t.txt").read_text("utf-8") == "h\u00e9"
    assert sorted(os.listdir(tmp_path)) == ["out.bin", "t.txt"]


def test_atomic_write_keeps_permissions_of_the_file_it_replaces(tmp_path):
    path = tmp_path / "script.sh"
    path.write_text("old")
    path.chmod(0o750)
    atomic_write_text(path, "new")
    assert path.read_text() == "new" and (path.stat().st_mode & 0o777) == 0o750
