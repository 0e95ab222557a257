"""Pairwise PPO, the RL half of Pairwise-RL (Xu et al., "A Unified Pairwise Framework for RLHF", arXiv 2504.04950).

Each training batch of prompts is one rollout step: the policy (π_old for the step) samples `ppo.num_samples`
responses per prompt; the frozen generative judge scores each response y against the prompt's anchor y* as the
symmetrised win probability r_pair = P̄(y ≻ y* | q) (both orders in one batch); the score (centred by default)
lands on the last token of a per-token KL penalty to π_ref; a critic that reads the anchor gives GAE advantages;
then `ppo.epochs` passes of clipped PPO over shuffled mini-batches update the policy and the critic.

The anchor y* is, by default, π_ref's greedy response to the prompt, generated the first time the prompt is drawn
and kept (in the checkpoint too, gathered from every DDP process) for the rest of the run; a sampled anchor
(`anchor_temperature > 0`) is drawn with a generator seeded by the prompt's text, so it is the same on every process
and after a resume. `anchor: ground_truth` uses the data's reference response instead (with an exact-answer task a
correct response can then at best tie: spec §7).
"""
from __future__ import annotations

import hashlib

import torch
import torch.distributed as dist

from lightning_modules import online
from lightning_modules import ppo as ppo_lib
from lightning_modules.base import PostTrainModule, frozen_copy
from posttrain.generation import generate
from posttrain.losses.ppo import NORMALIZATIONS, PAIRWISE_TRANSFORMS, normalize_scores, pairwise_score
from posttrain.models.value_head import ValueModel
from posttrain.processors import TextProcessor
from posttrain.rewards.judges import PAIRWISE_TEMPLATE, PAIRWISE_VERDICTS, PairwiseJudge, verdict_token_ids
from posttrain.rollouts import collect_rollout, response_tokens
from posttrain.utils.config import ConfigError, check, check_choice, check_keys

ANCHORS = ("reference_sample", "ground_truth")
CRITIC_TEMPLATE = "{prompt}|B:{anchor}|A:"  # the judge's fields, anchor first so the response can follow
JUDGE_KEYS = ("template", "verdicts")


def judge_settings(judge: dict | None, tokenizer) -> dict:
    """`method.judge` checked against the tokenizer, defaults filled in: {template, verdicts}."""
    judge = check_keys(judge, JUDGE_KEYS, "method.judge")
    judge = {k: v for k, v in judge.items() if v is not None}  # null: a reward_model method without the key
    cfg = {"template": PAIRWISE_TEMPLATE, "verdicts": list(PAIRWISE_VERDICTS), **judge}
    for field in ("{prompt}", "{a}", "{b}"):
        check(field in cfg["template"], "method.judge.template", f"must contain {field}, got {cfg['template']!r}")
    check(len(cfg["verdicts"]) == 2, "method.judge.verdicts",
          f"need exactly two (A better, B better), got {list(cfg['verdicts'])}")
    try:
        verdict_token_ids(tokenizer, cfg["verdicts"])
    except ConfigError as error:
        raise ConfigError(f"method.judge.verdicts: {error}") from None
    return cfg


class PairwiseRLModule(PostTrainModule):
    """Args:
        reward_model: the trained generative judge LM (from the run's `reward_model` stage); frozen here.
        reward: the gold `reward(example, completion) -> Verdict` (`conf/reward/`), logged as the rollouts' and the
            anchors' accuracy and never trained on.
        anchor: "reference_sample" (π_ref's response, cached per prompt) or "ground_truth" (the data's response).
        anchor_temperature: 0 = π_ref's greedy response; > 0 = one sample at this temperature.
        reward_transform: "centered" (r_pair − ½), "raw" (r_pair) or "logit" (log-odds).
        reward_normalization: "none" (the judge's calibrated probability as is) or "batch" (standardised over the
            rollout batch after the transform, as BT-PPO's default: the ablation that gives both the same scale).
        critic_anchor: the critic reads `critic_template` (q and y*) before the response; false = the policy's own
            row (the ablation of spec §6).
        critic_template: the critic's context, with {prompt} and {anchor}.
        critic_init: "reward_model" (the judge's weights, spec §2.3) or "policy"; the value head starts at zero.
        judge: {template, verdicts} of the judge's prompt, as the reward model was trained.
        ppo: the PPO settings (`lightning_modules.ppo.PPO_DEFAULTS`).
        generation: {temperature, max_new_tokens} of the rollouts (and of sampled anchors' length).
        seed: seeds rollouts and mini-batch order by position in training, so a resumed run draws the same.
    """

    record_start_evaluation = True

    def __init__(self, model, tokenizer, reward_model=None, reward=None, anchor: str = "reference_sample",
                 anchor_temperature: float = 0.0, reward_transform: str = "centered",
                 reward_normalization: str = "none", critic_anchor: bool = True,
                 critic_template: str = CRITIC_TEMPLATE, critic_init: str = "reward_model", judge: dict | None = None,
                 ppo: dict | None = None, generation: dict | None = None, seed: int = 0, optimizer=None,
                 scheduler=None, evaluator=None):
        super().__init__(model, tokenizer, optimizer, scheduler, evaluator)
        check(reward_model is not None, "reward_model",
              "pairwise PPO needs a judge: set the run's reward_model stage (e.g. method pairwise_rm)")
        check(not isinstance(reward_model, ValueModel), "reward_model",
              "pairwise PPO needs a generative judge LM, got a scalar ValueModel (use experiment=bt_ppo)")
        check(reward is not None, "method.reward", "pairwise PPO needs the gold reward its accuracy is logged with")
        check_choice(anchor, ANCHORS, "method.anchor")
        check(anchor_temperature >= 0, "method.anchor_temperature", f"must be >= 0, got {anchor_temperature}")
        check_choice(reward_transform, PAIRWISE_TRANSFORMS, "method.reward_transform")
        check_choice(reward_normalization, NORMALIZATIONS, "method.reward_normalization")
        for field in ("{prompt}", "{anchor}"):
            check(field in critic_template, "method.critic_template", f"must contain {field}, got {critic_template!r}")
        self.judge_cfg = judge_settings(judge, tokenizer)
        self.save_hyperparameters(ignore=["model", "tokenizer", "reward_model", "reward", "evaluator"])
        self.ppo, self.generation = ppo_lib.settings(ppo, generation)
        self.rollout_settings = ppo_lib.rollout_settings(self.ppo, self.generation)
        self.reward = reward
        self.anchor, self.anchor_temperature, self.reward_transform = anchor, anchor_temperature, reward_transform
        self.reward_normalization = reward_normalization
        self.critic_anchor, self.critic_template, self.seed = critic_anchor, critic_template, seed
        self.automatic_optimization = False
        self.add_frozen("reward_model", reward_model, rebuildable=True)
        self.add_frozen("reference", frozen_copy(model), rebuildable=True)
        self.critic = ppo_lib.build_critic(ppo_lib.critic_source(critic_init, model, reward_model))
        self.anchors: dict[str, str] = {}  # prompt -> anchor response, kept in the checkpoint
        # the encoder the reward-model stage trained the judge with (PairwiseRMModule's), not the policy data's
        encoder = TextProcessor(tokenizer, max_length=tokenizer.model_max_length)
        self.judge = PairwiseJudge(self.reward_model, encoder, **self.judge_cfg)

    def setup(self, stage: str) -> None:
        super().setup(stage)
        self.processor = online.data_processor(self.trainer)

    def parameter_groups(self) -> list[dict]:
        return ppo_lib.parameter_groups(self.model, self.critic, self.ppo["critic_lr"])

    def configure_optimizers(self):
        ppo_lib.check_precision(self.trainer, self.ppo["grad_clip"])
        return super().configure_optimizers()

    def schedule_period(self) -> int:
        return ppo_lib.schedule_period(self.trainer, self.ppo)

    def training_step(self, batch, batch_idx):
        generator = online.step_generator(self, self.seed, batch_idx)
        rollout = collect_rollout(self.model, batch, self.processor, self.reward, self.rollout_settings, generator)
        k = rollout.num_samples
        prompts = [e["prompt"] for e in batch["examples"] for _ in range(k)]
        anchors = [a for a in self.anchor_responses(batch) for _ in range(k)]
        responses = self.tokenizer.batch_decode(response_tokens(rollout.labels), skip_special_tokens=True)
        win = self.win_probability(prompts, responses, anchors)  # (R,)
        scores = normalize_scores(pairwise_score(win, self.reward_transform), self.reward_normalization)  # (R,)
        inputs = ppo_lib.critic_inputs(rollout, self.critic_prefixes(prompts, anchors), self.tokenizer.pad_token_id)
        metrics = ppo_lib.train_on_rollout(self, self.critic, self.reference, rollout, scores, inputs, self.ppo,
                                           self.generation["temperature"],
                                           online.step_generator(self, self.seed + 1, batch_idx))
        anchor_correct = [self.reward(e, a).correct for e, a in zip(batch["examples"], anchors[::k])]
        metrics = {"reward": win.mean(), "win_rate": (win > 0.5).float().mean(), **metrics,
                   **ppo_lib.reward_gold_metrics(win, rollout.rewards),
                   "anchor_accuracy": sum(anchor_correct) / len(anchor_correct)}
        online.log_gathered(self, "train", online.weighted(metrics, rollout.num_prompts), rollout.num_prompts)

    @torch.no_grad()
    def win_probability(self, prompts: list[str], responses: list[str], anchors: list[str]) -> torch.Tensor:
        """P̄(y ≻ y* | q) by the frozen judge, both orders batched, in mini-batch chunks: (R,)."""
        size = self.ppo["minibatch_size"]
        return torch.cat([self.judge.symmetric(prompts[i:i + size], responses[i:i + size], anchors[i:i + size])
                          for i in range(0, len(prompts), size)])

    def anchor_responses(self, batch: dict) -> list[str]:
        """y* of each prompt of the batch: the data's response, or π_ref's (generated once per prompt, cached)."""
        examples = batch["examples"]
        if self.anchor == "ground_truth":
            return [e["response"] for e in examples]
        missing = [i for i, e in enumerate(examples) if e["prompt"] not in self.anchors]
        if missing:
            for i, text in zip(missing, self.generate_anchors(batch, missing)):
                self.anchors[examples[i]["prompt"]] = text
        return [self.anchors[e["prompt"]] for e in examples]

    @torch.no_grad()
    def generate_anchors(self, batch: dict, rows: list[int]) -> list[str]:
        """π_ref's responses to the batch's `rows`: greedy ones in one batch; sampled ones one prompt at a time, each
        unpadded and from a generator seeded by (seed, the prompt's text), so every DDP process, every batch order and
        a resumed run draw the same anchor for a prompt."""
        def run(ids, mask, generator):
            out = generate(self.reference, ids, mask, max_new_tokens=self.generation["max_new_tokens"],
                           temperature=self.anchor_temperature, eos_token_id=self.tokenizer.eos_token_id,
                           pad_token_id=self.tokenizer.pad_token_id, generator=generator)
            return self.tokenizer.batch_decode(out.token_lists(), skip_special_tokens=True)

        ids, mask = batch["prompt_input_ids"], batch["prompt_attention_mask"]  # (B, P) each, left-padded
        if self.anchor_temperature == 0:
            index = torch.tensor(rows, device=self.device)
            return run(ids[index], mask[index], None)
        texts = []
        for i in rows:
            real = ids[i][mask[i].bool()][None]  # (1, P_i)
            texts += run(real, torch.ones_like(real), self.anchor_generator(batch["examples"][i]["prompt"]))
        return texts

    def anchor_generator(self, prompt: str) -> torch.Generator:
        # a stable digest, not hash(): Python salts str hashes per process
        digest = hashlib.sha256(f"{self.seed}/anchor/{prompt}".encode()).digest()
        return torch.Generator(device=self.device).manual_seed(int.from_bytes(digest[:8], "little") % 2**63)

    def critic_prefixes(self, prompts: list[str], anchors: list[str]) -> list[list[int]] | None:
        """`[bos] critic_template(q, y*)` per rollout row, or None: the critic reads the policy's own rows."""
        if not self.critic_anchor:
            return None
        # the judge's bare encoding, which the default critic (the judge's weights) was trained to read; the policy
        # data's prompt_template would wrap the judge-style context in text the judge never saw
        encoder = self.judge.encoder
        return [encoder.prompt(self.critic_template.format(prompt=q, anchor=a)) for q, a in zip(prompts, anchors)]

    # ---- checkpoint -------------------------------------------------------------------------------------------
    def extra_state(self) -> dict:
        return {"anchors": self.all_anchors()}

    def all_anchors(self) -> dict[str, str]:
        """Every process's anchors: each caches those of the prompts it drew, and rank 0 alone writes the checkpoint
        (Lightning builds the checkpoint on every rank, so the gather is collective)."""
        if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
            return dict(self.anchors)
        parts: list[dict | None] = [None] * dist.get_world_size()
        dist.all_gather_object(parts, self.anchors)
        return {prompt: anchor for part in parts for prompt, anchor in part.items()}

    def load_extra_state(self, state: dict) -> None:
        self.anchors = dict(state.get("anchors", {}))
