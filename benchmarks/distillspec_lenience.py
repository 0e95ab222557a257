"""Lossy speculative decoding (DistillSpec §5.2): sweep the lenience ε and print α, tokens per target call, the
wall-clock speedup over target-only sampling and the task accuracy, for the undistilled and the distilled draft.
The accuracy is sampled at T = 1, the setting lenience applies to; the greedy accuracy of the target and of each draft
alone is printed first as the reference points (lossless speculative sampling has the target's sampled accuracy).

    python benchmarks/distillspec_lenience.py [--prompts 200] [--batch 8] [--gamma 4] [--repeats 3]

Lenience functions: f_lin(p, ε) = p / ε (the op's `lenience` = ε) and f_sq(p, ε) = p / ε² (`lenience` = ε²).
ε = 1 is lossless. Sampling at temperature 1, as lenience only matters when sampling. Writes
benchmarks/results/distillspec_lenience.json.
"""
from __future__ import annotations

import argparse
import json
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.spec_common import ROOT, add_model_arguments, batches, held_out, interleaved, load_models  # noqa: E402
from posttrain.generation import generate, speculative_generate  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_arguments(parser)
    parser.add_argument("--prompts", type=int, default=200)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--gamma", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--epsilons", type=float, nargs="+", default=[1.0, 0.5, 0.1, 0.01])
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    models, tokenizer, _ = load_models(args)
    task, examples, encoder, prompts = held_out(tokenizer, args.prompts)
    chunks = batches(prompts, encoder.pad_id, args.batch)
    target = models["target"]
    common = {"max_new_tokens": 64, "eos_token_id": encoder.eos_id, "pad_token_id": encoder.pad_id}

    def accuracy(token_lists):
        texts = tokenizer.batch_decode(token_lists, skip_special_tokens=True)
        return sum(task.is_correct(e, t) for e, t in zip(examples, texts)) / len(examples)

    def greedy_accuracy(model):
        outs = [generate(model, b["prompt_input_ids"], b["prompt_attention_mask"], temperature=0.0, **common)
                for b in chunks]
        return accuracy([t for o in outs for t in o.token_lists()])

    with torch.no_grad():
        greedy = {name: greedy_accuracy(model) for name, model in models.items()}
    print("greedy accuracy alone: " + ", ".join(f"{k} {v:.3f}" for k, v in greedy.items()), flush=True)
    rows, state = [], {}

    def target_only():
        gen = torch.Generator().manual_seed(0)
        outs = [generate(target, b["prompt_input_ids"], b["prompt_attention_mask"], temperature=1.0, generator=gen,
                         **common) for b in chunks]
        state["target"] = [t for o in outs for t in o.token_lists()]

    def speculative(draft, lenience):
        def run():
            gen = torch.Generator().manual_seed(0)
            outs = [speculative_generate(target, models[draft], b["prompt_input_ids"], b["prompt_attention_mask"],
                                         gamma=args.gamma, mode="lenient", lenience=lenience, generator=gen, **common)
                    for b in chunks]
            state["spec"] = outs
        return run

    with torch.no_grad():
        for draft in ("undistilled", "distilled"):
            for fname, power in (("f_lin", 1), ("f_sq", 2)):
                for eps in args.epsilons:
                    times = interleaved({"target": target_only, "spec": speculative(draft, eps ** power)}, args.repeats)
                    outs = state["spec"]
                    row = {"draft": draft, "f": fname, "epsilon": eps,
                           "alpha": sum(int(o.accepted.sum()) for o in outs)
                           / max(sum(int(o.decided.sum()) for o in outs), 1),
                           "tau": sum(int(o.lengths.sum()) for o in outs)
                           / max(sum(int(o.target_calls.sum()) for o in outs), 1),
                           "speedup": times["target"] / times["spec"],
                           "accuracy": accuracy([t for o in outs for t in o.token_lists()]),
                           "target_accuracy": accuracy(state["target"])}
                    rows.append(row)
                    print(f"{draft:12s} {fname:5s} ε={eps:<6g} α={row['alpha']:.3f} τ={row['tau']:.2f} "
                          f"speedup={row['speedup']:.2f} accuracy={row['accuracy']:.3f} "
                          f"(target-only sampling {row['target_accuracy']:.3f})", flush=True)
    out_dir = os.path.join(ROOT, "benchmarks", "results")
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "distillspec_lenience.json"), "w") as handle:
        json.dump({"args": vars(args), "greedy_accuracy": greedy, "rows": rows}, handle, indent=1)


if __name__ == "__main__":
    main()
