"""Training state shared by codec and prior training: optimizer state as named tensors, RNG states, and
the learning-rate schedule. Everything is stored as safetensors + JSON (no pickle)."""

import json
import math
import random

import numpy as np
import torch


def plain(obj):
    """A JSON round trip: tuples become lists, so saved and live values compare equal."""
    return json.loads(json.dumps(obj))


def optimizer_tensors(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    """Optimizer state -> (named tensors "optim.<param>.<key>", JSON part: param groups and scalars)."""
    sd = optimizer.state_dict()
    tensors, scalars = {}, {}
    for pid, entry in sd["state"].items():
        for key, v in entry.items():
            if torch.is_tensor(v):
                tensors[f"optim.{pid}.{key}"] = v.detach().to("cpu").contiguous()
            else:
                scalars.setdefault(str(pid), {})[key] = v
    return tensors, {"param_groups": plain(sd["param_groups"]), "scalars": scalars}


def load_optimizer_tensors(optimizer: torch.optim.Optimizer, tensors: dict, saved: dict) -> None:
    state: dict[int, dict] = {}
    for name, v in tensors.items():
        if name.startswith("optim."):
            _, pid, key = name.split(".", 2)
            state.setdefault(int(pid), {})[key] = v
    for pid, entry in saved["scalars"].items():
        state.setdefault(int(pid), {}).update(entry)
    groups = [{**g, "betas": tuple(g["betas"])} if "betas" in g else g for g in saved["param_groups"]]
    optimizer.load_state_dict({"state": state, "param_groups": groups})


def _as_bytes(array: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(array).view(np.uint8).copy())


def rng_state() -> dict[str, torch.Tensor]:
    """This process's torch / numpy / python (/ CUDA) RNG states as uint8 tensors of fixed sizes."""
    _, keys, pos, has_gauss, cached = np.random.get_state()
    version, internal, gauss = random.getstate()
    out = {
        "torch": torch.get_rng_state(),
        "numpy": _as_bytes(np.asarray(keys, dtype="<u4")),
        "numpy_extra": _as_bytes(np.array([pos, has_gauss, cached], dtype="<f8")),
        "python": _as_bytes(np.asarray(internal, dtype="<u4")),
        "python_extra": _as_bytes(np.array([version, gauss is not None, gauss or 0.0], dtype="<f8")),
    }
    if torch.cuda.is_available():
        out["cuda"] = torch.cuda.get_rng_state()
    return out


def set_rng_state(state: dict[str, torch.Tensor]) -> None:
    torch.set_rng_state(state["torch"])
    pos, has_gauss, cached = state["numpy_extra"].numpy().view("<f8")
    np.random.set_state(("MT19937", state["numpy"].numpy().view("<u4").copy(), int(pos), int(has_gauss), cached))
    version, has, gauss = state["python_extra"].numpy().view("<f8")
    internal = tuple(int(v) for v in state["python"].numpy().view("<u4"))
    random.setstate((int(version), internal, float(gauss) if has else None))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


def lr_factor(step: int, warmup: int, total: int, min_ratio: float) -> float:
    """Linear warm-up over ``warmup`` steps, then cosine decay from 1 to ``min_ratio`` at ``total``."""
    if step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))
