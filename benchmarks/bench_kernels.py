"""Reference vs extension for every posttrain op on CPU: time, peak memory and distance from the floor.

    python benchmarks/bench_kernels.py [--threads 2] [--quick] [--device cuda] [--time-budget 1.5]
                                       [--no-lm-head-memory]

floor = max(one read pass x.sum(), one vectorised exponential torch.exp(x, out=buf)) over the op's inputs, measured in
the same run (for the lm-head op: that over the logits plus the logits GEMM itself, which the op cannot avoid).
Times are the best of several runs. Peak memory is the process's peak resident set above the level before the call
(Linux VmHWM after a reset through /proc/self/clear_refs; glibc's mmap threshold is pinned so freed buffers return
to the OS). Writes benchmarks/results/bench_kernels.json. Then prints the fused lm-head's memory rows
(`bench_lm_head.py`: a GRPO mini-batch's log-probs forward + backward through `policy_logprobs`, fused against
unfused peak memory) unless --no-lm-head-memory.
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import subprocess
import sys
import time

if os.environ.get("MALLOC_MMAP_THRESHOLD_") is None and sys.platform.startswith("linux"):
    # large buffers must come from mmap so the resident-set peak tracks what each call allocates
    os.environ["MALLOC_MMAP_THRESHOLD_"] = "131072"
    os.execv(sys.executable, [sys.executable] + sys.argv)

import torch  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from posttrain.ops import (  # noqa: E402
    _backend,  # noqa: E402
    lm_head_logprobs,
    sample_k_tokens,
    speculative_verify,
    token_divergence,
    token_logprobs,
)
from posttrain.ops.speculative_verify import speculative_verify_reference  # noqa: E402
from posttrain.ops.token_divergence import token_divergence_reference  # noqa: E402
from posttrain.ops.token_sampling import sample_k_tokens_reference  # noqa: E402

_BUDGET_S = 1.5  # --time-budget


def timeit(fn, reps: int, budget_s: float | None = None) -> float:
    """Best time in ms over at least `reps` runs, continuing up to `budget_s` seconds (at most 20 * reps runs).

    The minimum is the stable statistic on a shared machine whose CPU time comes in bursts; the same rule applies
    to the reference, the extension and the floor."""
    budget_s = _BUDGET_S if budget_s is None else budget_s
    fn()
    times = []
    start = time.perf_counter()
    while len(times) < reps or (time.perf_counter() - start < budget_s and len(times) < 20 * reps):
        _sync()
        t0 = time.perf_counter()
        fn()
        _sync()
        times.append(time.perf_counter() - t0)
    return min(times) * 1e3


_DEVICE = "cpu"


def _sync():
    if _DEVICE == "cuda":
        torch.cuda.synchronize()


def _status(key: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key):
                return int(line.split()[1]) * 1024
    return 0


def peak_bytes(fn) -> float:
    """Peak memory above the level before fn, in MiB: CUDA allocator stats on a GPU, else the resident set
    (nan where /proc cannot be reset)."""
    if _DEVICE == "cuda":
        if hasattr(fn, "reset"):
            fn.reset()
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        out = fn()
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated()
        del out
        return (peak - base) / 2**20
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        return float("nan")
    if hasattr(fn, "reset"):  # gradients left by the timing runs would be freed inside the call
        fn.reset()
    gc.collect()
    base = _status("VmRSS:")
    out = fn()
    peak = _status("VmHWM:")
    del out
    return (peak - base) / 2**20


def floor_ms(reads, exps, reps: int) -> float:
    t_read = sum(timeit(lambda x=x: x.sum(), reps) for x in reads)
    t_exp = 0.0
    for x in exps:
        buf = torch.empty_like(x, dtype=torch.float32)
        xf = x.float()  # the floor's exponential runs in float32, the accumulation type
        t_exp += timeit(lambda: torch.exp(xf, out=buf), reps)
    return max(t_read, t_exp)


def fwd_bwd(f, *leaves):
    def run():
        for t in leaves:
            t.grad = None
        out = f()
        out.sum().backward()
        return [t.grad for t in leaves]

    def reset():
        for t in leaves:
            t.grad = None

    run.reset = reset
    return run


def cases(quick: bool, device: str = "cpu"):
    """CPU shapes from the kernels issue; on a GPU the same comparisons at B up to 128 and V = 128256."""
    if device == "cuda":
        yield from _cuda_cases(quick)
        return
    g = torch.Generator().manual_seed(0)
    # speculative verification
    for b in (1, 8):
        for v in (4096, 32000):
            gam = 4
            q = torch.softmax(torch.randn(b, gam, v, generator=g), -1)
            tok = torch.multinomial(q.reshape(-1, v), 1, generator=g).reshape(b, gam)
            tl = torch.randn(b, gam + 1, v, generator=g)
            u = torch.rand(b, gam + 1, generator=g, dtype=torch.float64)
            yield (f"speculative_verify B={b} γ={gam} V={v}",
                   lambda tok=tok, q=q, tl=tl, u=u: speculative_verify_reference(tok, q, tl, u),
                   lambda tok=tok, q=q, tl=tl, u=u: speculative_verify(tok, q, tl, u),
                   [tl, q], [tl], None)
    # K-candidate sampling
    x = torch.randn(256, 32000, generator=g)
    y = torch.randint(0, 32000, (256,), generator=g)
    u = torch.rand(256, 4, generator=g, dtype=torch.float64)
    yield ("sample_k_tokens N=256 V=32000 K=4", lambda: sample_k_tokens_reference(x, y, u, 1.0),
           lambda: sample_k_tokens(x, y, 4, uniforms=u), [x], [x], None)
    yield ("sample_k_tokens N=256 V=32000 K=4 T=1.5 top_k=50", lambda: sample_k_tokens_reference(x, y, u, 1.5, 50),
           lambda: sample_k_tokens(x, y, 4, 1.5, 50, uniforms=u), [x], [x], None)
    # token log-probs, forward + backward, against log_softmax + gather
    for dtype in (torch.float32, torch.bfloat16):
        xl = torch.randn(512, 32000, generator=g).to(dtype).requires_grad_()
        yl = torch.randint(0, 32000, (512,), generator=g)
        ref = fwd_bwd(lambda xl=xl, yl=yl: torch.log_softmax(xl.float(), -1).gather(-1, yl[:, None]), xl)
        ext = fwd_bwd(lambda xl=xl, yl=yl: token_logprobs(xl, yl), xl)
        yield (f"token_logprobs fwd+bwd N=512 V=32000 {str(dtype)[6:]}", ref, ext, [xl.detach()], [xl.detach()], None)
    # lm-head fused log-probs
    h = torch.randn(512, 256, generator=g).requires_grad_()
    w = (0.05 * torch.randn(32000, 256, generator=g)).requires_grad_()
    yl = torch.randint(0, 32000, (512,), generator=g)
    logits = (h @ w.t()).detach()
    gemm = lambda: h.detach() @ w.detach().t()  # noqa: E731
    yield ("lm_head_logprobs fwd N=512 H=256 V=32000",
           lambda: torch.log_softmax(h.detach() @ w.detach().t(), -1).gather(-1, yl[:, None]),
           lambda: lm_head_logprobs(h.detach(), w.detach(), yl), [logits], [logits], gemm)
    yield ("lm_head_logprobs fwd+bwd N=512 H=256 V=32000",
           fwd_bwd(lambda: torch.log_softmax(h @ w.t(), -1).gather(-1, yl[:, None]), h, w),
           fwd_bwd(lambda: lm_head_logprobs(h, w, yl), h, w), [logits], [logits], gemm)
    # divergences
    s = torch.randn(512, 32000, generator=g).requires_grad_()
    t = torch.randn(512, 32000, generator=g)
    for kind in ("forward_kl", "reverse_kl", "jsd", "tvd"):
        yield (f"token_divergence {kind} fwd N=512 V=32000",
               lambda kind=kind: token_divergence_reference(s.detach(), t, kind),
               lambda kind=kind: token_divergence(s.detach(), t, kind), [s.detach(), t], [s.detach(), t], None)
        if not quick or kind == "forward_kl":
            yield (f"token_divergence {kind} fwd+bwd N=512 V=32000",
                   fwd_bwd(lambda kind=kind: token_divergence_reference(s, t, kind), s),
                   fwd_bwd(lambda kind=kind: token_divergence(s, t, kind), s), [s.detach(), t], [s.detach(), t],
                   None)


def _cuda_cases(quick: bool):
    dev = "cuda"
    g = torch.Generator(device=dev).manual_seed(0)
    v = 128256
    for b in ((1, 128) if quick else (1, 16, 128)):
        gam = 4
        q = torch.softmax(torch.randn(b, gam, v, generator=g, device=dev), -1)
        tok = torch.multinomial(q.reshape(-1, v), 1, generator=g).reshape(b, gam)
        tl = torch.randn(b, gam + 1, v, generator=g, device=dev)
        u = torch.rand(b, gam + 1, generator=g, dtype=torch.float64, device=dev)
        yield (f"speculative_verify B={b} γ={gam} V={v}",
               lambda tok=tok, q=q, tl=tl, u=u: speculative_verify_reference(tok, q, tl, u),
               lambda tok=tok, q=q, tl=tl, u=u: speculative_verify(tok, q, tl, u), [tl, q], [tl], None)
    n = 1024
    x = torch.randn(n, v, generator=g, device=dev, dtype=torch.bfloat16)
    y = torch.randint(0, v, (n,), generator=g, device=dev)
    u = torch.rand(n, 4, generator=g, dtype=torch.float64, device=dev)
    yield (f"sample_k_tokens N={n} V={v} K=4 bf16", lambda: sample_k_tokens_reference(x, y, u, 1.0),
           lambda: sample_k_tokens(x, y, 4, uniforms=u), [x], [x], None)
    xl = x.clone().requires_grad_()
    yield (f"token_logprobs fwd+bwd N={n} V={v} bf16",
           fwd_bwd(lambda: torch.log_softmax(xl.float(), -1).gather(-1, y[:, None]), xl),
           fwd_bwd(lambda: token_logprobs(xl, y), xl), [x], [x], None)
    h = torch.randn(n, 2048, generator=g, device=dev, dtype=torch.bfloat16).requires_grad_()
    w = (0.02 * torch.randn(v, 2048, generator=g, device=dev)).to(torch.bfloat16).requires_grad_()
    logits = (h @ w.t()).detach()
    yield (f"lm_head_logprobs fwd+bwd N={n} H=2048 V={v} bf16",
           fwd_bwd(lambda: torch.log_softmax((h @ w.t()).float(), -1).gather(-1, y[:, None]), h, w),
           fwd_bwd(lambda: lm_head_logprobs(h, w, y), h, w), [logits], [logits], lambda: h.detach() @ w.detach().t())
    s = x.clone().requires_grad_()
    t = torch.randn(n, v, generator=g, device=dev, dtype=torch.bfloat16)
    for kind in ("forward_kl", "jsd"):
        yield (f"token_divergence {kind} fwd+bwd N={n} V={v} bf16",
               fwd_bwd(lambda kind=kind: token_divergence_reference(s, t, kind), s),
               fwd_bwd(lambda kind=kind: token_divergence(s, t, kind), s), [x, t], [x, t], None)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--quick", action="store_true", help="fewer repetitions and shapes")
    ap.add_argument("--device", choices=("cpu", "cuda"), default="cpu",
                    help="cuda: GPU shapes (B up to 128, V = 128256), also reported in GB/s of input read")
    ap.add_argument("--time-budget", type=float, default=1.5,
                    help="seconds each timing may keep repeating for a better minimum (GPU timings need less)")
    ap.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "results",
                                                  "bench_kernels.json"))
    ap.add_argument("--no-lm-head-memory", action="store_true",
                    help="skip the fused lm-head memory rows (bench_lm_head.py: a GRPO mini-batch's log-probs)")
    args = ap.parse_args()
    global _DEVICE, _BUDGET_S
    _DEVICE, _BUDGET_S = args.device, args.time_budget
    if args.device == "cuda" and not torch.cuda.is_available():
        sys.exit("--device cuda needs a CUDA GPU")
    torch.set_num_threads(args.threads)
    if _backend.extension() is None:
        sys.exit("posttrain._C is not built: python setup.py build_ext --inplace")
    reps = 3 if args.quick else 5
    rows = []
    head = (f"{'op / shape':<52} {'ref ms':>8} {'ext ms':>8} {'speedup':>7} {'ref MiB':>8} {'ext MiB':>8} "
            f"{'mem ratio':>9} {'floor ms':>8} {'ext/floor':>9} {'GB/s':>7}")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, build {_backend.build_info()}")
    print(head)
    print("-" * len(head))
    for name, ref, ext, reads, exps, gemm in cases(args.quick, args.device):
        with _backend.force("torch"):
            t_ref = timeit(ref, reps)
            m_ref = peak_bytes(ref)
        with _backend.force("ext"):
            t_ext = timeit(ext, reps)
            m_ext = peak_bytes(ext)
        fl = floor_ms(reads, exps, reps) + (timeit(gemm, reps) if gemm else 0.0)
        row = dict(op=name, ref_ms=t_ref, ext_ms=t_ext, speedup=t_ref / t_ext, ref_peak_mib=m_ref, ext_peak_mib=m_ext,
                   mem_ratio=m_ext / m_ref if m_ref > 0 else float("nan"), floor_ms=fl, ext_over_floor=t_ext / fl)
        row["ext_gb_per_s"] = sum(x.numel() * x.element_size() for x in reads) / (t_ext * 1e-3) / 1e9
        rows.append(row)
        print(f"{name:<52} {t_ref:8.2f} {t_ext:8.2f} {row['speedup']:6.1f}x {m_ref:8.1f} {m_ext:8.1f} "
              f"{row['mem_ratio']:9.3f} {fl:8.2f} {row['ext_over_floor']:8.2f}x {row['ext_gb_per_s']:7.1f}", flush=True)
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(dict(device=args.device, threads=args.threads, torch=torch.__version__, rows=rows), f, indent=1)
    print(f"wrote {args.out}")
    if not args.no_lm_head_memory:
        lm_head_memory(args)


def lm_head_memory(args) -> None:
    """The fused lm-head's memory rows: peak of a GRPO mini-batch's log-probs forward + backward through
    `policy_logprobs`, fused against unfused, at N = 4096, H = 1024, V = 128256 (N = 512 with --quick), float32 on
    the CPU, bfloat16 on a GPU. bench_lm_head.py prints them and writes its own json next to this one's."""
    here = os.path.dirname(os.path.abspath(__file__))
    command = [sys.executable, os.path.join(here, "bench_lm_head.py"), "--device", args.device, "--threads",
               str(args.threads), "--dtype", "bfloat16" if args.device == "cuda" else "float32",
               "--out", os.path.join(os.path.dirname(os.path.abspath(args.out)), "bench_lm_head.json")]
    print("\nfused lm-head memory (benchmarks/bench_lm_head.py)", flush=True)
    done = subprocess.run([*command, *(["--quick"] if args.quick else [])])
    if done.returncode != 0:
        sys.exit("bench_lm_head.py failed")


if __name__ == "__main__":
    main()
