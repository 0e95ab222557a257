"""How far apart are the RFT, NFT and GRPO gradients on the same rollout, by the groups' correctness rate r̂?

    OMP_NUM_THREADS=1 python scripts/gradient_agreement.py [--seeds 0 1] [--prompts 512] [key=value ...]

For each seed: the experiment's warm-up model (trained, or loaded from the cache that compare_online.py fills when
given the same paths.cache_dir), one rollout of K answers for the first `--prompts` training prompts, and for the
mixed groups in three r̂ strata the parameter gradients of the three losses at R = 1 (the first, on-policy update);
prints their pairwise cosines. RFT and NFT (Dr. GRPO at R = 1) differ per sample by r̂ (1 − r̂ vs 1 for a correct
answer, −r̂ vs 0 for a wrong one), so they agree at low r̂ and part as r̂ grows.
"""
from __future__ import annotations

import argparse
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from hydra import compose, initialize_config_dir  # noqa: E402
from hydra.utils import instantiate  # noqa: E402
from omegaconf import open_dict  # noqa: E402

from posttrain.losses.grpo import grpo_loss  # noqa: E402
from posttrain.losses.nft import nft_loss  # noqa: E402
from posttrain.losses.rft import rft_loss  # noqa: E402
from posttrain.pipeline import register_resolvers, train  # noqa: E402
from posttrain.processors import SFTCollator  # noqa: E402
from posttrain.rollouts import RolloutSettings, collect_rollout, correctness_rate, group_advantages, policy_logprobs  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STRATA = {"r̂ <= 2/8": (0.0, 0.26), "3/8 <= r̂ <= 5/8": (0.3, 0.7), "r̂ >= 6/8": (0.7, 1.0)}


def agreement(seed: int, prompts: int, overrides: list[str]) -> tuple[str, dict[str, dict[str, float]]]:
    """For one seed: a summary line and, per r̂ stratum with at least 2 mixed groups, the pairwise gradient cosines."""
    register_resolvers()
    with initialize_config_dir(config_dir=os.path.join(ROOT, "conf"), version_base="1.3"):
        cfg = compose(config_name="train", overrides=["experiment=nft", f"seed={seed}", "logger=csv",
                                                      f"paths.output_dir={ROOT}/logs/gradient_agreement",
                                                      "stages.main=null", *overrides])  # the warm-up only
    with open_dict(cfg):
        cfg.name = "gradient_agreement"  # the configured name reads Hydra's runtime, which a composed config lacks
    model = train(cfg)["stages"]["warmup"].output.eval()
    torch.manual_seed(seed)
    tokenizer = instantiate(cfg.model)[1]
    datamodule = instantiate(cfg.data, tokenizer=tokenizer)
    datamodule.setup("fit")
    batch = SFTCollator(datamodule.processor, with_prompts=True)(datamodule.splits["train"][:prompts])
    k = cfg.method.num_samples
    settings = RolloutSettings(num_samples=k, temperature=1.0, max_new_tokens=cfg.method.generation.max_new_tokens)
    rollout = collect_rollout(model, batch, datamodule.processor, instantiate(cfg.reward), settings,
                              generator=torch.Generator().manual_seed(seed))
    rate = correctness_rate(rollout.grouped(rollout.rewards))  # (P,)
    advantages = group_advantages(rollout.grouped(rollout.rewards)).flatten()  # (R,)
    params = list(model.parameters())
    mixed = int(((rate > 0) & (rate < 1)).sum())
    summary = f"seed {seed}: {mixed}/{rate.numel()} mixed groups, rollout accuracy {rollout.rewards.mean():.3f}"
    cosines = {}
    for name, (low, high) in STRATA.items():
        chosen = torch.nonzero((rate > low) & (rate < high)).flatten()  # (P',)
        if chosen.numel() < 2:
            continue
        index = (chosen[:, None] * k + torch.arange(k)).flatten()  # (P' * K,)
        rows = rollout.rows(index)
        logp = policy_logprobs(model, rows)  # (B, T-1)
        old = logp.detach()  # R = 1: the on-policy update
        losses = {"RFT": rft_loss(logp, rows["rewards"], rows["mask"])[0],
                  "NFT": nft_loss(logp, old, rows["rewards"], rate.repeat_interleave(k)[index], rows["mask"])[0],
                  "GRPO": grpo_loss(logp, old, advantages[index], rows["mask"])[0]}
        grads = {m: torch.cat([g.flatten() for g in torch.autograd.grad(loss, params, retain_graph=True)])
                 for m, loss in losses.items()}
        cosines[f"{name} (groups {chosen.numel()})"] = {
            f"{a}-{b}": float(torch.nn.functional.cosine_similarity(grads[a], grads[b], dim=0))
            for a, b in (("RFT", "NFT"), ("NFT", "GRPO"), ("RFT", "GRPO"))}
    return summary, cosines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--prompts", type=int, default=512)
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()
    for seed in args.seeds:
        summary, cosines = agreement(seed, args.prompts, args.overrides)
        print(summary)
        for stratum, values in cosines.items():
            print(f"  {stratum:30s} " + "  ".join(f"cos({pair}) {value:.3f}" for pair, value in values.items()))


if __name__ == "__main__":
    main()
