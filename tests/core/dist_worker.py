"""Worker for test_distributed.py, launched as `torchrun --nproc-per-node 2 tests/core/dist_worker.py OUT_DIR`.

Each rank sees different data and a different batch size every step (one step with no data at all on rank
1), with a dead-code threshold high enough to force resets; at the end each rank saves its quantizer state.
"""

import sys

import torch
import torch.distributed as dist
from safetensors.torch import save_file

from codec.core.quantizer import ResidualVectorQuantizer, VectorQuantizer


def main(out_dir: str) -> None:
    dist.init_process_group("gloo")
    rank = dist.get_rank()
    torch.manual_seed(1234 + rank)  # different data and local randomness per rank
    vq = VectorQuantizer(8, 64, dead_code_threshold=6.0)
    rvq = ResidualVectorQuantizer(8, 32, 3, quantizer_dropout=0.5, dead_code_threshold=4.0)
    resets = 0
    for step in range(12):
        n = (700 if rank == 0 else 211) + 37 * step
        if rank == 1 and step == 4:
            n = 0
        z = torch.randn(n, 8) * (1 + rank) + step * 0.3
        resets += int(vq(z).resets) + int(rvq(z.view(-1, 1, 8)).resets.sum())
    state = {f"vq.{k}": v.float().contiguous() for k, v in vq.state_dict().items()}
    state.update({f"rvq.{k}": v.float().contiguous() for k, v in rvq.state_dict().items()})
    state["resets"] = torch.tensor([float(resets)])
    save_file(state, f"{out_dir}/rank{rank}.safetensors")
    dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1])
