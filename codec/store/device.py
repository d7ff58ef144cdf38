"""Where models run: ``resolve_device`` turns a user's device string into a ``torch.device`` this machine has."""

import torch

from codec.errors import DeviceError


def resolve_device(device: str | torch.device | None = None) -> torch.device:
    """The device to run on.

    Args:
        device: "cpu", "cuda", "cuda:N", "mps", a ``torch.device``, or None for CUDA when available, else the CPU.

    Returns:
        A ``torch.device`` that exists on this machine.

    Raises:
        DeviceError: a device torch does not know ("tpu"), or one this machine lacks (CUDA on a machine without
            it, "cuda:3" with fewer GPUs, MPS off Apple silicon); the message says what to use instead.
    """
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise DeviceError(f"unknown device {str(device)!r}; use cpu or cuda (cuda:N for the N-th GPU)") from None
    if dev.type == "cpu":
        return dev
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            why = "this torch is built without CUDA" if torch.version.cuda is None else "no CUDA GPU is visible"
            raise DeviceError(f"device {str(device)!r} is not available: {why}; use cpu")
        count = torch.cuda.device_count()
        if dev.index is not None and dev.index >= count:
            raise DeviceError(f"device {str(device)!r} is not available: this machine has {count} CUDA GPU(s)")
        return dev
    if dev.type == "mps":
        if not torch.backends.mps.is_available():
            raise DeviceError(f"device {str(device)!r} is not available on this machine; use cpu")
        return dev
    raise DeviceError(f"device {str(device)!r} is not supported; use cpu or cuda")
