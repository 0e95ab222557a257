"""OTR: One-Token Rollout (Ming et al., 2025). Every response position of an SFT pair is a one-step episode: the
current policy samples K candidate tokens from the ground-truth prefix at temperature τ, the ground-truth token
rewards them (1 on a match, β otherwise) and REINFORCE updates the policy. One forward pass, no generation."""
from __future__ import annotations

import torch

from lightning_modules.base import PostTrainModule
from posttrain.losses.otr import (
    NORMALIZATIONS,
    otr_expected_loss,
    otr_expected_reduce,
    otr_expected_terms,
    otr_loss,
    rollout_entropy,
)
from posttrain.models.forward import IGNORE_INDEX, fused_head, head_weight, hidden_states
from posttrain.ops import lm_head_logprobs, sample_k_tokens
from posttrain.ops.lm_head_rows import block_logits, lm_head_entropy, lm_head_rows, lm_head_sample_k
from posttrain.utils.config import check, check_choice

ESTIMATORS = ("sampled", "expectation")


class OTRModule(PostTrainModule):
    """Args:
        k: candidates sampled per response position (the paper: 256).
        temperature: τ of the rollout distribution softmax(z/τ) (the paper: > 1).
        beta: reward of a candidate that is not the ground-truth token (< 1; the paper: small and negative).
        normalization: "sequence" (the paper's 1/T per sequence, then the batch mean) or "token".
        estimator: "sampled" (the paper's Monte-Carlo loss through the fused op) or "expectation" (its K → ∞ limit).
        seed: seeds the candidates of each step (with the global step and rank), so a resumed run draws the same.
    """

    def __init__(self, model, tokenizer, k: int = 8, temperature: float = 1.5, beta: float = -0.1,
                 normalization: str = "sequence", estimator: str = "sampled", seed: int = 0, optimizer=None,
                 scheduler=None, evaluator=None):
        super().__init__(model, tokenizer, optimizer, scheduler, evaluator)
        check(isinstance(k, int) and k >= 1, "method.k", f"must be an int >= 1, got {k!r}")
        check(temperature > 0, "method.temperature", f"must be > 0, got {temperature}")
        check(beta < 1, "method.beta", f"must be < 1 (the reward of a match is 1), got {beta}")
        check_choice(normalization, NORMALIZATIONS, "method.normalization")
        check_choice(estimator, ESTIMATORS, "method.estimator")
        self.save_hyperparameters(ignore=["model", "tokenizer", "evaluator"])
        self.k, self.temperature, self.beta, self.seed = k, float(temperature), float(beta), seed
        self.normalization, self.estimator = normalization, estimator

    def training_step(self, batch, batch_idx):
        labels = batch["labels"][:, 1:]  # (B, T-1)
        mask = labels != IGNORE_INDEX  # (B, T-1) response positions are the only rollout states
        losses = self.fused_losses if fused_head(self.model) else self.materialised_losses
        loss, metrics, label_logps, entropy = losses(batch, labels, mask)
        metrics = {"loss": loss, **metrics, "label_logp": label_logps.detach().mean()}
        if self.global_step % self.trainer.log_every_n_steps == 0:
            metrics["entropy"] = entropy()
        self.log_metrics("train", metrics, batch_size=batch["input_ids"].shape[0])
        return loss

    def materialised_losses(self, batch, labels, mask):
        """The training step's loss, metrics, label log-probs (N,) of the N response positions and their rollout
        entropy (a callable: an extra pass over the logits, made on logged steps only), from the (B, T, V) logits."""
        logits = self.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                            use_cache=False).logits[:, :-1]  # (B, T-1, V)
        if self.estimator == "expectation":
            loss, metrics = otr_expected_loss(logits, labels, mask, self.beta, self.temperature, self.normalization)
            label_logps = torch.log_softmax(logits.detach(), -1).gather(-1, labels.clamp(min=0)[..., None])[..., 0]
            label_logps = label_logps[mask]  # (N,)
        else:
            loss, metrics, label_logps = self.sampled_loss(logits, labels, mask)

        def entropy():
            return rollout_entropy(logits[mask], mask[mask], self.temperature)

        return loss, metrics, label_logps, entropy

    def fused_losses(self, batch, labels, mask):
        """`materialised_losses` from the final hidden states of the N response positions, a block of positions at a
        time through the lm-head (`model.fused_lm_head=true`): the (B, T, V) logits never exist."""
        hidden = hidden_states(self.model, batch["input_ids"], batch["attention_mask"])[:, :-1][mask]  # (N, H)
        weight = head_weight(self.model, hidden.dtype)  # (V, H)
        if self.estimator == "expectation":
            def terms(h, w, y):
                return otr_expected_terms(block_logits(h, w), y, torch.ones_like(y, dtype=torch.bool),
                                          self.temperature)

            parts = lm_head_rows(terms, hidden, weight, labels[mask])  # 3 x (N,)
            dense = [p.new_zeros(mask.shape).index_put((mask,), p) for p in parts]  # 3 x (B, T-1)
            loss, metrics = otr_expected_reduce(*dense, mask, self.beta, self.normalization)
            label_logps = lm_head_logprobs(hidden.detach(), weight.detach(), labels[mask])  # (N,)
        else:
            uniforms = draw_uniforms(hidden.shape[0], self.k, self.step_generator(), hidden.device)  # (N, K)
            samples, sample_logps, label_logps = lm_head_sample_k(hidden, weight, labels[mask], uniforms,
                                                                  self.temperature)
            loss, metrics = otr_from_candidates(samples, sample_logps, labels, mask, self.beta, self.normalization)

        def entropy():
            return lm_head_entropy(hidden.detach(), weight.detach(), self.temperature).mean()

        return loss, metrics, label_logps, entropy

    def sampled_loss(self, logits, labels, mask):
        return sampled_otr_loss(logits, labels, mask, self.k, self.temperature, self.beta, self.normalization,
                                self.step_generator())

    def step_generator(self) -> torch.Generator:
        seed = (self.seed * 1_000_003 + 7919 * (self.global_step + 1) + 104729 * self.global_rank) % 2**63
        return torch.Generator(device=self.device).manual_seed(seed)


def sampled_otr_loss(logits, labels, mask, k: int, temperature: float, beta: float, normalization: str,
                     generator: torch.Generator | None):
    """K candidates per response position through the fused op, which reads each row of logits once.

    Args:
        logits: (B, T, V); labels: (B, T) next tokens; mask: (B, T) response positions (the only rollout states).
    Returns:
        loss, metrics of `otr_loss`, label log-probs (N,) of the N response positions.
    """
    rows = logits[mask]  # (N, V)
    uniforms = draw_uniforms(rows.shape[0], k, generator, rows.device)  # (N, K)
    samples, sample_logps, label_logps, _ = sample_k_tokens(rows, labels[mask], k, temperature,
                                                            uniforms=uniforms)  # (N, K), (N, K), (N,)
    loss, metrics = otr_from_candidates(samples, sample_logps, labels, mask, beta, normalization)
    return loss, metrics, label_logps


def draw_uniforms(n: int, k: int, generator: torch.Generator | None, device) -> torch.Tensor:
    """The (N, K) float64 uniforms that pick the candidates (the same whether the logits are materialised or not)."""
    return torch.rand((n, k), generator=generator, dtype=torch.float64, device=device)


def otr_from_candidates(samples, sample_logps, labels, mask, beta: float, normalization: str):
    """`otr_loss` of the N response positions' candidates (N, K), scattered back to (B, T, K)."""
    batch, steps = mask.shape
    k = samples.shape[1]
    dense_logps = sample_logps.new_zeros(batch, steps, k).index_put((mask,), sample_logps)  # (B, T, K)
    dense_samples = samples.new_zeros(batch, steps, k).index_put((mask,), samples)  # (B, T, K)
    return otr_loss(dense_logps, dense_samples, labels, mask, beta, normalization)
