"""File helpers: atomic writes, and the checks made before a media file is decoded.

Atomic writes: a reader sees the old file or the complete new one, never a half-written file. The data
goes to a temporary file in the destination's directory (so both are on one file system), which is
flushed, fsync'ed and then renamed over the destination with `os.replace` (atomic on POSIX and Windows).
"""

import contextlib
import os
import secrets
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from codec.errors import MediaError


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "wb") -> Iterator[IO]:
    """Open a temporary file that replaces `path` when the `with` block ends without an exception.

    If the block raises, the temporary file is removed, `path` keeps its old content (or stays absent),
    and the exception propagates. A new file gets the permissions `open` would give it (0o666 less the
    umask); a replaced file keeps its own.

    Args:
        path: the destination. Its directory must exist.
        mode: a write mode for `open`: "wb", "w", "w+b" or "w+". Text modes use UTF-8.

    Yields:
        The open file object (binary or text as `mode` says).
    """
    if mode not in ("wb", "w+b", "w", "w+"):
        raise ValueError(f"atomic_write mode must be 'wb', 'w+b', 'w' or 'w+', got {mode!r}")
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    flags = os.O_CREAT | os.O_EXCL | (os.O_RDWR if "+" in mode else os.O_WRONLY) | getattr(os, "O_BINARY", 0)
    fd = os.open(tmp, flags, 0o666)
    try:
        with os.fdopen(fd, mode, **({} if "b" in mode else {"encoding": "utf-8"})) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        with contextlib.suppress(FileNotFoundError):
            os.chmod(tmp, stat.S_IMODE(os.stat(path).st_mode))
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write `data` to `path` atomically (see `atomic_write`)."""
    with atomic_write(path, "wb") as f:
        f.write(data)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write `text` to `path` atomically, UTF-8 encoded (see `atomic_write`)."""
    with atomic_write(path, "w") as f:
        f.write(text)


def _fsync_dir(directory: Path) -> None:
    """Make the rename itself durable; a no-op where directories cannot be opened (Windows)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def check_readable_file(path: str | os.PathLike) -> str:
    """Check that `path` is an existing, non-empty regular file before a decoder sees it.

    Args:
        path: the file to check.

    Returns:
        `path` as a string.

    Raises:
        MediaError: missing, a directory or other non-regular file, inaccessible, or 0 bytes long.
    """
    path = os.fspath(path)
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise MediaError(path, "no such file") from None
    except OSError as e:
        raise MediaError(path, f"cannot access file ({e.strerror or e})") from e
    if stat.S_ISDIR(st.st_mode):
        raise MediaError(path, "is a directory, not a file")
    if not stat.S_ISREG(st.st_mode):
        raise MediaError(path, "not a regular file")
    if st.st_size == 0:
        raise MediaError(path, "empty file (0 bytes)")
    return path
