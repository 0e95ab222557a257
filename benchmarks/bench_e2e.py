"""End-to-end throughput on the default tiny model: training tokens/s of SFT, SPIN and OTR (K = 4, 8) steps (OTR also
as a ratio to the SFT step), generation tokens/s of posttrain.generation against Hugging Face `model.generate` on the
same prompts, and rollout and training tokens/s of the online methods (GRPO, NFT).

    python benchmarks/bench_e2e.py [--threads 2] [--batch 64] [--prompts 256] [--new-tokens 16]

Prints a table and writes benchmarks/results/bench_e2e.json.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from datamodules.tasks import ArithmeticTask  # noqa: E402
from lightning_modules.base import frozen_copy  # noqa: E402
from lightning_modules.otr import sampled_otr_loss  # noqa: E402
from posttrain.generation import generate  # noqa: E402
from posttrain.losses.sft import sft_loss  # noqa: E402
from posttrain.losses.spin import spin_loss  # noqa: E402
from posttrain.models import tiny_llama  # noqa: E402
from posttrain.models.forward import label_logprobs, sequence_logprobs  # noqa: E402
from posttrain.processors import SFTCollator, TextProcessor, left_pad, pack  # noqa: E402


def timed(fn, repeats: int, warmup: int = 2) -> float:
    for _ in range(warmup):
        fn()
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - start) / repeats


def interleaved(fns: dict, repeats: int) -> dict:
    """Median seconds of each function, the calls alternating so that load on a shared machine hits all alike."""
    for fn in fns.values():
        fn()
    samples = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            samples[name].append(time.perf_counter() - start)
    return {name: statistics.median(times) for name, times in samples.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--prompts", type=int, default=256)
    parser.add_argument("--new-tokens", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results", "bench_e2e.json"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    model, tok = tiny_llama()
    encoder = TextProcessor(tok, max_length=64)
    task = ArithmeticTask(digits=[1, 3], train_size=max(args.batch, args.prompts), val_size=0, test_ood_size=0)
    examples = [{**e, "index": i} for i, e in enumerate(task.examples("train"))]
    batch = SFTCollator(encoder)(examples[: args.batch])
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    rows = []

    def sft_step():
        logps, mask = label_logprobs(model, batch["input_ids"], batch["attention_mask"], batch["labels"])
        sft_loss(logps, mask)[0].backward()
        optimizer.step()
        optimizer.zero_grad()

    seconds = timed(sft_step, args.repeats)
    tokens = int(batch["attention_mask"].sum())
    rows.append({"what": "train SFT step", "ms": seconds * 1e3, "tokens_per_s": tokens / seconds})

    sft_seconds = seconds
    generator = torch.Generator().manual_seed(0)
    for k in (4, 8):
        def otr_step():
            logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                           use_cache=False).logits[:, :-1]  # (B, T-1, V)
            labels = batch["labels"][:, 1:]
            sampled_otr_loss(logits, labels, labels != -100, k, 1.5, -0.1, "sequence", generator)[0].backward()
            optimizer.step()
            optimizer.zero_grad()

        seconds = timed(otr_step, args.repeats)
        rows.append({"what": f"train OTR step K={k}", "ms": seconds * 1e3, "tokens_per_s": tokens / seconds,
                     "vs_sft": seconds / sft_seconds})

    opponent = frozen_copy(model)
    prompts = [ids[:n] for ids, n in zip(batch["input_ids"].tolist(), batch["prompt_lengths"].tolist())]
    real = [ids[n:m] for ids, n, m in zip(batch["input_ids"].tolist(), batch["prompt_lengths"].tolist(),
                                           batch["attention_mask"].sum(-1).tolist())]
    generated = [r[::-1] for r in real]  # any other response of similar length
    pairs = pack(prompts + prompts, real + generated, encoder.pad_id, encoder.max_length)

    def spin_step():
        policy = sequence_logprobs(model, pairs)
        with torch.no_grad():
            ref = sequence_logprobs(opponent, pairs)
        b = len(prompts)
        spin_loss(policy[:b], policy[b:], ref[:b], ref[b:], beta=0.1)[0].backward()
        optimizer.step()
        optimizer.zero_grad()

    seconds = timed(spin_step, args.repeats)
    tokens = int(pairs["attention_mask"].sum())
    rows.append({"what": "train SPIN step (pairs)", "ms": seconds * 1e3, "tokens_per_s": tokens / seconds})

    model.eval()
    left = left_pad([encoder.prompt(e["prompt"]) for e in examples[: args.prompts]], encoder.pad_id)
    for temperature in (0.0, 1.0):
        def ours():
            out = generate(model, left["prompt_input_ids"], left["prompt_attention_mask"],
                           max_new_tokens=args.new_tokens,
                           temperature=temperature, eos_token_id=None, pad_token_id=tok.pad_token_id,
                           generator=torch.Generator().manual_seed(0))
            return int(out.mask.sum())

        def theirs():
            with torch.no_grad():
                out = model.generate(input_ids=left["prompt_input_ids"], attention_mask=left["prompt_attention_mask"],
                                     max_new_tokens=args.new_tokens, min_new_tokens=args.new_tokens,
                                     do_sample=temperature > 0, temperature=temperature or None, top_k=0,
                                     pad_token_id=tok.pad_token_id, eos_token_id=None)
            return (out.shape[1] - left["prompt_input_ids"].shape[1]) * out.shape[0]

        mode = "greedy" if temperature == 0 else "sample T=1"
        fns = {"posttrain.generation": ours, "HF model.generate": theirs}
        tokens = {name: fn() for name, fn in fns.items()}
        for name, seconds in interleaved(fns, max(3, args.repeats // 2)).items():
            rows.append({"what": f"generate {mode}: {name}", "ms": seconds * 1e3,
                         "tokens_per_s": tokens[name] / seconds})

    rows += online_rows(args)

    width = max(len(r["what"]) for r in rows)
    print(f"{'what'.ljust(width)}  {'ms':>9}  {'tokens/s':>10}  {'x SFT':>6}")
    for r in rows:
        ratio = f"{r['vs_sft']:6.2f}" if "vs_sft" in r else ""
        print(f"{r['what'].ljust(width)}  {r['ms']:9.1f}  {r['tokens_per_s']:10.0f}  {ratio}")
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as handle:
        json.dump({"threads": args.threads, "batch": args.batch, "prompts": args.prompts,
                   "new_tokens": args.new_tokens, "rows": rows}, handle, indent=1)
    print(f"wrote {args.out}")


def online_rows(args) -> list[dict]:
    """GRPO and NFT on the default tiny model: one rollout step (K samples per prompt, verified, packed with the
    behaviour log-probs) in generated tokens/s, and one mini-batch update in tokens/s through forward + backward."""
    from datamodules.prompts import PromptDataModule
    from posttrain.losses.grpo import grpo_loss
    from posttrain.losses.nft import nft_loss
    from posttrain.rollouts import collect_rollout, correctness_rate, group_advantages, policy_logprobs

    model, tok = tiny_llama()
    task = ArithmeticTask(digits=[1, 2], train_size=args.batch, val_size=0, test_ood_size=0)
    datamodule = PromptDataModule(tok, task, batch_size=args.batch, max_length=64, num_samples=8)
    datamodule.setup("fit")
    batch = next(iter(datamodule.train_dataloader()))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    rows = []

    def sample():
        return collect_rollout(model, batch, datamodule, num_samples=8, max_new_tokens=args.new_tokens,
                               temperature=1.0, generator=torch.Generator().manual_seed(0), truncated_is_wrong=False)

    rollout = sample()
    seconds = timed(sample, max(2, args.repeats // 3), warmup=1)
    rows.append({"what": f"rollout {args.batch}x8 samples (GRPO/NFT)", "ms": seconds * 1e3,
                 "tokens_per_s": int(rollout.mask.sum()) / seconds})
    rewards = (torch.rand(rollout.rewards.shape, generator=torch.Generator().manual_seed(1)) < 0.5).float()
    r_hat = correctness_rate(rewards.view(-1, 8)).repeat_interleave(8)
    advantages = group_advantages(rewards.view(-1, 8)).flatten()
    index = torch.arange(min(16 * 8, rewards.numel()))  # one mini-batch of 16 prompts
    minibatch = rollout.rows(index)

    def update(loss_fn):
        def step():
            logp = policy_logprobs(model, minibatch)
            loss_fn(logp)[0].backward()
            optimizer.step()
            optimizer.zero_grad()
        return step

    losses = {
        "GRPO": lambda logp: grpo_loss(logp, minibatch["old_logps"], advantages[index], minibatch["mask"]),
        "NFT": lambda logp: nft_loss(logp, minibatch["old_logps"], rewards[index], r_hat[index], minibatch["mask"]),
    }
    tokens = int(minibatch["attention_mask"].sum())
    for name, loss_fn in losses.items():
        seconds = timed(update(loss_fn), args.repeats)
        rows.append({"what": f"train {name} mini-batch (16x8)", "ms": seconds * 1e3, "tokens_per_s": tokens / seconds})
    return rows


if __name__ == "__main__":
    main()
