"""Rollouts and group statistics shared by the online methods (RFT, GRPO, NFT, SPARK, PPO).

One rollout step: K responses per prompt from the current policy (which is π_old for the whole step) through
`posttrain.generation`, each scored by the reward object the method was given (`reward(example, completion) ->
Verdict`), packed into training rows with the behaviour policy's per-token log-probs recorded at generation time,
so every later mini-batch of the step computes its importance ratio against the exact distribution that sampled
the tokens. Every input is an argument: the model, the batch, the processor that encodes and decodes, the reward,
the settings and the random generator. A vision-language batch's `image_inputs` go to the sampler and stay with
their rows (each of a prompt's K samples holds the prompt's images), so every forward of a row sees its own image.
"""
from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, fields

import torch

from posttrain.generation import generate
from posttrain.models.forward import IGNORE_INDEX, label_logprobs
from posttrain.processors import ImageInputs, pack
from posttrain.utils.config import ConfigError, check


@dataclass(frozen=True)
class RolloutSettings:
    """How responses are sampled and scored.

    num_samples: K responses per prompt (rows i*K .. i*K+K-1 belong to prompt i).
    temperature, max_new_tokens: of the sampling; no top-k/top-p, so the training forward at the same temperature
        is exactly the sampling distribution.
    truncated_is_wrong: responses without eos within max_new_tokens score 0 (the NFT paper).
    max_generation_batches: dynamic sampling's budget (`rollout`); 1 = no refill.
    """

    num_samples: int
    temperature: float = 1.0
    max_new_tokens: int = 8
    truncated_is_wrong: bool = True
    max_generation_batches: int = 1


@dataclass
class Rollout:
    input_ids: torch.Tensor  # (R, T) [bos] prompt response, right-padded; R = prompts * K
    attention_mask: torch.Tensor  # (R, T)
    labels: torch.Tensor  # (R, T) response tokens, -100 elsewhere
    old_logps: torch.Tensor  # (R, T-1) log π_old of each label token under the sampling distribution; 0 elsewhere
    mask: torch.Tensor  # (R, T-1) bool, response tokens (eos included)
    rewards: torch.Tensor  # (R,) float, 1 correct / 0 wrong
    parsed: torch.Tensor  # (R,) bool, the verifier found an answer
    finished: torch.Tensor  # (R,) bool, the response ended with eos
    num_samples: int  # K; rows of prompt i are i*K .. i*K+K-1
    seconds: float = 0.0  # wall time of generation and scoring
    first_prompts: int | None = None  # prompts of the step's own batch (the rest were added by dynamic sampling)
    generation_batches: int = 1  # prompt batches generated for this rollout (> 1 with dynamic sampling)
    image_inputs: ImageInputs | None = None  # R rows' images (a VLM's rollout), in row order; None for text
    correct: torch.Tensor | None = None  # (R,) bool, the verdict's answer match (a graded reward's rewards are not
    # 0/1, e.g. 0.9 · correct + 0.1 · format); None = the rewards are the correctness

    @property
    def num_prompts(self) -> int:
        return self.rewards.shape[0] // self.num_samples

    @property
    def batch_prompts(self) -> int:
        """The prompts of the step's own batch, an unbiased sample of the data (dynamic sampling adds only mixed
        groups after them, which would bias the logged group fractions and accuracy)."""
        return self.num_prompts if self.first_prompts is None else self.first_prompts

    def grouped(self, values: torch.Tensor) -> torch.Tensor:
        return values.view(self.num_prompts, self.num_samples)  # (P, K)

    def rows(self, index: torch.Tensor) -> dict:
        """The tensors of the selected rows, trimmed to their longest sequence, and their `image_inputs` (VLMs)."""
        out = {f.name: getattr(self, f.name)[index] for f in fields(self)
               if isinstance(getattr(self, f.name), torch.Tensor)}
        width = int(out["attention_mask"].sum(-1).max())
        for key in ("input_ids", "attention_mask", "labels"):
            out[key] = out[key][:, :width]
        for key in ("old_logps", "mask"):
            out[key] = out[key][:, : width - 1]
        if self.image_inputs is not None:
            out["image_inputs"] = self.image_inputs.select(index)
        return out


@torch.no_grad()
def collect_rollout(model, batch: dict, processor, reward: Callable, settings: RolloutSettings,
                    generator: torch.Generator | None) -> Rollout:
    """K samples per prompt of `batch` (left-padded `prompt_input_ids` / `prompt_attention_mask`, the raw
    `examples` and, for a VLM, `image_inputs`), scored by `reward(example, completion)`, decoded and packed by
    `processor` (a `posttrain.processors` TextProcessor or VisionProcessor: pad/eos ids, max_length, decode).

    Truncated responses (no eos within max_new_tokens) are wrong, as in the NFT paper, unless
    `settings.truncated_is_wrong` is false.
    """
    start, k = time.perf_counter(), settings.num_samples
    device, images = batch["prompt_input_ids"].device, batch.get("image_inputs")
    gen = generate(model, batch["prompt_input_ids"], batch["prompt_attention_mask"],
                   max_new_tokens=settings.max_new_tokens, eos_token_id=processor.eos_id,
                   pad_token_id=processor.pad_id, temperature=settings.temperature, num_samples=k,
                   generator=generator, image_inputs=images)
    responses = gen.token_lists()
    completions = processor.decode(responses)
    examples = [e for e in batch["examples"] for _ in range(k)]
    verdicts = [reward(e, c) for e, c in zip(examples, completions)]
    rewards = torch.tensor([v.reward for v in verdicts], dtype=torch.float32, device=device)  # (R,)
    if settings.truncated_is_wrong:
        rewards = rewards * gen.finished.float()
    parsed = torch.tensor([v.parsed for v in verdicts], dtype=torch.bool, device=device)  # (R,)
    correct = torch.tensor([v.correct for v in verdicts], dtype=torch.bool, device=device)  # (R,)
    if settings.truncated_is_wrong:
        correct = correct & gen.finished

    prompts = [ids[m.bool()].tolist() for ids, m in zip(batch["prompt_input_ids"], batch["prompt_attention_mask"])]
    prompts = [p for p in prompts for _ in range(k)]
    if images is not None:
        check_fits(prompts, responses, processor.max_length)
    packed = {n: v.to(device) for n, v in pack(prompts, responses, processor.pad_id, processor.max_length).items()}
    mask = packed["labels"][:, 1:] != -100  # (R, T-1), the positions label_logprobs scores
    old_logps = torch.zeros(mask.shape, dtype=torch.float32, device=device)  # (R, T-1)
    kept = mask.sum(-1).tolist()  # pack may cut over-long responses on the right
    old_logps[mask] = torch.cat([gen.logprobs[i, :n] for i, n in enumerate(kept)])
    return Rollout(input_ids=packed["input_ids"], attention_mask=packed["attention_mask"], labels=packed["labels"],
                   old_logps=old_logps, mask=mask, rewards=rewards, parsed=parsed, finished=gen.finished,
                   num_samples=k, seconds=time.perf_counter() - start,
                   image_inputs=images.repeat_interleave(k) if images is not None else None, correct=correct)


def check_fits(prompts: list[list[int]], responses: list[list[int]], max_length: int) -> None:
    """Image rows must fit whole: `pack` would cut an over-long row's prompt from the left, image tokens first."""
    longest = max(len(p) + len(r) for p, r in zip(prompts, responses))
    if longest > max_length:
        raise ConfigError(f"data.max_length: {max_length} is shorter than an image prompt plus its sampled response "
                          f"({longest} tokens); raise it or lower method.generation.max_new_tokens")


def rollout(model, batch: dict, processor, reward: Callable, settings: RolloutSettings,
            generator: torch.Generator | None, draw_prompts: Callable[[int, torch.Generator], dict] | None = None
            ) -> Rollout:
    """`collect_rollout` of the batch, with dynamic sampling (the NFT/DAPO papers' refill) when
    `settings.max_generation_batches` > 1.

    While fewer than len(batch) prompts have mixed groups (0 < r̂ < 1, the only ones that carry a gradient),
    `draw_prompts(len(batch), generator)` gives another batch of training prompts (drawn with the same generator, so
    a run seeded by its position in training draws the same again), whose mixed groups are appended, up to
    `max_generation_batches` batches in all. The result holds the step's own batch first (its statistics stay
    unbiased) and then only the added mixed groups, at most enough to reach len(batch) mixed prompts, so every
    method gets the same number of updates per step.
    """
    first = collect_rollout(model, batch, processor, reward, settings, generator)
    target, parts = first.num_prompts, [first]
    missing = target - mixed_prompts(first).numel()
    while missing > 0 and len(parts) < settings.max_generation_batches:
        extra = collect_rollout(model, draw_prompts(target, generator), processor, reward, settings, generator)
        added = mixed_prompts(extra)[:missing]  # (P',)
        parts.append(select_prompts(extra, added))
        missing -= added.numel()
    return concat_rollouts(parts, processor.pad_id) if len(parts) > 1 else first


def select_prompts(rollout: Rollout, prompts: torch.Tensor) -> Rollout:
    """The rollout restricted to the given prompts (whole groups, in the given order)."""
    k = rollout.num_samples
    index = (prompts[:, None] * k + torch.arange(k, device=prompts.device)).flatten()  # (P' * K,)
    tensors = {f.name: getattr(rollout, f.name)[index] for f in fields(rollout)
               if isinstance(getattr(rollout, f.name), torch.Tensor)}
    images = rollout.image_inputs.select(index) if rollout.image_inputs is not None else None
    return Rollout(**tensors, num_samples=k, seconds=rollout.seconds, image_inputs=images)


def concat_rollouts(parts: list[Rollout], pad_token_id: int) -> Rollout:
    """One rollout from several of the same K, right-padding every row to the widest; `first_prompts` = the first
    part's prompts, so statistics can be taken over the step's own batch."""
    width = max(p.input_ids.shape[1] for p in parts)
    pad_values = {"input_ids": pad_token_id, "attention_mask": 0, "labels": -100, "old_logps": 0.0, "mask": False}

    def padded(part: Rollout, name: str) -> torch.Tensor:
        value = getattr(part, name)
        if name not in pad_values:
            return value
        extra = width - (1 if name in ("old_logps", "mask") else 0) - value.shape[1]
        return torch.nn.functional.pad(value, (0, extra), value=pad_values[name])

    tensors = {f.name: torch.cat([padded(p, f.name) for p in parts]) for f in fields(parts[0])
               if isinstance(getattr(parts[0], f.name), torch.Tensor)}
    images = ImageInputs.concat([p.image_inputs for p in parts]) if parts[0].image_inputs is not None else None
    return Rollout(**tensors, num_samples=parts[0].num_samples, seconds=sum(p.seconds for p in parts),
                   first_prompts=parts[0].num_prompts, generation_batches=len(parts), image_inputs=images)


def response_tokens(labels: torch.Tensor) -> list[list[int]]:
    """Each row's response token ids (eos included) from its labels (R, T): the tokens the policy generated."""
    return [row[row != IGNORE_INDEX].tolist() for row in labels]


def policy_logprobs(model, rows: dict, temperature: float = 1.0) -> torch.Tensor:
    """log π_θ of each label token under the same temperature the rollout sampled with: (R, T-1), 0 off-response.

    Dividing the logits by the rollout temperature, and scoring over the sampler's output vocabulary (a VLM's image
    placeholders are never sampled), makes π_θ = π_old at the first update of a step (ratio 1). The rows'
    `image_inputs`, when present, go to the model with the positions it computes for them. With
    `model.fused_lm_head=true` no (R, T, V) logits exist (`label_logprobs`).
    """
    return label_logprobs(model, rows["input_ids"], rows["attention_mask"], rows["labels"],
                          image_inputs=rows.get("image_inputs"), temperature=temperature)[0]  # (R, T-1)


def correctness_rate(rewards: torch.Tensor) -> torch.Tensor:
    """r̂_q: the mean reward of each prompt's K samples. rewards (P, K) -> (P,)."""
    return rewards.float().mean(-1)


def group_advantages(rewards: torch.Tensor, scale: bool = True, eps: float = 1e-6) -> torch.Tensor:
    """GRPO advantages A_i = (r_i − mean_j r_j) / (std_j r_j + eps) per group, the population std (K denominator);
    `scale=False` gives Dr. GRPO's mean-centred A_i = r_i − mean_j r_j. Groups of equal rewards get A = 0.

    rewards (P, K) -> (P, K).
    """
    centred = rewards - rewards.mean(-1, keepdim=True)  # (P, K)
    if not scale:
        return centred
    std = rewards.std(-1, correction=0, keepdim=True)  # (P, 1)
    return torch.where(std > 0, centred / (std + eps), torch.zeros_like(centred))


def group_statistics(rollout: Rollout) -> dict:
    """The logged rollout metrics: reward mean, accuracy and all-correct/all-wrong group fractions (by the verdicts'
    correctness, so a graded reward's all-formatted-but-wrong group counts as all wrong), the fraction of groups
    whose rewards differ (`groups_mixed`: the only ones with a nonzero advantage), lengths, parsing, and
    `sampled_nll`, the mean −log π_old of the sampled tokens: an estimate of the policy's per-token entropy, whose
    fall shows the sampling distribution collapsing."""
    rows = rollout.batch_prompts * rollout.num_samples  # statistics of the step's own batch only
    rewards = rollout.grouped(rollout.rewards)[: rollout.batch_prompts]  # (P, K)
    correct = rewards if rollout.correct is None else rollout.grouped(rollout.correct)[: rollout.batch_prompts]
    rate = correctness_rate(correct)  # (P,)
    lengths = rollout.mask[:rows].sum(-1).float()  # (R,)
    mask = rollout.mask[:rows]  # (R, T-1)
    return {
        "reward_mean": rewards.mean(),
        "accuracy": (rewards > 0.5).float().mean() if rollout.correct is None else rate.mean(),
        "groups_all_correct": (rate == 1).float().mean(),
        "groups_all_wrong": (rate == 0).float().mean(),
        "groups_mixed": (rewards.amax(-1) > rewards.amin(-1)).float().mean(),  # the groups with an advantage
        "response_length": lengths.mean(),
        "sampled_nll": -(rollout.old_logps[:rows] * mask).sum() / mask.sum().clamp(min=1),
        "truncated": (~rollout.finished[:rows]).float().mean(),
        "unparsed": (~rollout.parsed[:rows]).float().mean(),
        "generation_batches": float(rollout.generation_batches),
    }


def mixed_prompts(rollout: Rollout) -> torch.Tensor:
    """Indices of prompts whose samples' rewards are not all equal: (P',) long. For 0/1 rewards these are the
    groups neither all right nor all wrong (0 < r̂ < 1); a graded reward (e.g. 0.9 · correct + 0.1 · format) can
    have a group all at 0.1, which carries no advantage either."""
    grouped = rollout.grouped(rollout.rewards)  # (P, K)
    return torch.nonzero(grouped.amax(-1) > grouped.amin(-1)).flatten()


def minibatch_rows(prompts: torch.Tensor, num_samples: int, prompts_per_minibatch: int) -> list[torch.Tensor]:
    """Splits the selected prompts, in order, into mini-batches of whole groups; returns each one's row indices."""
    check(prompts_per_minibatch >= 1, "method.prompts_per_minibatch", f"must be >= 1, got {prompts_per_minibatch}")
    offsets = torch.arange(num_samples, device=prompts.device)
    return [(chunk[:, None] * num_samples + offsets).flatten()
            for chunk in torch.split(prompts, prompts_per_minibatch) if chunk.numel()]


def sampling_generator(device, seed: int, epoch: int, batch_idx: int, rank: int) -> torch.Generator:
    """A generator seeded by the position in training, so a resumed run draws the same rollouts."""
    return torch.Generator(device=device).manual_seed(
        (seed * 1_000_003 + epoch * 7_919_993 + batch_idx * 7919 + rank * 104_729) % 2**63)
