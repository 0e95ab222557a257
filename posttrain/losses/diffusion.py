"""Diffusion losses: the denoising objective, Diffusion-DPO (Wallace et al., CVPR 2024) and SePPO (Zhang et al.,
arXiv 2410.05255) with its anchor-based adaptive flipper.

All take per-sample denoising errors e = ‖ε − ε(x_t, t, c)‖², averaged over the latent's elements (a mean, not a
sum, so β needs no retuning when the resolution changes), computed by the caller at one (t, ε) draw per sample.
The papers write them for ε-prediction; a v-prediction model (the tiny default, and SD 2.x) uses
e = ‖v − v_θ(x_t, t, c)‖² with v = √ᾱ_t ε − √(1−ᾱ_t) x_0. Since v − v_θ = (ε − ε_θ)/√ᾱ_t for the ε_θ the same
output implies, that is the ε error with the timestep weighting ω(t) = 1/ᾱ_t: the same objectives, reweighted
(`DiffusionModel.target`).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

FLIPS = ("sign", "indicator", "none")


def denoising_error(predicted: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """(B,) e = mean over the latent's elements of (ε − ε_θ(x_t, t, c))².

    Args:
        predicted: (B, C, H, W) ε_θ(x_t, t, c); noise: (B, C, H, W) the ε that made x_t.
    """
    return (noise.float() - predicted.float()).pow(2).flatten(1).mean(1)


def denoising_loss(predicted: torch.Tensor, noise: torch.Tensor, weights: torch.Tensor | None = None):
    """The simple DDPM objective (Ho et al., 2020): L = E_{x_0, t, ε} ω(t) ‖ε − ε_θ(√ᾱ_t x_0 + √(1−ᾱ_t) ε, t, c)‖².

    Args:
        predicted, noise: (B, C, H, W); weights: (B,) ω(t), None = 1 (the "simple" loss).
    Returns:
        (loss, {"mse": the unweighted mean error})
    """
    errors = denoising_error(predicted, noise)  # (B,)
    weighted = errors if weights is None else errors * weights
    return weighted.mean(), {"mse": errors.detach().mean()}


def dpo_scale(beta: float, num_timesteps: int, weights: torch.Tensor | None, like: torch.Tensor) -> torch.Tensor:
    """(B,) β T ω(λ_t); ω = 1 when `weights` is None (Diffusion-DPO's choice)."""
    weights = torch.ones_like(like) if weights is None else weights.to(like)
    return beta * num_timesteps * weights


def diffusion_dpo_loss(err_w: torch.Tensor, err_w_ref: torch.Tensor, err_l: torch.Tensor, err_l_ref: torch.Tensor,
                       beta: float, num_timesteps: int, weights: torch.Tensor | None = None):
    """Diffusion-DPO (Wallace et al., Eq. 14):

        L = − log σ( − β T ω(λ_t) [ (‖ε^w − ε_θ(x^w_t,t)‖² − ‖ε^w − ε_ref(x^w_t,t)‖²)
                                    − (‖ε^l − ε_θ(x^l_t,t)‖² − ‖ε^l − ε_ref(x^l_t,t)‖²) ] )

    with t shared by the pair and ε^w, ε^l drawn independently, as the equation's expectation reads (the official
    code reuses one ε for both, a variance reduction that leaves the expectation unchanged). The official code's
    `-0.5 * beta_dpo` scale is β T ω = 0.5 β_dpo here (it folds T into β and uses ω = 1/2).

    Args:
        err_w, err_w_ref: (B,) errors of the policy and the reference on the noised winner.
        err_l, err_l_ref: (B,) the same on the noised loser.
        beta: β > 0; num_timesteps: T; weights: (B,) ω(λ_t), None = 1.
    Returns:
        (loss, metrics): `accuracy` (the policy's implicit reward margin is positive), `margin` (the bracket times
        −1: positive when the policy improved the winner more than the loser), `scale` (β T ω, mean).
    """
    delta_w = err_w - err_w_ref  # (B,) negative: the policy denoises the winner better than the reference
    delta_l = err_l - err_l_ref  # (B,)
    scale = dpo_scale(beta, num_timesteps, weights, err_w)  # (B,)
    inside = -scale * (delta_w - delta_l)  # (B,)
    loss = -F.logsigmoid(inside).mean()
    metrics = {"accuracy": (inside > 0).float().mean().detach(), "margin": (delta_l - delta_w).mean().detach(),
               "delta_w": delta_w.mean().detach(), "delta_l": delta_l.mean().detach(), "scale": scale.mean().detach()}
    return loss, metrics


def aaf_sign(err_anchor: torch.Tensor, err_anchor_ref: torch.Tensor, flip: str = "sign") -> torch.Tensor:
    """The anchor-based adaptive flipper (AAF): how the reference sample's term enters SePPO's loss.

        sign = +1 if e^w_ref − e^w_θ > 0 else −1      ("sign": the current model fits the anchor x^w better, so
                                                        the reference model is worse and x^r is treated as a loser)
        sign = 1(e^w_ref − e^w_θ > 0) ∈ {1, 0}          ("indicator": the reference term is dropped, not flipped)
        sign ≡ +1                                       ("none": x^r is always a loser; SePPO without AAF)

    Args:
        err_anchor, err_anchor_ref: (B,) e^w_θ and e^w_ref on the noised anchor (winning image).
    Returns:
        (B,) float signs, without gradient.
    """
    if flip not in FLIPS:
        raise ValueError(f"flip must be one of {FLIPS}, got {flip!r}")
    better = (err_anchor_ref - err_anchor).detach() > 0  # (B,) the current model denoises the anchor better
    if flip == "sign":
        return better.float() * 2 - 1
    if flip == "indicator":
        return better.float()
    return torch.ones_like(err_anchor).detach()


def seppo_loss(err_w: torch.Tensor, err_w_ref: torch.Tensor, err_r: torch.Tensor, err_r_ref: torch.Tensor,
               sign: torch.Tensor, beta: float, num_timesteps: int, weights: torch.Tensor | None = None):
    """SePPO (Zhang et al., 2024), Diffusion-DPO with the reference sample x^r in the loser's place and its term
    multiplied by the AAF sign:

        Δ_w = ‖ε^w − ε_θ(x^w_t,t,c)‖² − ‖ε^w − ε_ref(x^w_t,t,c)‖²
        Δ_r = ‖ε^r − ε_θ(x^r_t,t,c)‖² − ‖ε^r − ε_ref(x^r_t,t,c)‖²
        L   = − log σ( − β T ω(λ_t) [ Δ_w − sign · Δ_r ] )

    sign = +1 is Diffusion-DPO with x^r as the loser; sign = −1 gives −log σ(−βTω(Δ_w + Δ_r)), pushing both images
    below the reference's error; sign = 0 (the indicator variant) keeps only the anchor term.

    Args:
        err_w, err_w_ref: (B,) errors of the policy and the reference model on the noised anchor x^w_t.
        err_r, err_r_ref: (B,) the same on the noised reference sample x^r_t.
        sign: (B,) from `aaf_sign` (no gradient flows through it).
        beta: β > 0; num_timesteps: T; weights: (B,) ω(λ_t), None = 1.
    Returns:
        (loss, metrics): `flip_fraction` (rows with sign < 0), `dropped_fraction` (sign = 0), `accuracy` (the
        bracket is negative), `delta_w`, `delta_r`, `scale`.
    """
    delta_w = err_w - err_w_ref  # (B,)
    delta_r = err_r - err_r_ref  # (B,)
    sign = sign.detach().to(delta_w)
    scale = dpo_scale(beta, num_timesteps, weights, err_w)  # (B,)
    inside = -scale * (delta_w - sign * delta_r)  # (B,)
    loss = -F.logsigmoid(inside).mean()
    metrics = {"flip_fraction": (sign < 0).float().mean(), "dropped_fraction": (sign == 0).float().mean(),
               "accuracy": (inside > 0).float().mean().detach(), "delta_w": delta_w.mean().detach(),
               "delta_r": delta_r.mean().detach(), "scale": scale.mean().detach()}
    return loss, metrics
