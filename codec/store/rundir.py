"""Run directories: ``config.json`` + ``model.safetensors``, written atomically, loaded safely.

Model-agnostic: codecs (``codec.core.checkpoint``) and priors (``prior.checkpoint``) both store themselves
here, each passing its own config dict and builder. Weights are read with safetensors only (never pickle).
A model's identity (``model_hash``) is a SHA-256 over its config and every tensor (name, dtype, shape,
bytes), so two models hash equal only if they compute alike.

Weights may be stored compactly as integers with power-of-two scales: an int8 or int16 tensor ``X`` with a
companion ``X.exp2`` (integers, broadcastable to ``X``'s shape, e.g. one per row) stands for the float weights
``X * 2^-X.exp2``, exactly (bundled context models store their 8-bit weight rows so: ``prior.context_integer``).
"""

import hashlib
import json
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save

from codec.errors import CheckpointError
from codec.store.files import atomic_write_bytes, atomic_write_text

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
EXP2_SUFFIX = ".exp2"  # "X.exp2" beside integers "X": the weights are X * 2^-X.exp2 (see the module docstring)
MAX_EXP2 = 64  # |X.exp2|: the scaled values stay normal float32 numbers, exactly


def model_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The state dict as contiguous CPU tensors, ready for safetensors (bool buffers kept as bool)."""
    return {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}


def rebuilt_on_load(model: torch.nn.Module) -> frozenset[str]:
    """Names of the buffers ``model``'s modules rebuild from their other tensors when a saved state leaves them out
    (a module's ``rebuilt_on_load`` attribute, such as the quantizer's EMA sums)."""
    modules = model.named_modules()
    return frozenset(f"{n}.{b}" if n else b for n, mod in modules for b in getattr(mod, "rebuilt_on_load", ()))


def state_hash(config: dict, model: torch.nn.Module) -> str:
    """Hex SHA-256 of a config dict and a module's tensors; independent of device and of how it was saved."""
    h = hashlib.sha256()
    h.update(json.dumps(config, sort_keys=True).encode())
    for name, t in sorted(model_state(model).items()):
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def save_run(
    run_dir: str | Path, model: torch.nn.Module, config: dict, fmt: str, state: dict[str, torch.Tensor] | None = None
) -> None:
    """Write ``config.json`` and ``model.safetensors`` into ``run_dir`` (created if needed), atomically; the weights
    are ``state`` when given (e.g. compact integers, see the module docstring), else the model's."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    state = model_state(model) if state is None else {k: v.contiguous() for k, v in state.items()}
    atomic_write_bytes(run_dir / WEIGHTS_NAME, save(state, metadata={"format": fmt}))
    atomic_write_text(run_dir / CONFIG_NAME, json.dumps(config, indent=2) + "\n")


def load_run(path: str | Path, kind: str, build: Callable[[dict], torch.nn.Module]) -> torch.nn.Module:
    """Build a module from a run directory's config and load its weights, on the CPU.

    Args:
        path: a directory holding ``config.json`` and ``model.safetensors``.
        kind: what it should hold ("codec", "prior"), for messages.
        build: config dict -> module; raises ValueError / TypeError on a bad config.

    Raises:
        CheckpointError: missing directory or files, unreadable JSON, or weights that do not fit the config.
    """
    run_dir = Path(path)
    if not run_dir.is_dir():
        raise CheckpointError(f"{run_dir}: not a {kind} directory (expected {CONFIG_NAME} and {WEIGHTS_NAME})")
    cfg_path, w_path = run_dir / CONFIG_NAME, run_dir / WEIGHTS_NAME
    for p in (cfg_path, w_path):
        if not p.is_file():
            raise CheckpointError(f"{run_dir}: missing {p.name}")
    try:
        model = build(json.loads(cfg_path.read_text()))
    except (json.JSONDecodeError, UnicodeDecodeError, TypeError, ValueError) as e:
        raise CheckpointError(f"{cfg_path}: invalid {kind} config: {e}") from None
    try:
        state = load_file(w_path)
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"{w_path}: unreadable weights: {e}") from None
    state = dequantize(state, w_path)
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state) - rebuilt_on_load(model))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        raise CheckpointError(
            f"{w_path}: weights do not match {CONFIG_NAME} (missing {missing[:3]}, unexpected {unexpected[:3]})"
        )
    wrong = [k for k in state if expected[k].shape != state[k].shape]
    if wrong:
        raise CheckpointError(
            f"{w_path}: tensor {wrong[0]} has shape {tuple(state[wrong[0]].shape)}, "
            f"config expects {tuple(expected[wrong[0]].shape)}"
        )
    model.load_state_dict({k: v.to(expected[k].dtype) for k, v in state.items()})
    return model


def dequantize(state: dict[str, torch.Tensor], where) -> dict[str, torch.Tensor]:
    """``state`` with every ``X`` / ``X.exp2`` pair (see the module docstring) replaced by float32 ``X * 2^-exp2``.

    Raises:
        CheckpointError: an ``.exp2`` without its tensor, or one that is not integer, out of range or not
            broadcastable to it, or scaled values that are not 8- or 16-bit integers.
    """
    out = {}
    for name, t in state.items():
        if name.endswith(EXP2_SUFFIX):
            if name[: -len(EXP2_SUFFIX)] not in state:
                raise CheckpointError(f"{where}: {name} has no tensor {name[: -len(EXP2_SUFFIX)]} to scale")
            continue
        e = state.get(name + EXP2_SUFFIX)
        if e is None:
            out[name] = t
            continue
        ok = t.dtype in (torch.int8, torch.int16) and not e.is_floating_point() and e.dtype != torch.bool
        ok = ok and e.ndim == t.ndim and all(a in (1, b) for a, b in zip(e.shape, t.shape))
        if not ok or (e.numel() and int(e.abs().max()) > MAX_EXP2):
            raise CheckpointError(
                f"{where}: {name} ({t.dtype}, {tuple(t.shape)}) with {name}{EXP2_SUFFIX} ({e.dtype}, "
                f"{tuple(e.shape)}) is not 8- or 16-bit integers with integer exponents up to {MAX_EXP2}"
            )
        out[name] = torch.ldexp(t.double(), -e.double()).float()  # exact: 16-bit integers, small exponents
    return out


def model_hash(model: torch.nn.Module) -> str:
    """Hex SHA-256 identity of a model whose ``config`` is a dataclass (a codec or a prior): config + tensors.

    A config with an ``identity()`` method is hashed as that dict (fields added later, left out while they hold the
    values that reproduce older models: their hashes stay the same); otherwise as all its fields.
    """
    identity = getattr(model.config, "identity", None)
    return state_hash(identity() if identity is not None else asdict(model.config), model)
