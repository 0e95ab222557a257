"""Lightning glue the PPO methods (pairwise PPO, BT-PPO) share as functions: settings, the critic and its inputs,
one optimizer with a policy and a critic parameter group, and the PPO update of one rollout batch. Each method's
`training_step` (rollout -> sequence scores -> critic inputs -> `train_on_rollout`) reads in its own module.

The frozen networks (π_ref as `module.reference`, the reward model as `module.reward_model`) are the module's
rebuildable frozen copies (`PostTrainModule.add_frozen`): outside the optimizer and DDP's gradient sync, and left
out of checkpoints, since a resumed run rebuilds them from the same cached stages.
"""
from __future__ import annotations

import copy

import torch
from torch import nn

from lightning_modules import online
from lightning_modules.online import generation_settings
from posttrain.losses.ppo import gae, kl_penalized_rewards, ppo_loss, whiten
from posttrain.models.forward import IGNORE_INDEX
from posttrain.models.value_head import ValueModel, freeze_unused_lm_head
from posttrain.processors import pack
from posttrain.rollouts import Rollout, RolloutSettings, policy_logprobs, response_tokens
from posttrain.utils import distributed
from posttrain.utils.config import check, check_choice, with_defaults

PPO_DEFAULTS = {
    "num_samples": 4,           # responses per prompt per rollout step
    "minibatch_size": 64,       # rollout rows per optimizer step
    "epochs": 2,                # passes over each rollout batch
    "clip_eps": 0.2,            # ratio clip ε
    "value_clip": 0.2,          # ε_V of the value clip; null: no clip
    "value_coef": 0.5,          # c_V
    "kl_coef": 0.05,            # β_KL of the per-token penalty
    "gamma": 1.0,
    "lam": 0.95,
    "whiten_advantages": True,  # advantages standardised over the rollout batch's response tokens
    "grad_clip": 1.0,           # gradient-norm clip, per network (policy, critic); null: none
    "critic_lr": 1.0e-4,        # learning rate of the critic's parameter group
}
CRITIC_INITS = ("policy", "reward_model")


def settings(ppo: dict | None, generation: dict | None) -> tuple[dict, dict]:
    """The checked PPO and rollout settings (`method.ppo`, `method.generation`), defaults filled in."""
    cfg = with_defaults(ppo, PPO_DEFAULTS, "method.ppo")
    for key in ("num_samples", "minibatch_size", "epochs"):
        check(int(cfg[key]) >= 1, f"method.ppo.{key}", f"must be >= 1, got {cfg[key]}")
    check(cfg["clip_eps"] > 0, "method.ppo.clip_eps", f"must be > 0, got {cfg['clip_eps']}")
    check(cfg["value_clip"] is None or cfg["value_clip"] > 0, "method.ppo.value_clip",
          f"must be > 0 or null, got {cfg['value_clip']}")
    check(cfg["value_coef"] > 0, "method.ppo.value_coef", f"must be > 0, got {cfg['value_coef']}")
    check(cfg["kl_coef"] >= 0, "method.ppo.kl_coef", f"must be >= 0, got {cfg['kl_coef']}")
    check(0 < cfg["gamma"] <= 1, "method.ppo.gamma", f"must be in (0, 1], got {cfg['gamma']}")
    check(0 <= cfg["lam"] <= 1, "method.ppo.lam", f"must be in [0, 1], got {cfg['lam']}")
    check(cfg["grad_clip"] is None or cfg["grad_clip"] > 0, "method.ppo.grad_clip",
          f"must be > 0 or null, got {cfg['grad_clip']}")
    check(cfg["critic_lr"] > 0, "method.ppo.critic_lr", f"must be > 0, got {cfg['critic_lr']}")
    gen = generation_settings(generation)
    return cfg, gen


def build_critic(source: nn.Module) -> ValueModel:
    """V_ψ on a copy of `source`'s backbone (a causal LM, or a ValueModel whose backbone is taken) with a zero
    head, so its first values are 0. The lm-head is unused by a value model: it is frozen (unless tied to the input
    embeddings), or DDP would wait for its gradient."""
    backbone = source.backbone if isinstance(source, ValueModel) else source
    critic = ValueModel(copy.deepcopy(backbone).train().requires_grad_(True))
    freeze_unused_lm_head(critic.backbone)
    return critic


def critic_source(init: str, model: nn.Module, reward_model: nn.Module) -> nn.Module:
    check_choice(init, CRITIC_INITS, "method.critic_init")
    return model if init == "policy" else reward_model


def check_precision(trainer, grad_clip: float | None) -> None:
    """Rejects a loss-scaling precision (16-mixed) with `ppo.grad_clip`: `update` clips right after
    `manual_backward`, where the gradients are still multiplied by the scaler's factor, so the clip would act on the
    scaled norm."""
    scaler = getattr(trainer.precision_plugin, "scaler", None)
    check(scaler is None or not grad_clip, "trainer.precision",
          "16-mixed scales the loss, and PPO's per-network clip (method.ppo.grad_clip) would clip the scaled "
          "gradients; use bf16-mixed or 32-true, or method.ppo.grad_clip=null")


def parameter_groups(model: nn.Module, critic: nn.Module, critic_lr: float) -> list[dict]:
    """Two parameter groups of one optimizer: the policy at `optimizer.lr` and the critic at `ppo.critic_lr`; one
    optimizer step per mini-batch updates both (so `global_step` counts PPO updates)."""
    policy = [p for p in model.parameters() if p.requires_grad]
    values = [p for p in critic.parameters() if p.requires_grad]
    return [{"params": policy, "name": "policy"}, {"params": values, "name": "critic", "lr": critic_lr}]


def updates_per_batch(trainer, ppo: dict) -> int:
    rows = online.batch_size(trainer) * ppo["num_samples"]
    return ppo["epochs"] * -(-rows // ppo["minibatch_size"])


def schedule_period(trainer, ppo: dict) -> int:
    return int(trainer.estimated_stepping_batches) * updates_per_batch(trainer, ppo)


def rollout_settings(ppo: dict, generation: dict) -> RolloutSettings:
    """`ppo.num_samples` responses per prompt at the rollout temperature; no dynamic sampling."""
    return RolloutSettings(num_samples=ppo["num_samples"], temperature=generation["temperature"],
                           max_new_tokens=generation["max_new_tokens"])


def critic_inputs(rollout: Rollout, prefixes: list[list[int]] | None, pad_id: int) -> dict:
    """The critic's rows: the rollout's own rows, or, with `prefixes` (one token list per rollout row, e.g.
    `[bos] q |B: y* |A:`), each prefix followed by the row's response tokens.

    `offsets` (R,) maps a rollout label position j (the state before token j + 1) to the critic row's position
    j + offset of the same state: offset = critic prefix length − rollout prompt length.
    """
    if prefixes is None:
        zeros = torch.zeros(rollout.input_ids.shape[0], dtype=torch.long, device=rollout.input_ids.device)
        return {"input_ids": rollout.input_ids, "attention_mask": rollout.attention_mask, "offsets": zeros}
    responses = response_tokens(rollout.labels)
    width = max(len(p) + len(r) for p, r in zip(prefixes, responses))
    packed = pack(prefixes, responses, pad_id, max_length=width)  # no truncation: every row fits
    prompt_lengths = (rollout.labels != IGNORE_INDEX).int().argmax(-1)  # (R,) first response token
    device = rollout.input_ids.device
    return {"input_ids": packed["input_ids"].to(device), "attention_mask": packed["attention_mask"].to(device),
            "offsets": packed["prompt_lengths"].to(device) - prompt_lengths}


def critic_rows(inputs: dict, index: torch.Tensor) -> dict:
    """The selected critic rows, trimmed to their longest sequence."""
    width = int(inputs["attention_mask"][index].sum(-1).max())
    return {"input_ids": inputs["input_ids"][index, :width], "attention_mask": inputs["attention_mask"][index, :width],
            "offsets": inputs["offsets"][index]}


def critic_values(critic: nn.Module, rows: dict, mask: torch.Tensor) -> torch.Tensor:
    """V_ψ at the rollout's label positions: values (B, Tc) of the critic rows gathered at j + offset, 0 off the
    response. mask (B, T) -> (B, T)."""
    values = critic(rows["input_ids"], rows["attention_mask"])  # (B, Tc)
    positions = torch.arange(mask.shape[1], device=mask.device)[None] + rows["offsets"][:, None]  # (B, T)
    positions = positions.clamp(0, values.shape[1] - 1)
    return values.gather(1, positions) * mask  # (B, T)


def chunks(total: int, size: int, device) -> list[torch.Tensor]:
    return list(torch.arange(total, device=device).split(size))


@torch.no_grad()
def rollout_statistics(reference: nn.Module, critic: nn.Module, rollout: Rollout, inputs: dict, minibatch_size: int,
                       temperature: float) -> tuple[torch.Tensor, torch.Tensor]:
    """log π_ref of the sampled tokens and the critic's rollout-time values: (R, T-1) each, in mini-batch chunks."""
    ref_parts, value_parts = [], []
    full = {"input_ids": rollout.input_ids, "attention_mask": rollout.attention_mask, "labels": rollout.labels}
    for index in chunks(rollout.input_ids.shape[0], minibatch_size, rollout.input_ids.device):
        ref_parts.append(policy_logprobs(reference, {k: v[index] for k, v in full.items()}, temperature))  # (b, T-1)
        rows = {k: v[index] for k, v in inputs.items()}
        value_parts.append(critic_values(critic, rows, rollout.mask[index]))  # (b, T-1)
    return torch.cat(ref_parts), torch.cat(value_parts)


def update(module, loss: torch.Tensor, clip: float | None) -> None:
    """One optimizer step of both networks (manual optimisation of `module`); each parameter group's gradient
    norm is clipped on its own, so the critic's (often larger) gradient never shrinks the policy's step."""
    optimizer = module.optimizers()
    optimizer.zero_grad()
    module.manual_backward(loss)
    if clip:
        for group in optimizer.param_groups:
            torch.nn.utils.clip_grad_norm_(group["params"], clip)
    optimizer.step()
    module.lr_schedulers().step()


def train_on_rollout(module, critic: nn.Module, reference: nn.Module, rollout: Rollout, scores: torch.Tensor,
                     inputs: dict, cfg: dict, temperature: float, generator: torch.Generator) -> dict:
    """PPO of `module.model` and `critic` on one rollout batch: KL-penalised token rewards from `scores` (R,) against
    the frozen `reference`, GAE on the critic's values, then `cfg["epochs"]` passes of mini-batches shuffled by
    `generator`, one optimizer step of `module` each. `cfg` is the checked `method.ppo` (`settings`). Returns the
    step's metrics."""
    mask = rollout.mask
    ref_logp, values_old = rollout_statistics(reference, critic, rollout, inputs, cfg["minibatch_size"],
                                              temperature)  # (R, T-1) each
    rewards = kl_penalized_rewards(rollout.old_logps, ref_logp, scores, mask, cfg["kl_coef"])  # (R, T-1)
    advantages, returns = gae(rewards, values_old, mask, cfg["gamma"], cfg["lam"])  # (R, T-1) each
    if cfg["whiten_advantages"]:
        advantages = whiten(advantages, mask)
    parts, minibatches = [], []
    for _ in range(cfg["epochs"]):
        order = torch.randperm(rollout.input_ids.shape[0], generator=generator, device=generator.device)
        minibatches += list(order.split(cfg["minibatch_size"]))
    # every backward is a collective under DDP/FSDP: processes with fewer rows pad with zero-weight updates
    # (`online.train_on_prompts`); with the equal per-process batches of a distributed sampler they never need to
    updates = distributed.agreed_max(len(minibatches), rollout.input_ids.device)
    for step in range(updates):
        index = minibatches[min(step, len(minibatches) - 1)]
        rows = rollout.rows(index)
        steps = rows["mask"].shape[1]
        logp = policy_logprobs(module.model, rows, temperature)  # (b, steps)
        values = critic_values(critic, critic_rows(inputs, index), rows["mask"])  # (b, steps)
        loss, metrics = ppo_loss(logp, rows["old_logps"], advantages[index, :steps], values,
                                 values_old[index, :steps], returns[index, :steps], rows["mask"],
                                 clip_eps=cfg["clip_eps"], value_clip=cfg["value_clip"],
                                 value_coef=cfg["value_coef"])
        if step >= len(minibatches):
            update(module, 0.0 * loss, cfg["grad_clip"])  # a zero gradient through both networks
            continue
        update(module, loss, cfg["grad_clip"])
        parts.append({"loss": loss.detach(), **metrics})
    kl = ((rollout.old_logps - ref_logp) * mask).sum(-1)  # (R,) sequence KL estimate
    return {**{k: torch.stack([p[k] for p in parts]).mean() for k in parts[0]},
            "kl": kl.mean(), "score": scores.mean(), "updates": float(updates), **rollout_metrics(rollout)}


def rollout_metrics(rollout: Rollout) -> dict:
    """The verifier's gold accuracy of the rollouts (never a training signal here) and their shape."""
    return {"accuracy": rollout.rewards.mean(), "response_length": rollout.mask.sum(-1).float().mean(),
            "truncated": (~rollout.finished).float().mean(), "unparsed": (~rollout.parsed).float().mean()}


def reward_gold_metrics(rewards: torch.Tensor, correct: torch.Tensor) -> dict:
    """How the RM reward of the rollouts agrees with their gold correctness: the mean reward of the correct ones
    minus that of the wrong ones, in units of the batch's reward std so that RMs of different scales compare
    (`reward_gap`; logged only when the batch has both). A gap that shrinks while the RM reward rises is reward
    hacking. rewards, correct: (R,)."""
    right = correct > 0.5  # (R,)
    if right.all() or not right.any():
        return {}
    spread = rewards.std(correction=0).clamp(min=1e-6)
    return {"reward_gap": (rewards[right].mean() - rewards[~right].mean()) / spread}
