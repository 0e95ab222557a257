"""Speculative decoding throughput on CPU: target-only decoding against speculative decoding with the undistilled and
the distilled draft of `python train.py experiment=distillspec`, at batch sizes 1 and 8, greedy and sampled.

    python benchmarks/bench_speculative.py [--prompts 16] [--gamma 3] [--repeats 5] [--threads 1]

All decoders run alternately in one process (each repeat calls every decoder once; medians), so load from other
processes on a shared machine hits them alike. Prints a table and writes benchmarks/results/bench_speculative.json.
"""
from __future__ import annotations

import argparse
import json
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.spec_common import (  # noqa: E402,E501
    ROOT,
    add_model_arguments,
    batches,
    forward_cost_ratio,
    held_out,
    interleaved,
    load_models,
)
from posttrain.generation import generate, speculative_generate  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_arguments(parser)
    parser.add_argument("--prompts", type=int, default=16)
    parser.add_argument("--gamma", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    models, tokenizer, paths = load_models(args)
    _, _, encoder, prompts = held_out(tokenizer, args.prompts)
    target = models["target"]
    c = {name: forward_cost_ratio(models[name], target, batches(prompts, encoder.pad_id, 1)[0]["prompt_input_ids"])
         for name in ("undistilled", "distilled")}
    rows = []
    for batch_size in (1, 8):
        chunks = batches(prompts, encoder.pad_id, batch_size)
        for mode in ("greedy", "sample"):
            temperature = 0.0 if mode == "greedy" else 1.0
            common = {"max_new_tokens": args.new_tokens, "eos_token_id": encoder.eos_id, "pad_token_id": encoder.pad_id}
            record = {"target": {"tokens": 0}, "undistilled": {}, "distilled": {}}

            def target_only():
                gen = torch.Generator().manual_seed(0)
                record["target"]["tokens"] = sum(
                    int(generate(target, b["prompt_input_ids"], b["prompt_attention_mask"], temperature=temperature,
                                 generator=gen, **common).lengths.sum()) for b in chunks)

            def speculative(name):
                def run():
                    gen = torch.Generator().manual_seed(0)
                    outs = [speculative_generate(target, models[name], b["prompt_input_ids"],
                                                 b["prompt_attention_mask"],
                                                 gamma=args.gamma, mode=mode, temperature=max(temperature, 1e-6),
                                                 generator=gen, **common) for b in chunks]
                    record[name] = {"tokens": sum(int(o.lengths.sum()) for o in outs),
                                    "accepted": sum(int(o.accepted.sum()) for o in outs),
                                    "decided": sum(int(o.decided.sum()) for o in outs),
                                    "calls": sum(int(o.target_calls.sum()) for o in outs),
                                    "verify": sum(o.verify_seconds for o in outs),
                                    "seconds": sum(o.seconds for o in outs)}
                return run

            with torch.no_grad():
                times = interleaved({"target": target_only, "undistilled": speculative("undistilled"),
                                     "distilled": speculative("distilled")}, args.repeats)
            row = {"batch": batch_size, "mode": mode, "target_tok_s": record["target"]["tokens"] / times["target"]}
            for name in ("undistilled", "distilled"):
                r = record[name]
                row[f"{name}_tok_s"] = r["tokens"] / times[name]
                row[f"{name}_speedup"] = times["target"] / times[name]
                row[f"{name}_alpha"] = r["accepted"] / max(r["decided"], 1)
                row[f"{name}_tau"] = r["tokens"] / max(r["calls"], 1)
                row[f"{name}_verify_share"] = r["verify"] / max(r["seconds"], 1e-9)
            rows.append(row)
    header = ["B", "mode", "target tok/s", "undist tok/s", "undist α", "undist τ", "undist x", "dist tok/s", "dist α",
              "dist τ", "dist x", "verify share"]
    lines = [header]
    for r in rows:
        lines.append([str(r["batch"]), r["mode"], f"{r['target_tok_s']:.0f}", f"{r['undistilled_tok_s']:.0f}",
                      f"{r['undistilled_alpha']:.3f}", f"{r['undistilled_tau']:.2f}", f"{r['undistilled_speedup']:.2f}",
                      f"{r['distilled_tok_s']:.0f}", f"{r['distilled_alpha']:.3f}", f"{r['distilled_tau']:.2f}",
                      f"{r['distilled_speedup']:.2f}", f"{r['distilled_verify_share']:.1%}"])
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    print(f"gamma={args.gamma}, {args.prompts} prompts, {args.new_tokens} new tokens max, {args.threads} thread(s); "
          f"c (draft/target forward time) undistilled {c['undistilled']:.2f}, distilled {c['distilled']:.2f}")
    print("\n".join("  ".join(x.ljust(w) for x, w in zip(line, widths)) for line in lines))
    out_dir = os.path.join(ROOT, "benchmarks", "results")
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "bench_speculative.json"), "w") as handle:
        json.dump({"args": vars(args), "paths": paths, "c": c, "rows": rows}, handle, indent=1)


if __name__ == "__main__":
    main()
