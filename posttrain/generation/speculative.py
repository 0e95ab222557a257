"""Batched speculative decoding: a draft proposes γ tokens, the target verifies them in one forward.

One step (Leviathan et al.; DistillSpec Algorithm A.1), for every row of the batch at once:
  1. the draft feeds its pending tokens and samples d_1..d_γ autoregressively through its KV cache, keeping the exact
     distributions q_1..q_γ it sampled from (same temperature, float32);
  2. the target feeds its pending tokens followed by d_1..d_γ in one forward and keeps the logits at the last γ + 1
     positions;
  3. `posttrain.ops.speculative_verify` accepts a prefix of n_b drafts per row and draws one extra token (residual or
     bonus), so each row emits n_b + 1 tokens;
  4. both caches are cut back to the accepted prefix.

Per-row acceptance in a batch. Rows accept different counts, so the caches cannot simply be cropped per row. Each
model keeps its own column-aligned cache and a 2-D attention mask: the rejected drafts of a row become masked holes,
and trailing columns that every row rejected are cropped from the cache (`DynamicCache.crop`). Position ids count a
row's valid tokens only, so every row sees exactly the sequence it would see alone (left padding and holes are both
invisible). Holes cost attention over at most γ - 1 masked columns per step and row; nothing is re-fed.

The draft has fed only d_1..d_{γ-1} when the target verifies, so its pending tokens for the next step are
[d_γ, extra] with d_γ masked unless the row accepted all γ drafts; the target's pending token is the extra one.

Rows that emit eos keep computing (cheaper than re-packing the batch) but their later tokens are dropped, and the
statistics count only the steps a row was still generating.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch

from posttrain.generation.sampling import _accepts, eval_mode, sampling_probs
from posttrain.ops import speculative_verify
from posttrain.utils.config import check

MODES = ("greedy", "sample", "lenient")


@dataclass
class SpeculativeOutput:
    tokens: torch.Tensor  # (B, L) response tokens, pad after eos or max_new_tokens
    mask: torch.Tensor  # (B, L) bool, True on response tokens (eos included)
    finished: torch.Tensor  # (B,) bool, the row emitted eos within max_new_tokens
    accepted: torch.Tensor  # (B,) draft tokens accepted while the row was generating
    decided: torch.Tensor  # (B,) draft tokens verified: min(n + 1, γ) per step (drafts after a rejection are not);
    # both count only the tokens kept, i.e. up to eos and max_new_tokens
    target_calls: torch.Tensor  # (B,) target forwards while the row was generating
    expected_acceptance: torch.Tensor  # (B,) Σ over decided positions of Σ_v min(q, f(p)) (1 - TVD when lossless)
    seconds: float  # wall-clock time of the whole call
    verify_seconds: float  # time inside the verification op
    stats: dict = field(default_factory=dict)

    @property
    def lengths(self) -> torch.Tensor:
        return self.mask.sum(-1)  # (B,)

    def token_lists(self) -> list[list[int]]:
        return [row[m].tolist() for row, m in zip(self.tokens, self.mask)]


class _CachedLM:
    """A causal LM with a column-aligned KV cache, a 2-D attention mask with holes and per-row positions.

    The loop calls it 1 + γ times per verification step, so it keeps per-row counts of valid tokens (the next
    position) instead of re-summing the mask, and reuses one column of ones for the draft's single-token feeds."""

    def __init__(self, model, batch: int, device):
        self.model = model
        self.cache_arg = "cache" if _accepts(model, "cache") else "past_key_values"  # renamed in transformers 5
        self.keep_arg = _accepts(model, "logits_to_keep")
        self.cache = None
        self.mask = torch.zeros((batch, 0), dtype=torch.long, device=device)  # (B, C)
        self.count = torch.zeros((batch, 1), dtype=torch.long, device=device)  # (B, 1) valid tokens in the cache
        self.ones = torch.ones((batch, 1), dtype=torch.long, device=device)  # (B, 1)
        self.calls = 0

    def _forward(self, tokens: torch.Tensor, positions: torch.Tensor, keep: int) -> torch.Tensor:
        extra = {"logits_to_keep": keep} if self.keep_arg else {}
        out = self.model(input_ids=tokens, attention_mask=self.mask, position_ids=positions, use_cache=True,
                         **{self.cache_arg: self.cache}, **extra)
        self.cache = out[self.cache_arg]
        self.calls += 1
        return out.logits[:, -keep:]

    def feed(self, tokens: torch.Tensor, valid: torch.Tensor, keep: int) -> torch.Tensor:
        """Appends k columns (masked where not valid); returns the logits of the last `keep` columns (B, keep, V)."""
        valid = valid.long()  # (B, k)
        positions = (self.count + valid.cumsum(-1) - 1).clamp(min=0)  # (B, k) valid tokens before
        self.count = self.count + valid.sum(-1, keepdim=True)
        self.mask = torch.cat([self.mask, valid], dim=-1)  # (B, C + k)
        return self._forward(tokens, positions, keep)

    def feed_one(self, tokens: torch.Tensor) -> torch.Tensor:
        """Appends one valid column (B, 1); returns its logits (B, V)."""
        positions = self.count  # (B, 1)
        self.count = self.count + 1
        self.mask = torch.cat([self.mask, self.ones], dim=-1)  # (B, C + 1)
        return self._forward(tokens, positions, 1)[:, -1]

    def keep_prefix(self, fed: int, keep: torch.Tensor, drop: int) -> None:
        """Of the last `fed` columns (all valid), row b keeps the first keep[b]; the last `drop` columns, which no
        row keeps, are cropped."""
        if drop < fed:  # some row keeps part of the block: rejected columns become holes
            cols = torch.arange(fed, device=self.mask.device)  # (fed,)
            removed = (cols[None] >= keep[:, None]).long()  # (B, fed)
            self.mask[:, -fed:] -= removed
            self.count = self.count - removed.sum(-1, keepdim=True)
        else:
            self.count = self.count - fed
        if drop > 0:
            self.cache.crop(-drop)  # transformers 5: a negative count removes that many trailing positions
            self.mask = self.mask[:, :-drop]


def _draft_distribution(logits: torch.Tensor, mode: str, temperature: float) -> torch.Tensor:
    """(B, V) float32: the distribution the draft samples from; one-hot argmax for greedy."""
    if mode == "greedy":
        return torch.nn.functional.one_hot(logits.argmax(-1), logits.shape[-1]).float()
    return sampling_probs(logits, temperature)


@torch.no_grad()
def speculative_generate(
    target,
    draft,
    prompt_input_ids: torch.Tensor,
    prompt_attention_mask: torch.Tensor,
    *,
    gamma: int,
    max_new_tokens: int,
    eos_token_id: int | None,
    pad_token_id: int,
    mode: str = "sample",
    temperature: float = 1.0,
    lenience: float = 1.0,
    generator: torch.Generator | None = None,
) -> SpeculativeOutput:
    """Speculative decoding of up to `max_new_tokens` per row.

    Args:
        target, draft: HF causal LMs over the same vocabulary.
        prompt_input_ids, prompt_attention_mask: (B, P), left-padded.
        gamma: γ ≥ 1 draft tokens per target call.
        mode: "greedy" (reproduces the target's greedy decoding), "sample" (reproduces sampling from
            softmax(target / temperature)), "lenient" (lossy: accept iff u·q < p / lenience).
        lenience: ε ∈ (0, 1] of f_lin(p, ε) = p / ε for mode="lenient"; f_sq(p, ε) is lenience = ε².
        generator: the torch.Generator all draws (draft samples, acceptance uniforms) come from.
    Returns:
        SpeculativeOutput; `stats` holds acceptance_rate, tokens_per_call, tokens_per_second, verify_share.
    """
    check(mode in MODES, "mode", f"must be one of {list(MODES)}, got {mode!r}")
    check(gamma >= 1, "gamma", f"must be >= 1, got {gamma}")
    check(max_new_tokens > 0, "max_new_tokens", f"must be > 0, got {max_new_tokens}")
    check(mode == "greedy" or temperature > 0, "temperature", f"must be > 0 when sampling, got {temperature}")
    check(0 < lenience <= 1, "lenience", f"must be in (0, 1], got {lenience}")
    check(target.config.vocab_size == draft.config.vocab_size, "draft",
          f"vocabulary size {draft.config.vocab_size} differs from the target's {target.config.vocab_size}")
    start = time.perf_counter()
    device = prompt_input_ids.device
    batch = prompt_input_ids.shape[0]
    rows = torch.arange(batch, device=device)
    out = torch.full((batch, max_new_tokens + gamma + 1), pad_token_id, dtype=torch.long, device=device)  # (B, L+γ+1)
    length = torch.zeros(batch, dtype=torch.long, device=device)  # (B,) tokens emitted so far
    alive = torch.ones(batch, dtype=torch.bool, device=device)  # (B,)
    accepted = torch.zeros(batch, dtype=torch.long, device=device)
    decided = torch.zeros(batch, dtype=torch.long, device=device)
    calls = torch.zeros(batch, dtype=torch.long, device=device)
    expected = torch.zeros(batch, dtype=torch.float64, device=device)
    verify_seconds = 0.0
    steps = torch.arange(gamma + 1, device=device)[None]  # (1, γ+1)
    draft_valid = torch.ones((batch, gamma), dtype=torch.bool, device=device)  # (B, γ)
    t_model, d_model = _CachedLM(target, batch, device), _CachedLM(draft, batch, device)
    t_pending, t_valid = prompt_input_ids, prompt_attention_mask.bool()  # (B, P) tokens not yet in the target cache
    d_pending, d_valid = t_pending, t_valid
    with eval_mode(target), eval_mode(draft):
        while bool(alive.any()):
            logits = d_model.feed(d_pending, d_valid, keep=1)[:, -1]  # (B, V)
            drafts, probs = [], []
            for i in range(gamma):
                q = _draft_distribution(logits, mode, temperature)  # (B, V) exactly what d_i is drawn from
                d = q.argmax(-1) if mode == "greedy" else torch.multinomial(q, 1, generator=generator).squeeze(-1)
                drafts.append(d)
                probs.append(q)
                if i < gamma - 1:
                    logits = d_model.feed_one(d[:, None])
            drafts_t = torch.stack(drafts, 1)  # (B, γ)
            probs_t = torch.stack(probs, 1)  # (B, γ, V)
            fed = torch.cat([t_pending, drafts_t], 1)  # (B, k + γ)
            fed_valid = torch.cat([t_valid, draft_valid], 1)
            target_logits = t_model.feed(fed, fed_valid, keep=gamma + 1)  # (B, γ+1, V)
            tick = time.perf_counter()
            tokens, n, exp = speculative_verify(drafts_t, probs_t, target_logits, temperature=temperature,
                                                mode=mode, lenience=lenience, generator=generator)
            verify_seconds += time.perf_counter() - tick
            # append up to n + 1 tokens per alive row, stopping at eos and at max_new_tokens
            emitted = tokens.clamp(min=0)  # (B, γ+1)
            count = n + 1  # (B,)
            if eos_token_id is not None:
                is_eos = (emitted == eos_token_id) & (steps < count[:, None])  # (B, γ+1)
                hit = is_eos.any(-1)
                count = torch.where(hit, is_eos.long().argmax(-1) + 1, count)  # up to and with the first eos
            else:
                hit = torch.zeros_like(alive)
            kept = torch.where(alive, torch.minimum(count, max_new_tokens - length), 0)  # (B,)
            cols = length[:, None] + steps  # (B, γ+1)
            write = steps < kept[:, None]
            out[rows[:, None].expand_as(cols)[write], cols[write]] = emitted[write]
            # statistics over the kept tokens only: drafts verified past eos or the length limit do not count
            full = kept == n + 1  # (B,) the row kept the extra token, so all its decisions count
            step_accepted = torch.where(full, n, torch.minimum(kept, n))  # (B,)
            step_decided = torch.where(full, torch.clamp(n + 1, max=gamma), step_accepted)  # (B,)
            accepted += step_accepted
            decided += step_decided
            calls += alive.long()
            dec_mask = steps[:, :gamma] < step_decided[:, None]  # (B, γ)
            expected += (exp.double() * dec_mask).sum(-1)
            length += kept
            alive = alive & ~(hit & (kept == count)) & (length < max_new_tokens)
            # cut both caches back to the accepted prefix; the extra token is the next pending one
            longest = int(n.max())  # the one host sync of the step besides alive.any()
            t_model.keep_prefix(gamma, n, gamma - longest)
            if gamma > 1:
                d_model.keep_prefix(gamma - 1, torch.clamp(n, max=gamma - 1), gamma - 1 - min(longest, gamma - 1))
            extra_tok = tokens[rows, n][:, None]  # (B, 1)
            t_pending, t_valid = extra_tok, draft_valid[:, :1]
            d_pending = torch.cat([drafts_t[:, -1:], extra_tok], 1)  # (B, 2): d_γ only where all γ were accepted
            d_valid = torch.cat([(n == gamma)[:, None], t_valid], 1)
    tokens = out[:, :max_new_tokens]  # (B, L)
    mask = torch.arange(max_new_tokens, device=device)[None] < length[:, None]  # (B, L)
    tokens = torch.where(mask, tokens, torch.full_like(tokens, pad_token_id))
    finished = (tokens == eos_token_id).any(-1) & mask.any(-1) if eos_token_id is not None else torch.zeros_like(alive)
    seconds = time.perf_counter() - start
    result = SpeculativeOutput(tokens=tokens, mask=mask, finished=finished, accepted=accepted, decided=decided,
                               target_calls=calls, expected_acceptance=expected, seconds=seconds,
                               verify_seconds=verify_seconds)
    result.stats = speculative_stats(result)
    return result


def speculative_stats(out: SpeculativeOutput) -> dict:
    """acceptance_rate α = accepted / decided drafts; expected_acceptance = mean Σ_v min(q, p) over the same
    positions (1 - TVD in lossless sampling); tokens_per_call τ = emitted tokens / target calls (bonus and residual
    tokens included); tokens_per_second and the verification op's share of the wall-clock time."""
    decided = max(int(out.decided.sum()), 1)
    tokens = int(out.lengths.sum())
    return {"acceptance_rate": float(out.accepted.sum()) / decided,
            "expected_acceptance": float(out.expected_acceptance.sum()) / decided,
            "tokens_per_call": tokens / max(int(out.target_calls.sum()), 1),
            "tokens_per_second": tokens / max(out.seconds, 1e-9),
            "verify_share": out.verify_seconds / max(out.seconds, 1e-9)}
