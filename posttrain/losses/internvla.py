"""InternVLA-M1 losses: the diffusion action loss, the co-training sum, the projection-space similarity diagnostic."""
from __future__ import annotations

import torch


def action_diffusion_loss(predicted: torch.Tensor, target: torch.Tensor,
                          mask: torch.Tensor | None = None) -> tuple[torch.Tensor, dict]:
    """The diffusion loss of the action expert (DDPM; ε-prediction by default):

        L_act = E_{t ~ U{1..T}, ε ~ N(0, I)} ‖ ε − ε_ψ(√ᾱ_t a + √(1−ᾱ_t) ε, t, Q(VLM(I, ℓ ⊕ p), f(I))) ‖²

    averaged over the chunk's steps and action dimensions (the paper's MSE). With `prediction_type: sample` the
    expert predicts the clean chunk and the same MSE is taken against it, ‖ a − â_ψ(a_t, t, c) ‖² (a deviation, see
    docs/methods/internvla_m1.md). Deviation: steps past an episode's end (the chunk padded with the last action)
    can be left out with `mask`; the paper does not mask.

    Args:
        predicted: (N, H, A) the expert's output at the noised chunks (N = batch × repeated diffusion steps).
        target: (N, H, A) the ε that noised them (or the clean chunks under `prediction_type: sample`).
        mask: (N, H) 1 on real steps, 0 on padding; None: every step.
    """
    squared = (predicted.float() - target.float()).pow(2).mean(-1)  # (N, H)
    if mask is None:
        loss = squared.mean()
    else:
        mask = mask.to(squared.dtype)
        loss = (squared * mask).sum() / mask.sum().clamp(min=1.0)
    return loss, {"action_mse": loss.detach()}


def cotraining_loss(action_loss: torch.Tensor, vlm_loss: torch.Tensor | None,
                    vlm_weight: float) -> tuple[torch.Tensor, dict]:
    """Dual supervision in one optimiser step:

        L = L_act + w · L_vlm

    L_vlm is the next-token loss of a grounding/VQA batch (it updates the VLM only); w = 0.1 in the paper. None (no
    co-training) leaves L = L_act.
    """
    if vlm_loss is None or vlm_weight == 0.0:
        return action_loss, {"action": action_loss.detach()}
    loss = action_loss + vlm_weight * vlm_loss
    return loss, {"action": action_loss.detach(), "vlm": vlm_loss.detach()}


def projection_space_similarity(spatial: torch.Tensor, action: torch.Tensor, tol: float = 1e-6) -> torch.Tensor:
    """Projection-Space Similarity (PSS) of two sets of gradients on the same parameters:

        P = G G⁺ (the projector onto the span of the columns of G),   PSS = tr(P_s P_a) / min(rank_s, rank_a)

    1 when one span contains the other, 0 when they are orthogonal.

    Args:
        spatial: (D, k_s) per-batch gradients of the spatial (grounding) objective, one column per batch.
        action: (D, k_a) per-batch gradients of the action objective.
    """
    def basis(g: torch.Tensor) -> torch.Tensor:
        u, s, _ = torch.linalg.svd(g.double(), full_matrices=False)
        return u[:, s > tol * s.max().clamp(min=1e-30)]  # (D, rank)

    u_s, u_a = basis(spatial), basis(action)
    rank = min(u_s.shape[1], u_a.shape[1])
    if rank == 0:
        return torch.zeros((), dtype=torch.float64)
    # tr(U_s U_sᵀ U_a U_aᵀ) = ‖U_sᵀ U_a‖_F²
    return (u_s.T @ u_a).pow(2).sum() / rank
