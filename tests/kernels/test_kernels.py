"""nearest_code against a float64 reference, on both backends, awkward shapes and every dtype."""

import pytest
import torch

import kernels
from kernels import nearest_triton
from kernels.nearest_torch import nearest_code_torch
from tests.conftest import DEVICES

DTYPES = [torch.float32, torch.float16, torch.bfloat16]
RTOL = {torch.float32: 1e-3, torch.float16: 2e-2, torch.bfloat16: 2e-2}
SHAPES = [  # (N, K, D)
    (1, 1, 3),
    (1, 1031, 257),
    (8193, 1031, 60),
    (8193, 1, 3),
    (130, 17, 60),
    (37, 1031, 3),
    (65, 64, 1024),
]
BACKENDS = ["torch", "triton"]
# Triton runs on CPU tensors only through the interpreter (conftest sets it on machines without CUDA); on a CUDA
# machine the Triton cases run on the GPU instead
TRITON_DEVICE = "cpu" if nearest_triton.INTERPRET else "cuda"


def _device_for(backend: str) -> str:
    return TRITON_DEVICE if backend == "triton" else "cpu"


_REFERENCE: dict = {}


def _inputs(n, k, d, dtype, device):
    """Fresh random inputs, the same for every backend of one case (so the reference is computed once)."""
    g = torch.Generator().manual_seed(n * 1_000_003 + k * 1009 + d)
    x = torch.randn(n, d, generator=g).to(dtype)
    # Codes drawn near the data scale, plus a far-away cluster, so the argmin is not trivial.
    c = torch.randn(k, d, generator=g)
    c[k // 2 :] += 3.0
    return x.to(device), c.to(dtype).to(device)


def _reference(x, c):
    key = (tuple(x.shape), tuple(c.shape), x.dtype, float(x.double().sum()), float(c.double().sum()))
    if key not in _REFERENCE:
        _REFERENCE[key] = kernels.nearest_code_naive(x, c)
    return _REFERENCE[key]


def _check(x, c, indices, sqdist, rtol):
    ref_idx, ref_all = _reference(x, c)  # (N,), (N, K) float64
    n, k = ref_all.shape
    assert indices.dtype == torch.int64 and sqdist.dtype == torch.float32
    assert indices.shape == (n,) and sqdist.shape == (n,)
    idx = indices.cpu()
    bad_range = (idx < 0) | (idx >= k)
    assert not bad_range.any(), f"indices out of range at rows {bad_range.nonzero()[:5].flatten().tolist()}"
    true_min = ref_all.min(dim=1).values
    chosen = ref_all.gather(1, idx[:, None])[:, 0]
    # The expanded score ||c||^2 - 2 x.c carries fp32 rounding of the size of the norms involved.
    scale = x.double().cpu().pow(2).sum(1) + c.double().cpu().pow(2).sum(1).max()
    atol = 8 * 2.0**-24 * scale
    excess = chosen - true_min
    bad = excess > rtol * true_min + atol
    if bad.any():
        rows = bad.nonzero()[:5].flatten().tolist()
        pytest.fail(
            f"{int(bad.sum())} rows chose a non-nearest code, e.g. rows {rows}: "
            f"chosen {chosen[rows].tolist()} vs min {true_min[rows].tolist()} (ref idx {ref_idx[rows].tolist()})"
        )
    got = sqdist.double().cpu()
    dist_bad = (got - chosen).abs() > 1e-5 * chosen + 1e-6
    if dist_bad.any():
        rows = dist_bad.nonzero()[:5].flatten().tolist()
        pytest.fail(f"sqdist differs from the chosen code's distance at rows {rows}: {got[rows]} vs {chosen[rows]}")


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("n,k,d", SHAPES)
def test_matches_float64_reference(n, k, d, dtype, backend, device):
    if backend == "triton" and device == "cpu" and not nearest_triton.INTERPRET:
        pytest.skip("Triton on CPU tensors needs TRITON_INTERPRET=1 (the CUDA case covers this machine)")
    x, c = _inputs(n, k, d, dtype, device)
    # Poisoned outputs: any element the backend fails to write is caught.
    indices = torch.full((n,), -7, dtype=torch.int64, device=device)
    sqdist = torch.full((n,), float("nan"), dtype=torch.float32, device=device)
    ret = kernels.nearest_code(x, c, backend=backend, out=(indices, sqdist))
    assert ret[0] is indices and ret[1] is sqdist
    _check(x, c, indices, sqdist, RTOL[dtype])


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_torch_path_tiles_over_codes(dtype):
    """A tiny tile budget forces the running (min, argmin) across code tiles and many row chunks."""
    x, c = _inputs(301, 1031, 60, dtype, "cpu")
    indices = torch.full((301,), -7, dtype=torch.int64)
    sqdist = torch.full((301,), float("nan"))
    nearest_code_torch(x, c, indices, sqdist, tile_bytes=1024)  # 4 codes x 64 rows per tile
    _check(x, c, indices, sqdist, RTOL[dtype])


def test_auto_backend_and_outputs_on_input_device():
    x, c = _inputs(50, 33, 7, torch.float32, "cpu")
    i, s = kernels.nearest_code(x, c)
    assert i.device == x.device and s.device == x.device
    _check(x, c, i, s, RTOL[torch.float32])


@pytest.mark.parametrize("backend", BACKENDS)
def test_empty_x(backend):
    dev = _device_for(backend)
    i, s = kernels.nearest_code(torch.empty(0, 5, device=dev), torch.randn(3, 5, device=dev), backend=backend)
    assert i.shape == (0,) and s.shape == (0,)


def test_exact_ties_pick_a_minimal_code():
    c = torch.tensor([[1.0, 0.0], [-1.0, 0.0], [0.0, 5.0]])
    x = torch.zeros(3, 2)
    for backend in BACKENDS:
        dev = _device_for(backend)
        i, s = kernels.nearest_code(x.to(dev), c.to(dev), backend=backend)
        assert set(i.tolist()) <= {0, 1}
        assert torch.equal(s.cpu(), torch.ones(3))


def test_known_answer():
    c = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    x = torch.tensor([[9.0, 1.0], [1.0, 8.0], [-1.0, -1.0]])
    for backend in BACKENDS:
        dev = _device_for(backend)
        i, s = kernels.nearest_code(x.to(dev), c.to(dev), backend=backend)
        assert i.tolist() == [1, 2, 0]
        assert s.tolist() == [2.0, 5.0, 2.0]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(
    "x,c,match",
    [
        (torch.randn(4, 3), torch.randn(5, 4), "dimension mismatch"),
        (torch.randn(4), torch.randn(5, 4), "shape"),
        (torch.randn(4, 3), torch.randn(2, 5, 3), "shape"),
        (torch.randn(4, 3), torch.randn(5, 3).half(), "dtypes differ"),
        (torch.randn(4, 3).double(), torch.randn(5, 3).double(), "dtype must be"),
        (torch.randint(0, 3, (4, 3)), torch.randint(0, 3, (5, 3)), "dtype must be"),
        (torch.randn(4, 3), torch.empty(0, 3), "K >= 1"),
        (torch.tensor([[0.0, float("nan")]]), torch.randn(5, 2), "non-finite"),
        (torch.tensor([[0.0, float("inf")]]), torch.randn(5, 2), "non-finite"),
        (torch.randn(4, 2), torch.tensor([[0.0, float("nan")]]), "codebook contains non-finite"),
    ],
)
def test_bad_input_raises_value_error(x, c, match, backend):
    dev = _device_for(backend)
    with pytest.raises(ValueError, match=match):
        kernels.nearest_code(x.to(dev), c.to(dev), backend=backend)


def test_bad_backend_and_out():
    x, c = torch.randn(4, 3), torch.randn(5, 3)
    with pytest.raises(ValueError, match="backend must be"):
        kernels.nearest_code(x, c, backend="cuda")
    with pytest.raises(ValueError, match="out\\[0\\]"):
        kernels.nearest_code(x, c, out=(torch.empty(4, dtype=torch.int32), torch.empty(4)))
    with pytest.raises(ValueError, match="out\\[1\\]"):
        kernels.nearest_code(x, c, out=(torch.empty(4, dtype=torch.int64), torch.empty(3)))


def test_triton_on_cpu_without_interpreter_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(nearest_triton, "INTERPRET", False)
    assert not kernels.triton_available("cpu")
    with pytest.raises(kernels.BackendUnavailableError, match="TRITON_INTERPRET"):
        kernels.nearest_code(torch.randn(4, 3), torch.randn(5, 3), backend="triton")


def test_cpu_searches_never_import_triton():
    """Triton is imported on first use only (it costs ~0.2 s of every CLI call): the PyTorch path on CPU
    tensors, as in ``codec encode``, leaves it unimported, and still matches a direct distance argmin."""
    import subprocess
    import sys

    script = (
        "import sys, torch, kernels\n"
        "x, c = torch.randn(33, 5, generator=torch.Generator().manual_seed(0)), torch.randn(7, 5)\n"
        "idx, _ = kernels.nearest_code(x, c)\n"
        "assert torch.equal(idx, torch.cdist(x.double(), c.double()).argmin(1)), idx\n"
        "print('triton' in sys.modules)\n"
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and proc.stdout.strip() == "False", proc.stderr
