"""``resolve_device``: the default, and one clear ``DeviceError`` for devices torch does not know or this machine
lacks (CUDA is faked away, so the same checks run on machines with and without a GPU)."""

import pytest
import torch

import codec
from codec.store.device import resolve_device


def test_default_and_cpu():
    assert resolve_device(None).type == ("cuda" if torch.cuda.is_available() else "cpu")
    assert resolve_device("cpu") == torch.device("cpu") == resolve_device(torch.device("cpu"))


@pytest.mark.parametrize("name", ["tpu", "gpu", "cuda:x", "", "cpu0"])
def test_unknown_device(name):
    with pytest.raises(codec.DeviceError, match=f"unknown device '{name}'; use cpu or cuda"):
        resolve_device(name)


def test_cuda_without_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    for name in ("cuda", "cuda:0"):
        with pytest.raises(codec.DeviceError, match=f"device '{name}' is not available: .*; use cpu"):
            resolve_device(name)
    assert resolve_device(None) == torch.device("cpu")


def test_cuda_index_beyond_the_gpus(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert resolve_device("cuda:1") == torch.device("cuda:1")
    with pytest.raises(codec.DeviceError, match="'cuda:2' is not available: this machine has 2 CUDA GPU"):
        resolve_device("cuda:2")


def test_other_backends(monkeypatch):
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    with pytest.raises(codec.DeviceError, match="'mps' is not available"):
        resolve_device("mps")
    with pytest.raises(codec.DeviceError, match="'meta' is not supported"):
        resolve_device("meta")


def test_loading_a_model_on_a_missing_device_raises_device_error(tmp_path, monkeypatch):
    m = codec.Codec(codec.ImageCodecConfig(base_channels=8, max_channels=16, latent_dim=8))
    codec.save_model(tmp_path / "m", m.eval())
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(codec.DeviceError):
        codec.load(tmp_path / "m", device="cuda")
    with pytest.raises(codec.DeviceError):
        codec.compress(torch.rand(3, 8, 8), tmp_path / "m", None, device="tpu")
