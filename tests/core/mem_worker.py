"""Worker for test_memory.py: peak extra RSS of encoding (+ decoding) one input, whole vs in windows.

python tests/core/mem_worker.py image|audio tiled|whole  ->  prints peak extra bytes
"""

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tools"))
from memprobe import peak_extra_cpu  # noqa: E402

from codec import AudioCodecConfig, Codec, ImageCodecConfig, QuantizerConfig  # noqa: E402


def main(modality: str, mode: str) -> None:
    torch.manual_seed(0)
    torch.set_num_threads(1)
    q = QuantizerConfig(codebook_size=32, num_quantizers=2 if modality == "audio" else 1)
    if modality == "image":
        cfg = ImageCodecConfig(base_channels=8, max_channels=16, latent_dim=8, quantizer=q, tile=8, tile_overlap=6)
        x = torch.rand(1, 3, 1024, 1024)
        small = torch.rand(1, 3, 64, 64)
    else:
        cfg = AudioCodecConfig(base_channels=8, latent_dim=8, quantizer=q, chunk_frames=75, chunk_context=16)
        x = torch.rand(1, 1, 24000 * 60) * 2 - 1
        small = torch.rand(1, 1, 24000) * 2 - 1
    if mode == "whole":  # one window over everything
        cfg.tile, cfg.chunk_frames = 10**6, 10**9
    m = Codec(cfg).eval()
    m.decode(m.encode(small))  # warm-up: allocator and thread pools are not the cost measured
    peak, _ = peak_extra_cpu(lambda: m.encode(x))
    print(peak)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
