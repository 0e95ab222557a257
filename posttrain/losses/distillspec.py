"""DistillSpec's distillation loss: a token-averaged divergence between the target and the draft."""
from __future__ import annotations

from collections.abc import Callable

import torch

from posttrain.ops import token_divergence

DIVERGENCES = ("forward_kl", "reverse_kl", "jsd", "tvd")


def jsd_endpoint(divergence: str, beta: float) -> str:
    """"jsd" at β = 0 is forward KL, at β = 1 reverse KL (where JSD[β] itself vanishes); otherwise unchanged."""
    if divergence == "jsd" and beta in (0, 1):
        return "forward_kl" if beta == 0 else "reverse_kl"
    return divergence


def distillspec_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, mask: torch.Tensor,
                     divergence: str = "forward_kl", beta: float = 0.5,
                     temperature: float = 1.0) -> tuple[torch.Tensor, dict]:
    """DistillSpec Eq. 2 over a batch of sequences y given x:

        L(θ) = (1/B) Σ_b (1/|y_b|) Σ_{t ≤ |y_b|} D( p(·|x_b, y_b<t) || q_θ(·|x_b, y_b<t) )

    with full-vocabulary D ∈ {FKL = KL(p||q), RKL = KL(q||p), JSD[β] = β KL(p||m) + (1-β) KL(q||m) with
    m = βp + (1-β)q, TVD = Σ|p - q|/2}, p = softmax(teacher / T) (the target, constant) and q = softmax(student / T)
    (the draft). The paper keeps T_p = T_q = 1. Computed by the `token_divergence` op on the masked positions only.
    JSD[β] is identically zero at β = 0 (m = q) and β = 1 (m = p); there, as TRL's GKD does, "jsd" means its
    limits JSD[β]/β -> KL(p||q) (β = 0: forward KL) and JSD[β]/(1-β) -> KL(q||p) (β = 1: reverse KL).

    Args:
        student_logits: (B, T, V) draft logits predicting each position (already shifted).
        teacher_logits: (B, T, V) target logits at the same positions; no gradient flows to them.
        mask: (B, T) 1 on response tokens, 0 on prompt and padding.
    Returns:
        loss (scalar) and metrics: the divergence, and the mean per-token TVD and 1 - TVD (the expected token-level
        acceptance rate of lossless speculative sampling, Leviathan et al. Cor. 3.6) over the same tokens.
    """
    mask = mask.bool()
    student, teacher = student_logits[mask], teacher_logits[mask]  # (N, V)
    return distillspec_reduce(lambda kind: token_divergence(student, teacher, kind, beta, temperature), mask,
                              jsd_endpoint(divergence, beta))


def distillspec_reduce(per_token_divergence: Callable[[str], torch.Tensor], mask: torch.Tensor,
                       divergence: str) -> tuple[torch.Tensor, dict]:
    """`distillspec_loss` from per-token divergences: `per_token_divergence(kind)` gives D_t (N,) at the N masked
    positions in row-major order (from logits, or from hidden states through the chunked lm-head when
    `model.fused_lm_head=true`). `divergence` is already resolved by `jsd_endpoint`."""
    mask = mask.bool()
    rows = torch.arange(mask.shape[0], device=mask.device)[:, None].expand_as(mask)[mask]  # (N,) row of each token
    per_token = per_token_divergence(divergence)  # (N,)
    counts = mask.sum(-1).clamp(min=1).to(per_token.dtype)  # (B,)
    per_row = torch.zeros_like(counts).index_add(0, rows, per_token) / counts  # (B,) 1/|y| Σ_t D_t
    has_tokens = mask.any(-1)
    loss = per_row[has_tokens].mean() if bool(has_tokens.any()) else per_token.sum() * 0.0
    with torch.no_grad():
        tvd = per_token.detach() if divergence == "tvd" else per_token_divergence("tvd")
        mean_tvd = tvd.mean() if tvd.numel() else torch.zeros((), device=mask.device)
    return loss, {"divergence": loss.detach(), "tvd": mean_tvd, "expected_acceptance": 1.0 - mean_tvd,
                  "tokens": mask.sum().detach().float()}
