"""Throughput of the tiny diffusion model (`model=diffusion_tiny`): training images/s of a denoising step, sampling
images/s of DDIM, and the cost of one SePPO update (the reference's DDIM sample included) as a ratio to a plain
denoising step, all at the same batch.

    python benchmarks/bench_diffusion.py [--threads 1] [--batch 16] [--repeats 10]

Prints a table and writes benchmarks/results/bench_diffusion.json.
"""
from __future__ import annotations

import argparse
import json
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.bench_e2e import timed  # noqa: E402
from lightning_modules.diffusion_sft import DiffusionSFTModule  # noqa: E402
from lightning_modules.seppo import SePPOModule  # noqa: E402
from posttrain.diffusion import diffusion_tiny  # noqa: E402
from posttrain.rewards.images import BrightCentredReward  # noqa: E402


def stepper(module, batch):
    """One optimizer step of `module.training_step` on `batch` (logging switched off: no trainer here)."""
    module.log_metrics = lambda *args, **kwargs: None
    optimizer = torch.optim.AdamW(module.trainable_parameters(), lr=1e-4)

    def step():
        loss = module.training_step(batch, 0)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    return step


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results", "bench_diffusion.json"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model, processor = diffusion_tiny()  # conf/model/diffusion_tiny.yaml's defaults
    batch = {"pixels": torch.rand(args.batch, 3, 16, 16) * 2 - 1,
             "class_labels": torch.arange(args.batch) % len(processor.classes)}
    condition = {"class_labels": batch["class_labels"]}
    rows = []
    sft = timed(stepper(DiffusionSFTModule(model, processor), batch), args.repeats)
    rows.append(("denoising step", sft, args.batch / sft, 1.0))
    for steps in (10, 20):
        seconds = timed(lambda: model.sample(condition, generator=torch.Generator().manual_seed(0), steps=steps),
                        args.repeats)
        rows.append((f"DDIM sample, {steps} steps", seconds, args.batch / seconds, seconds / sft))
    for steps, diagnostics in ((10, 0), (10, 1)):
        module = SePPOModule(model, processor, sample_steps=steps, diagnostics_every=diagnostics,
                             reward=BrightCentredReward())
        # a pool of two entries: a reference that is not the current model, so the diagnostics (when on) run
        module.pool = [model.trained_weights(), model.trained_weights()]
        seconds = timed(stepper(module, batch), args.repeats)
        label = f"SePPO update ({steps}-step reference sample{', + diagnostics' if diagnostics else ''})"
        rows.append((label, seconds, args.batch / seconds, seconds / sft))
    header = f"{'what':<56} {'ms':>9} {'images/s':>10} {'x denoising step':>17}"
    print(f"threads={args.threads} batch={args.batch} image 16x16, "
          f"{sum(p.numel() for p in model.parameters()) / 1e6:.2f}M parameters")
    print(header)
    for label, seconds, rate, ratio in rows:
        print(f"{label:<56} {seconds * 1e3:9.1f} {rate:10.1f} {ratio:17.2f}")
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as handle:
        json.dump({"threads": args.threads, "batch": args.batch,
                   "rows": [{"what": r[0], "seconds": r[1], "images_per_s": r[2], "ratio_to_denoising_step": r[3]}
                            for r in rows]}, handle, indent=1)


if __name__ == "__main__":
    main()
