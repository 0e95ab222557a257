"""Peak memory of a GRPO mini-batch's log-probs, forward + backward, through the fused lm-head and without it.

    python benchmarks/bench_lm_head.py                       # N=4096 H=1024 V=128256 float32 on CPU
    python benchmarks/bench_lm_head.py --n 512 --quick       # seconds
    python benchmarks/bench_lm_head.py --device cuda --dtype bfloat16

Every variant runs `posttrain.rollouts.policy_logprobs`, the function the online methods (GRPO, NFT, RFT, SPARK,
PPO) call for their policy's log-probs, at a sampling temperature of 0.7, on a Llama whose backbone is its
embeddings and final norm (no decoder layers, embeddings frozen), so what is measured is the lm-head and the
log-probs of N = 8 rows x T tokens (1/8 of the positions are prompt and carry no label). The backward is that of an
advantage-weighted sum (the policy-gradient loss) into the head's weight and the norm:

- unfused: `model.fused_lm_head=false`: the model returns (B, T, V) logits, then the `token_logprobs` op;
- fused_ext: `model.fused_lm_head=true` with the compiled `lm_head_logprobs` op;
- fused_torch: the same through the op's chunked torch path (what runs without the extension, or on CUDA while the
  CUDA kernels are gated).

Peak is the memory above the level after the model and its inputs exist, the weight gradient dW (V, H) included
(the same for every variant). On CPU every variant runs in a fresh process and the peak is its resident-set
high-water mark (Linux VmHWM, reset through /proc/self/clear_refs after the inputs are made; glibc's mmap threshold
is lowered so large buffers come from and return to the OS). On CUDA it is the caching allocator's peak.
Writes benchmarks/results/bench_lm_head.json.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VARIANTS = ("unfused", "fused_ext", "fused_torch")
BASELINE = "unfused"  # the path the fused head replaces in training
TARGET = 0.25
ROWS = 8  # sequences in the mini-batch: N = ROWS x (T - 1) scored positions
TEMPERATURE = 0.7


def _status(key: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"{key} not in /proc/self/status")


def _inputs(n, h, v, dtype, device):
    """A Llama reduced to embeddings, final norm and lm-head, and a GRPO mini-batch of N = n scored positions."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(vocab_size=v, hidden_size=h, intermediate_size=h, num_hidden_layers=0,
                         num_attention_heads=8, num_key_value_heads=8, tie_word_embeddings=False)
    with torch.device(device):
        torch.manual_seed(0)
        model = LlamaForCausalLM(config).to(dtype)
    model.get_input_embeddings().weight.requires_grad_(False)  # its (V, H) gradient is no part of the head
    g = torch.Generator(device=device).manual_seed(0)
    steps = -(-n // ROWS)  # T - 1
    input_ids = torch.randint(0, v, (ROWS, steps + 1), generator=g, device=device)
    labels = input_ids.clone()
    labels[:, : (steps + 1) // 8] = -100  # prompt positions carry no label
    rows = {"input_ids": input_ids, "attention_mask": torch.ones_like(input_ids), "labels": labels}
    advantages = torch.randn(ROWS, steps, generator=g, device=device)
    return model, rows, advantages


def _step(variant, model, rows, advantages):
    """One log-probs forward + backward; returns the head's weight gradient and the log-probs."""
    from posttrain.ops import _backend
    from posttrain.rollouts import policy_logprobs

    model.zero_grad(set_to_none=True)
    model.config.fused_lm_head = variant != "unfused"
    with _backend.force("torch" if variant == "fused_torch" else "ext"):
        logp = policy_logprobs(model, rows, TEMPERATURE)  # (B, T-1)
        (logp * advantages).sum().backward()
    return model.get_output_embeddings().weight.grad, logp.detach()


def _child(args):
    """Runs one variant on CPU in this (fresh) process; prints a JSON line."""
    import gc

    import torch

    torch.set_num_threads(args.threads)
    inputs = _inputs(args.n, args.hidden, args.vocab, getattr(torch, args.dtype), "cpu")
    gc.collect()
    base = _status("VmRSS:")
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # VmHWM := VmRSS
    t0 = time.perf_counter()
    grad_weight, logp = _step(args.child, *inputs)
    seconds = time.perf_counter() - t0
    peak = _status("VmHWM:") - base
    print(json.dumps(dict(variant=args.child, peak_mib=peak / 2**20, seconds=seconds,
                          logp_sum=float(logp.double().sum()), grad_weight_mib=grad_weight.nbytes / 2**20)))


def _run_cpu(args, variant):
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="131072", OMP_NUM_THREADS=str(args.threads))
    cmd = [sys.executable, os.path.abspath(__file__), "--child", variant, "--n", str(args.n), "--hidden",
           str(args.hidden), "--vocab", str(args.vocab), "--dtype", args.dtype, "--threads", str(args.threads)]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=ROOT)
    if done.returncode != 0:
        return dict(variant=variant, error=(done.stderr or done.stdout)[-2000:])
    return json.loads(done.stdout.strip().splitlines()[-1])


def _run_cuda(args, variant):
    import torch

    inputs = _inputs(args.n, args.hidden, args.vocab, getattr(torch, args.dtype), "cuda")
    _step(variant, *inputs)  # warm-up: cuBLAS workspaces and kernels load outside the peak
    inputs[0].zero_grad(set_to_none=True)
    torch.cuda.synchronize()
    base = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    grad_weight, logp = _step(variant, *inputs)
    torch.cuda.synchronize()
    seconds = time.perf_counter() - t0
    peak = torch.cuda.max_memory_allocated() - base
    return dict(variant=variant, peak_mib=peak / 2**20, seconds=seconds, logp_sum=float(logp.double().sum()),
                grad_weight_mib=grad_weight.nbytes / 2**20)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=4096, help="tokens in the mini-batch")
    ap.add_argument("--hidden", type=int, default=1024)
    ap.add_argument("--vocab", type=int, default=128256)
    ap.add_argument("--dtype", default="float32", choices=("float32", "bfloat16", "float16"))
    ap.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated subset of " + ", ".join(VARIANTS))
    ap.add_argument("--quick", action="store_true", help="alias for --n 512")
    ap.add_argument("--out", default=os.path.join(ROOT, "benchmarks", "results", "bench_lm_head.json"))
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    sys.path.insert(0, ROOT)
    if args.quick:
        args.n = 512
    if args.child:
        return _child(args)
    import torch

    if args.device == "cuda" and not torch.cuda.is_available():
        sys.exit("--device cuda needs a CUDA GPU")
    print(f"GRPO mini-batch log-probs fwd+bwd (policy_logprobs), N={args.n} H={args.hidden} V={args.vocab} "
          f"{args.dtype} on {args.device} "
          f"(torch {torch.__version__}); logits alone: {args.n * args.vocab * 4 / 2**20:.0f} MiB in float32")
    head = f"{'variant':<24} {'peak MiB':>10} {'vs ' + BASELINE:>12} {'dW MiB':>8} {'seconds':>8}"
    print(head)
    print("-" * len(head))
    rows = []
    for variant in args.variants.split(","):
        row = (_run_cuda if args.device == "cuda" else _run_cpu)(args, variant)
        rows.append(row)
        if "error" in row:
            print(f"{variant:<24} failed: {row['error'].strip().splitlines()[-1]}", flush=True)
    by = {r["variant"]: r for r in rows if "error" not in r}
    for row in rows:
        if "error" in row:
            continue
        row["ratio_vs_unfused"] = row["peak_mib"] / by[BASELINE]["peak_mib"] if BASELINE in by else float("nan")
        print(f"{row['variant']:<24} {row['peak_mib']:10.1f} {row['ratio_vs_unfused']:12.3f} "
              f"{row['grad_weight_mib']:8.1f} {row['seconds']:8.2f}", flush=True)
    sums = [r["logp_sum"] for r in by.values()]
    if sums:  # every variant computes the same log-probs: a memory saving that changed them would not count
        spread = (max(sums) - min(sums)) / max(abs(min(sums)), 1.0)
        print(f"sum of log-probs agrees across variants to a relative {spread:.1e}")
        if spread > 1e-3:
            rows.append(dict(variant="agreement", error=f"log-prob sums differ: {sums}"))
    fused = [r for r in rows if r["variant"].startswith("fused") and "ratio_vs_unfused" in r]
    for r in fused:
        verdict = "met" if r["ratio_vs_unfused"] <= TARGET else "NOT met"
        print(f"target peak <= {TARGET:g} x {BASELINE}: {r['variant']} {r['ratio_vs_unfused']:.3f} ({verdict})")
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(dict(n=args.n, hidden=args.hidden, vocab=args.vocab, dtype=args.dtype, device=args.device,
                       threads=args.threads, torch=torch.__version__, target=TARGET, rows=rows), f, indent=1)
    print(f"wrote {args.out}")
    failed = [r["variant"] for r in rows if "error" in r]
    if failed:
        sys.exit(f"variants failed: {failed}")


if __name__ == "__main__":
    main()
