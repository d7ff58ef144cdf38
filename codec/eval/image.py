"""Images for rate-distortion evaluation: PSNR and MS-SSIM of 8-bit results, and the JPEG / WebP peers at the
Pillow quality whose size matches ours (see ``codec.eval.rd``)."""

import io
from pathlib import Path

import torch
from PIL import Image
from tqdm import tqdm

from codec.bitstream.compress import compress
from codec.bitstream.decompress import decompress
from codec.errors import VQCodecError
from codec.eval.fidelity import edge_ratios
from codec.media import read_image
from codec.train.metrics import psnr as _psnr

IMAGE_METRICS = ("bpp", "psnr", "ms_ssim")
PEERS = {"JPEG": dict(format="JPEG"), "WebP": dict(format="WEBP", method=6)}


def psnr(x: torch.Tensor, y: torch.Tensor) -> float:
    """PSNR in dB of (C, H, W) images in [0, 1] after 8-bit rounding of both (what a file holds); inf if equal."""
    return float(_psnr(to_8bit(x)[None], to_8bit(y)[None], mse_floor=0.0)[0])


def ms_ssim_params(side: int) -> tuple[int, int] | None:
    """(scales, kernel size) for MS-SSIM of an image whose short side is ``side``: the standard 5 scales and
    11-tap window when it fits, else the largest window, then the most scales, that torchmetrics accepts (side at
    least 2**scales and side // (scales - 1)**2 above the window) and whose window fits the coarsest scale. None
    below 3 pixels."""
    for k in (11, 9, 7, 5, 3):
        for scales in range(5, 0, -1):
            if side >= 2**scales and side // max(1, scales - 1) ** 2 > k - 1 and side >> (scales - 1) >= k:
                return scales, k
    return None


def ms_ssim(x: torch.Tensor, y: torch.Tensor) -> float:
    """MS-SSIM (torchmetrics) of (C, H, W) images in [0, 1]: 5 scales for images of 176 px and more, fewer (their
    weights renormalised to sum to 1), then a smaller window, below (``ms_ssim_params``); NaN under 3 px."""
    from torchmetrics.functional.image import multiscale_structural_similarity_index_measure as msssim

    params = ms_ssim_params(min(x.shape[-2:]))
    if params is None:
        return float("nan")
    scales, k = params
    weights = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)
    if scales < 5:  # the first weights renormalised: one scale is plain SSIM (not SSIM ** 0.0448)
        weights = tuple(w / sum(weights[:scales]) for w in weights[:scales])
    # torchmetrics sizes its Gaussian window from sigma (2 int(3.5 sigma + 0.5) + 1 taps), kernel_size only
    # validates: the standard sigma 1.5 for 11 taps, a sigma giving exactly k taps below
    sigma = 1.5 if k == 11 else (k - 1) / 7
    return float(msssim(y[None].clamp(0, 1), x[None], data_range=1.0, kernel_size=k, sigma=sigma, betas=weights))


def to_8bit(x: torch.Tensor) -> torch.Tensor:
    """x in [0, 1] rounded to the 256 levels an image file holds (what the user of a decoded file sees)."""
    return (x.clamp(0, 1) * 255).round() / 255


def to_pil(x: torch.Tensor) -> Image.Image:
    arr = (x.clamp(0, 1) * 255).round().to(torch.uint8)
    return Image.fromarray(arr[0].numpy(), "L") if arr.shape[0] == 1 else Image.fromarray(arr.permute(1, 2, 0).numpy())


def peer_encode(x: torch.Tensor, peer: str, quality: int) -> tuple[int, torch.Tensor]:
    """(bytes, decoded (C, H, W)) of x through a Pillow codec at a quality."""
    buf = io.BytesIO()
    to_pil(x).save(buf, quality=quality, **PEERS[peer])
    size = buf.tell()
    buf.seek(0)
    with Image.open(buf) as im:
        im = im.convert("L" if x.shape[0] == 1 else "RGB")
        t = torch.frombuffer(bytearray(im.tobytes()), dtype=torch.uint8).float() / 255
    c = x.shape[0]
    return size, t.view(x.shape[1], x.shape[2], c).permute(2, 0, 1).contiguous()


def match_bpp(x: torch.Tensor, peer: str, target_bytes: float) -> tuple[int, int, torch.Tensor]:
    """(quality, bytes, decoded) of the peer's setting whose size is closest to target_bytes."""
    lo, hi = 1, 100
    tried = {}
    while lo <= hi:
        q = (lo + hi) // 2
        tried[q] = peer_encode(x, peer, q)
        if tried[q][0] < target_bytes:
            lo = q + 1
        else:
            hi = q - 1
    for q in (lo - 1, lo):
        if 1 <= q <= 100 and q not in tried:
            tried[q] = peer_encode(x, peer, q)
    q = min(tried, key=lambda k: (abs(tried[k][0] - target_bytes), k))
    return q, tried[q][0], tried[q][1]


def skip(path: Path, err: Exception, skipped: list | None) -> None:
    """Report a file that cannot be read, and record it in ``skipped`` as (path, reason)."""
    tqdm.write(f"skipped {path}: {err}")
    if skipped is not None:
        skipped.append((str(path), str(err)))


def evaluate(
    model, files: list[Path], levels: list[int | None], prior="auto", skipped=None, refine: int = 0
) -> list[dict]:
    """Rows of measurements (see the module docstring); a file that cannot be read is reported, added to
    ``skipped`` as (path, reason), and left out. ``refine``: ``compress``'s."""
    rows = []
    for path in tqdm(files, desc="eval", unit="image", disable=None):  # None: a bar only on a terminal
        try:
            x = read_image(path).pixels
        except (VQCodecError, OSError) as e:
            skip(path, e, skipped)
            continue
        pixels = x.shape[1] * x.shape[2]
        for n in levels:
            data = compress(path, model, prior=prior, num_quantizers=n, refine=refine)
            y = to_8bit(decompress(data, model).data)
            level = n or model.num_quantizers
            row = {"file": path.name, "codec": "vqcodec", "level": level, "bytes": len(data)}
            row.update(bpp=len(data) * 8 / pixels, psnr=psnr(x, y), ms_ssim=ms_ssim(x, y))
            if min(x.shape[-2:]) > 4 * 8:  # an interior to compare the edges with
                row.update({f"edge_{k}": v for k, v in edge_ratios(x, y).items()})
            rows.append(row)
            for peer in PEERS:
                q, size, z = match_bpp(x, peer, len(data))
                rows.append(
                    dict(
                        file=path.name,
                        codec=peer,
                        level=level,
                        quality=q,
                        bytes=size,
                        bpp=size * 8 / pixels,
                        psnr=psnr(x, z),
                        ms_ssim=ms_ssim(x, z),
                    )
                )
    return rows
