"""The exceptions vqcodec raises on purpose, so that callers (and the CLI) can catch them by kind."""

import os


class VQCodecError(Exception):
    """Base class of every error vqcodec raises deliberately."""


class MediaError(VQCodecError, ValueError):
    """An image or audio file that cannot be used: missing, empty, truncated, corrupt or of an unsupported format.

    Args:
        path: the file concerned; it is always part of the message.
        reason: what is wrong with it, in a few words.

    Attributes:
        path: the file, as a string.
        reason: the reason given.
    """

    def __init__(self, path: str | os.PathLike, reason: str):
        super().__init__(os.fspath(path), reason)  # both in args, so the error survives pickling
        self.path = os.fspath(path)
        self.reason = reason

    def __str__(self) -> str:
        return f"{self.path}: {self.reason}"


class CorruptFileError(VQCodecError):
    """A vqcodec file (compressed stream, container) fails its checks: bad magic, version, length or checksum."""


class ModelMismatchError(VQCodecError):
    """A compressed file or checkpoint was made with a model other than the one asked to read it."""


class DeviceError(VQCodecError, ValueError):
    """A device that torch does not know ("tpu") or that this machine does not have (CUDA without a GPU)."""


class CheckpointError(VQCodecError):
    """A checkpoint cannot be loaded or saved: missing, incomplete, or with unexpected tensors."""


class WorkerError(VQCodecError, RuntimeError):
    """A worker process of ``compress`` / ``decompress`` ended without returning its result (killed by a signal or
    by the out-of-memory killer)."""
