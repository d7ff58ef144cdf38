"""Worker for test_integer_prior.py: ``python tests/integer_worker.py JOB.json`` prints a JSON object with the CPU
capability torch runs with and a digest of the integer prior's logits and frequencies (step and window paths, 1 and
2 threads) for each prior and token sequence in the job. Run under different ``ATEN_CPU_CAPABILITY`` values, the
digests must agree."""

import hashlib
import json
import sys

import numpy as np
import torch

from prior.checkpoint import load_prior
from prior.integer import IntegerPrior, frequencies
from prior.integer_forward import IntegerNet, IntegerStepDecoder, integer_window_logits


def digests(prior_dir: str, tokens_file: str, starts: list[int], steps: int, threads: list[int], device="cpu") -> dict:
    prior = load_prior(prior_dir, device="cpu")
    flat = torch.from_numpy(np.load(tokens_file)).long()  # raster order
    layout = tuple(int(v) for v in np.load(tokens_file.replace(".npy", "_layout.npy")))
    net = IntegerNet(IntegerPrior.from_float(prior), device)
    start_id = prior.config.codebook_size
    out = {}
    for n in threads:
        torch.set_num_threads(n)
        h = hashlib.sha256()
        dec = IntegerStepDecoder(net, layout, torch.tensor(starts))
        inputs = torch.full((len(starts),), start_id)
        for s in range(steps):
            logits = dec.step(inputs)
            h.update(logits.cpu().numpy().tobytes())
            h.update(frequencies(logits).cpu().numpy().tobytes())
            inputs = torch.stack([flat[a + s] for a in starts])
        window = torch.cat([torch.tensor([start_id]), flat[starts[-1] : starts[-1] + steps - 1]])[None]
        h.update(integer_window_logits(net, layout, starts[-1], window).cpu().numpy().tobytes())
        out[f"threads={n}"] = h.hexdigest()
    return out


def main(job_file: str) -> None:
    with open(job_file) as f:
        job = json.load(f)
    result = {"capability": torch.backends.cpu.get_cpu_capability()}
    for name, item in job["priors"].items():
        args = item["prior"], item["tokens"], item["starts"], item["steps"], job["threads"]
        result[name] = digests(*args, job.get("device", "cpu"))
    print(json.dumps(result))


if __name__ == "__main__":
    main(sys.argv[1])
