"""GFlowVLM's objectives (Kang et al., CVPR 2025): a (vision-)language agent as the forward policy of a GFlowNet over
multi-step episodes whose state z_{0:t} is the whole history (a tree, so P_B = 1 and log P_B = 0 everywhere).

Every loss reads one layout (`posttrain.episodes.scoring`): for trajectory b with m_b moves,
    log_pf (B, M)          log P_F(z_k | z_{0:k-1}) of moves k = 1..m_b (0 beyond)
    log_pterm (B, M + 1)   log P_F(⊤ | z_{0:i}), i = 0..m_b: the probability of answering "[DONE]" at state i; at the
                           last state the terminating answer's own (0 where termination was forced)
    log_reward (B, M + 1)  log R(z_{0:i}⊤), strictly positive rewards
    lengths (B,)           m_b
    outside (B, M + 1)     optional bool: state i lies outside R's support (its history holds an answer that is not
                           an admissible action: R = 0 there, floored to keep the log finite); monotone in i

Outside the support the balance conditions hold only as inequalities: the true target of log P_F there is −∞, and the
floor (1e-10) is a stand-in, not a value to reach. A char-level answer can be far less likely than the floor (a
40-token invalid answer easily has log P_F < −40 < log 1e-10), and a squared residual would then raise it. So a
residual that ends outside the support is one-sided, relu(r) (it lowers a path into it that is too likely and never
raises one), and a residual that starts outside compares two zero rewards and is dropped.

Each state can terminate, so its flow is fixed by F(z_i) · P_F(⊤ | z_i) = R(z_i⊤), and with S_k = Σ_{l ≤ k} log P_F
(S_0 = 0) every balance residual is a difference of A_i = log R_i − log P⊤_i − S_i:

    log R_i + (S_j − S_i) + log P⊤_j − log R_j − log P⊤_i = A_i − A_j.
"""
from __future__ import annotations

import torch


def forward_logprob(log_p_act: torch.Tensor, log_p_cot: torch.Tensor, lam: float = 0.4) -> torch.Tensor:
    """The step's forward log-probability, the chain of thought down-weighted by λ:

        log P_F(z_{t+1} | z_{0:t}, g) = log P_Act(a_t | c_t, z_{0:t}, g) + λ · log P_CoT(c_t | z_{0:t}, g)

    Both are sums of token log-probs (the action's tokens; the thought's tokens). Shapes broadcast: (...,)."""
    return log_p_act + lam * log_p_cot


def balance_potentials(log_pf: torch.Tensor, log_pterm: torch.Tensor, log_reward: torch.Tensor) -> torch.Tensor:
    """A_i = log R_i − log P⊤_i − S_i, S_i = Σ_{k ≤ i} log P_F(z_k | z_{0:k-1}): (B, M+1) from (B, M), (B, M+1) x2.
    Entries past a trajectory's end are meaningless (the losses mask them)."""
    cumulative = torch.nn.functional.pad(log_pf.cumsum(-1), (1, 0))  # (B, M+1), S_0 = 0
    return log_reward - log_pterm - cumulative  # (B, M+1)


def trajectory_zeta(log_pf, log_pterm, log_reward, lengths) -> torch.Tensor:
    """ζ(τ) = Σ_{t=1}^{n} log P_F(z_t | z_{0:t-1}) − log R(x) over the whole trajectory, the terminating transition
    (the final "[DONE]", log P⊤_m) included: −A_m. (B,)."""
    potentials = balance_potentials(log_pf, log_pterm, log_reward)  # (B, M+1)
    return -potentials.gather(1, lengths[:, None]).squeeze(1)  # (B,)


def var_tb_loss(log_pf, log_pterm, log_reward, lengths, groups: torch.Tensor,
                outside: torch.Tensor | None = None) -> tuple[torch.Tensor, dict]:
    """Variance trajectory balance: with ζ(τ) of `trajectory_zeta`,

        L_VarTB = (1/N) Σ_i ( ζ(τ_i) − mean_{j ∈ group(i)} ζ(τ_j) )²

    Trajectories of one group share z_0 and the goal (one task), so they share log Z; at the optimum ζ = −log Z.
    A group of one trajectory contributes 0. groups (B,) long: any labels. With `outside` (B, M+1), a trajectory
    that ends outside R's support does not enter its group's mean (when the group has one inside) and its term is
    relu(ζ − mean)² (module docstring). Returns (loss, {log_z: mean of −ζ, zeta_spread}).
    """
    zeta = trajectory_zeta(log_pf, log_pterm, log_reward, lengths)  # (B,)
    _, index = torch.unique(groups, return_inverse=True)  # (B,) in 0..G-1
    out = ends_outside(outside, lengths, zeta)  # (B,) bool
    inside = (~out).to(zeta.dtype)  # (B,)
    count_in = torch.zeros(int(index.max()) + 1, device=zeta.device).index_add_(0, index, inside)  # (G,)
    count_all = torch.zeros_like(count_in).index_add_(0, index, torch.ones_like(zeta))  # (G,)
    sum_in = torch.zeros_like(count_in).index_add_(0, index, zeta * inside)  # (G,)
    sum_all = torch.zeros_like(count_in).index_add_(0, index, zeta)  # (G,)
    mean = torch.where(count_in > 0, sum_in / count_in.clamp(min=1), sum_all / count_all)  # (G,)
    residual = zeta - mean[index]  # (B,)
    residual = torch.where(out, residual.clamp(min=0), residual)
    loss = residual.pow(2).mean()
    return loss, {"log_z": -zeta.detach().mean(), "zeta_spread": residual.detach().abs().mean()}


def ends_outside(outside: torch.Tensor | None, lengths: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """(B,) bool: the trajectory's last state m_b lies outside R's support (all False without `outside`)."""
    if outside is None:
        return torch.zeros(like.shape, dtype=torch.bool, device=like.device)
    return outside.gather(1, lengths[:, None]).squeeze(1)


def one_sided(residual: torch.Tensor, start_outside: torch.Tensor, end_outside: torch.Tensor,
              mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Balance residuals A_i − A_j with the support rule of the module docstring: relu where j is outside R's
    support and i inside, dropped (mask False) where i is outside. All shapes equal; returns (residual, mask)."""
    residual = torch.where(end_outside & ~start_outside, residual.clamp(min=0), residual)
    return residual, mask & ~start_outside


def subtb_loss(log_pf, log_pterm, log_reward, lengths, outside: torch.Tensor | None = None
               ) -> tuple[torch.Tensor, dict]:
    """Sub-trajectory balance for terminable states (Hu et al., 2024), with the flow identity F(z_i) P⊤_i = R_i:

        L_SubTB(z_{0:m}) = Σ_{0 ≤ i < j ≤ m} [ log R_i + Σ_{k=i+1}^{j} log P_F(z_k | z_{0:k-1}) + log P⊤_j
                                               − log R_j − log P⊤_i ]²

    (the paper's printed Eq. 7/16 repeats R(z_{0:i}⊤) where R(z_{0:j}⊤) belongs; this is the form the flow identity
    and its own DB equation give). The sum over pairs, averaged over trajectories; a trajectory without a move has
    no pair. `outside` (B, M+1): pairs ending outside R's support are one-sided, pairs starting there dropped.
    Returns (loss, {pairs: mean pairs per trajectory}).
    """
    potentials = balance_potentials(log_pf, log_pterm, log_reward)  # (B, M+1)
    residual = potentials[:, :, None] - potentials[:, None, :]  # (B, M+1, M+1), [b, i, j] = A_i − A_j
    positions = torch.arange(potentials.shape[1], device=potentials.device)  # (M+1,)
    pairs = (positions[:, None] < positions[None, :]) & (positions[None, None, :] <= lengths[:, None, None])
    if outside is not None:
        residual, pairs = one_sided(residual, outside[:, :, None].expand_as(residual),
                                    outside[:, None, :].expand_as(residual), pairs)
    per_trajectory = (residual.pow(2) * pairs).sum((1, 2))  # (B,)
    return per_trajectory.mean(), {"pairs": pairs.sum((1, 2)).float().mean()}


def db_loss(log_pf, log_pterm, log_reward, lengths, outside: torch.Tensor | None = None
            ) -> tuple[torch.Tensor, dict]:
    """Detailed balance with "[DONE]" probabilities as state flows (every state terminable; Deleu et al.'s modified
    DB, which GFlowVLM uses):

        L_DB(z_{0:t} → z_{0:t+1}) = [ log R_t + log P_F(z_{t+1} | z_{0:t}, g) + log P⊤_{t+1} − log R_{t+1}
                                      − log P⊤_t ]²

    averaged over every transition of the batch. `outside` (B, M+1): a transition into R's support's outside is
    one-sided, one from there dropped. Returns (loss, {transitions}).
    """
    potentials = balance_potentials(log_pf, log_pterm, log_reward)  # (B, M+1)
    residual = potentials[:, :-1] - potentials[:, 1:]  # (B, M)
    mask = torch.arange(residual.shape[1], device=residual.device)[None] < lengths[:, None]  # (B, M)
    if outside is not None:
        residual, mask = one_sided(residual, outside[:, :-1], outside[:, 1:], mask)
    count = mask.sum().clamp(min=1)
    return (residual.pow(2) * mask).sum() / count, {"transitions": mask.sum().float()}


LOSSES = {"tb": var_tb_loss, "subtb": subtb_loss, "db": db_loss}
