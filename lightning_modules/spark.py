"""SPARK: Synergistic Policy And Reward Co-Evolving (Liu et al., arXiv 2509.22624).

GRPO with verifiable rewards whose rollouts are recycled, on-policy, into verifiable judge and reflection tasks
for the same model, after the released code's two periods per batch:

1. infer period: K samples per solve prompt, verified, one GRPO update per mini-batch (as plain GRPO);
2. recycle: the same rollouts and verifier results become pointwise ("is â correct? Y/N"), pairwise ("which of
   (A)/(B) is correct?") and reflection ("â is wrong, fix it" -> the ground truth) examples
   (`posttrain.rewards.recycling.recycle`), appended to a cache;
3. reward period: once the cache holds `reward_batch_size` examples, they are popped and answered K times each by
   the *current* model, scored by exact match with their labels (reflection: the task's verifier), and trained on
   with the same GRPO loss, optimizer, π_ref and KL coefficient.

The loss is `posttrain.losses.grpo.grpo_loss` in both periods. `recycle: false` skips steps 2-3: plain policy-only
GRPO with the same evaluation (the control of `experiment=spark`).

Evaluation (each validation, on the first `judge_eval.size` problems of `judge_eval.split`), besides the solve
accuracies every module logs, treats the model as its own judge of its own held-out answers (`judge_eval.samples`
samples per problem at the evaluation temperature, fixed noise): pointwise balanced accuracy and ECE of P(Y), the
fraction judged correct, pairwise accuracy and order agreement (the same answer wins in both orders; not
`posttrain.metrics`' position_consistency) over (correct, wrong) pairs in both orders,
the repair rate of one reflection on each wrong answer, and test-time self-reflection accuracy after 0..rounds
rounds of judge-then-revise on the greedy answers.
"""
from __future__ import annotations

import math
import random
import warnings

import torch
from torch import nn
from torchmetrics.aggregation import CatMetric

from lightning_modules import online
from lightning_modules.base import PostTrainModule, frozen_copy
from lightning_modules.grpo import GRPOSettings, grpo_update
from posttrain.metrics import expected_calibration_error
from posttrain.models import sharding
from posttrain.processors import left_pad
from posttrain.rewards import recycling
from posttrain.rewards.self_judge import SelfJudge, balanced_accuracy, self_reflection
from posttrain.rollouts import collect_rollout, response_tokens, rollout, sampling_generator
from posttrain.utils.config import check, with_defaults

JUDGE_EVAL_DEFAULTS = {"split": "val", "size": 200, "samples": 4, "rounds": 3}
REWARD_STREAM = 1_000_003  # offsets the reward period's sampling seed from the infer period's


def judge_summary(values: dict[str, torch.Tensor]) -> dict[str, float]:
    """The judge evaluation's results from the per-item values of the judge metrics (those with data)."""
    results = {}
    for prefix, name in (("", "judge"), ("ref_", "judge_ref")):  # own answers / the start model's answers
        if prefix + "p_yes" in values:
            p_yes, labels = values[prefix + "p_yes"], values[prefix + "yes_label"] > 0.5
            results[f"{name}_balanced_accuracy"] = balanced_accuracy(p_yes >= 0.5, labels)
            results[f"{name}_ece"] = float(expected_calibration_error(p_yes, labels))
            results[f"{name}_yes_rate"] = float((p_yes >= 0.5).float().mean())
            results[f"{name}_answers_correct"] = float(labels.float().mean())
        if prefix + "pair_correct" in values:
            pair = "pair" if not prefix else "pair_ref"
            results[f"{pair}_accuracy"] = float(values[prefix + "pair_correct"].mean())
            results[f"{pair}_order_agreement"] = float(values[prefix + "pair_order_agreement"].mean())
    if "repaired" in values:
        results["repair_rate"] = float(values["repaired"].mean())
    rounds = sorted((int(k.rsplit("_", 1)[1]), v) for k, v in values.items() if k.startswith("tts_round_"))
    for k, v in rounds:
        results[f"tts_round_{k}"] = float(v.mean())
    if rounds:
        results["tts_gain"] = results[f"tts_round_{rounds[-1][0]}"] - results["tts_round_0"]
    return results


def recyclable(rollout, rows: int, truncated_is_wrong: bool) -> list[bool]:
    """Which of the first `rows` rollouts may be recycled: parsed ones, and with `truncated_is_wrong` only those that
    ended with eos, because their reward was zeroed while their text may hold a correct answer, so recycling them would
    label a correct answer wrong."""
    usable = rollout.parsed[:rows]
    if truncated_is_wrong:
        usable = usable & rollout.finished[:rows]
    return usable.tolist()


class SparkModule(PostTrainModule):
    """Args:
        reward: the solve task's `reward(example, completion) -> Verdict`; recycling needs one whose extracted answer
            is the whole stripped completion (`answer_is_completion`, e.g. the arithmetic verifier). The reward
            period scores recycled examples with `recycling.RecycledReward` over it.
        num_samples: K, answers sampled per prompt in both periods, >= 2.
        recycle: build and train on the judge / reflection tasks; false = policy-only GRPO.
        pairwise_prob: P(pairwise | mixed group) (paper 0.7; the rest are pointwise of a random class).
        judge_fraction, reflect_fraction: at most this fraction of the solve batch's prompts become judge
            (pointwise + pairwise) and reflection examples per batch (paper 32 + 32 of 64: 0.5, 0.5).
        reward_batch_size: recycled prompts per reward period (null = data.batch_size, as the paper's 64 of 64).
        max_staleness: cached examples older than this many solve batches are dropped unused (on-policy data).
        balance_pointwise: not in the paper: as many "Y" as "N" recycled pointwise examples per batch
            (`recycling.recycle`).
        clip_eps, scale_rewards, kl_coef, aggregation, filter_groups, prompts_per_minibatch, normalizer, grad_clip,
            generation, truncated_is_wrong, max_generation_batches, seed: as for GRPO, shared by both periods
            (paper: k3 KL to π_ref with β = 0.001, seq-mean, no group filter).
        judge_eval: {split, size, samples, rounds} of the self-judging evaluation.
    """

    record_start_evaluation = True
    shardable = True  # the policy's training forwards are padded to the same count on every process

    def __init__(self, model, tokenizer, reward, num_samples: int = 8, recycle: bool = True, pairwise_prob: float = 0.7,
                 judge_fraction: float = 0.5, reflect_fraction: float = 0.5, reward_batch_size: int | None = None,
                 max_staleness: int = 1, balance_pointwise: bool = False, clip_eps: float = 0.2,
                 scale_rewards: bool = True, kl_coef: float = 0.001,
                 aggregation: str = "seq-mean", filter_groups: bool = False, prompts_per_minibatch: int = 16,
                 normalizer: float | None = None, grad_clip: float | None = 1.0, generation: dict | None = None,
                 truncated_is_wrong: bool = True, max_generation_batches: int = 1, seed: int = 0,
                 judge_eval: dict | None = None, optimizer=None, scheduler=None, evaluator=None):
        super().__init__(model, tokenizer, optimizer, scheduler, evaluator)
        check(0 <= pairwise_prob <= 1, "method.pairwise_prob", f"must be in [0, 1], got {pairwise_prob}")
        for key, value in (("judge_fraction", judge_fraction), ("reflect_fraction", reflect_fraction)):
            check(0 <= value <= 1, f"method.{key}", f"must be in [0, 1], got {value}")
        check(reward_batch_size is None or reward_batch_size >= 1, "method.reward_batch_size",
              f"must be >= 1 or null, got {reward_batch_size}")
        check(max_staleness >= 0, "method.max_staleness", f"must be >= 0, got {max_staleness}")
        self.judge_eval = with_defaults(judge_eval, JUDGE_EVAL_DEFAULTS, "method.judge_eval")
        for key in ("size", "samples", "rounds"):
            check(self.judge_eval[key] >= 0, f"method.judge_eval.{key}", f"must be >= 0, got {self.judge_eval[key]}")
        if recycle:
            # recycling and the judge evaluation put the stripped completion where an answer goes and score verdicts
            # by exact match, which is only right for rewards whose answer is the whole completion
            check(getattr(reward, "answer_is_completion", False), "method.reward",
                  f"SPARK needs a reward whose answer is the whole completion (answer_is_completion = True, e.g. "
                  f"ArithmeticVerifier), got {type(reward).__name__}")
        self.save_hyperparameters(ignore=["model", "tokenizer", "reward", "evaluator"])
        self.reward = reward
        self.recycle, self.pairwise_prob = recycle, pairwise_prob
        self.judge_fraction, self.reflect_fraction = judge_fraction, reflect_fraction
        self.reward_batch_size_cfg, self.max_staleness = reward_batch_size, max_staleness
        self.balance_pointwise = balance_pointwise
        self.loss_settings = GRPOSettings(clip_eps, scale_rewards, kl_coef, aggregation, filter_groups)
        self.settings = online.online_settings(num_samples, prompts_per_minibatch, normalizer, grad_clip, generation,
                                               truncated_is_wrong, max_generation_batches, seed)
        self.reference = self.add_frozen("reference", frozen_copy(model), rebuildable=True) if kl_coef > 0 else None
        self.automatic_optimization = False  # several optimizer steps per rollout batch
        self.cache: list[dict] = []  # recycled examples awaiting a reward period, oldest first (in the checkpoint)
        self.batches_seen = 0  # solve batches trained on (the cache's clock)
        judged = ["p_yes", "yes_label", "pair_correct", "pair_order_agreement"]
        names = [*judged, *(f"ref_{n}" for n in judged), "repaired",
                 *(f"tts_round_{k}" for k in range(self.judge_eval["rounds"] + 1))]
        self.judge_metrics = nn.ModuleDict({n: CatMetric() for n in names})  # per-item values of one validation
        self.judge_results: dict = {}

    def setup(self, stage: str) -> None:
        super().setup(stage)
        self.processor = online.data_processor(self.trainer)
        splits = list(self.eval_splits())
        check(self.judge_eval["split"] in splits, "method.judge_eval.split",
              f"must be one of the evaluation splits {splits}, got {self.judge_eval['split']!r}")

    # ---- training -----------------------------------------------------------------------------------------------
    def on_train_start(self) -> None:
        self.training_prompts = online.TrainingPrompts.of(self.trainer, self.device)
        if not self.recycle:
            return
        batch = online.batch_size(self.trainer)
        per_batch = math.floor(self.judge_fraction * batch) + math.floor(self.reflect_fraction * batch)
        capacity = (self.max_staleness + 1) * per_batch
        check(self.reward_batch_size <= capacity, "method.reward_batch_size",
              f"{self.reward_batch_size} is more than the cache can ever hold ((max_staleness + 1) * "
              f"(floor(judge_fraction * B) + floor(reflect_fraction * B)) = {capacity} with B = {batch}), so no "
              f"reward period would run; lower it, raise the fractions or max_staleness, or set method.recycle=false")

    @property
    def reward_batch_size(self) -> int:
        return self.reward_batch_size_cfg or online.batch_size(self.trainer)

    def training_step(self, batch, batch_idx):
        generator = online.step_generator(self, self.settings.seed, batch_idx)
        with sharding.gathered(self.model):  # FSDP: generation on whole parameters (posttrain.models.sharding)
            samples = rollout(self.model, batch, self.processor, self.reward, self.settings.rollout, generator,
                              self.training_prompts)  # infer period: K samples per solve prompt
        grpo_update(self, samples, self.loss_settings, self.settings, self.reference, "train")
        self.batches_seen += 1
        if not self.recycle:
            return
        examples = batch["examples"]
        rows = len(examples) * samples.num_samples  # the step's own batch (dynamic sampling appends after it)
        rng = random.Random(f"{self.settings.seed}/{self.current_epoch}/{batch_idx}/{self.global_rank}")
        completions = self.tokenizer.batch_decode(response_tokens(samples.labels[:rows]), skip_special_tokens=True)
        new = recycling.recycle(examples, completions, samples.rewards[:rows].tolist(),
                                recyclable(samples, rows, self.settings.rollout.truncated_is_wrong),
                                samples.num_samples, rng,
                                pairwise_prob=self.pairwise_prob,
                                judge_cap=math.floor(self.judge_fraction * len(examples)),
                                reflect_cap=math.floor(self.reflect_fraction * len(examples)),
                                balance_pointwise=self.balance_pointwise)
        dropped = self.add_to_cache(new)
        if self.reward_period_ready():  # reward period on the oldest cached examples
            popped, self.cache = self.cache[:self.reward_batch_size], self.cache[self.reward_batch_size:]
            reward_rollout = self.reward_rollout(popped, batch_idx)
            grpo_update(self, reward_rollout, self.loss_settings, self.settings, self.reference, "reward")
            online.log_gathered(self, "reward", online.weighted(self.reward_metrics(popped, reward_rollout),
                                                                len(popped)), batch_size=len(popped))
        online.log_gathered(self, "recycle", online.weighted(self.recycle_metrics(new, dropped), len(examples)),
                            batch_size=len(examples))

    def add_to_cache(self, new: list[dict]) -> int:
        """Drops cached examples older than `max_staleness` solve batches, appends `new` (born now); returns the
        number dropped."""
        fresh = [e for e in self.cache if self.batches_seen - e["born"] <= self.max_staleness]
        dropped = len(self.cache) - len(fresh)
        self.cache = fresh + [{**e, "born": self.batches_seen} for e in new]
        return dropped

    def reward_period_ready(self) -> bool:
        """Every process's cache holds a reward batch (processes must make the same number of optimizer steps)."""
        ready = torch.tensor(float(len(self.cache) >= self.reward_batch_size), device=self.device)
        return bool(self.all_gather(ready).min() > 0)

    def reward_rollout(self, examples: list[dict], batch_idx: int):
        """K fresh samples per recycled prompt from the current model, scored against the recycled labels."""
        prompts = left_pad([self.processor.prompt(e["prompt"]) for e in examples], self.processor.pad_id)
        batch = {k: v.to(self.device) for k, v in prompts.items()}
        batch["examples"] = examples
        generator = sampling_generator(self.device, self.settings.seed + REWARD_STREAM, self.current_epoch, batch_idx,
                                       self.global_rank)
        with sharding.gathered(self.model):
            return collect_rollout(self.model, batch, self.processor, recycling.RecycledReward(self.reward),
                                   self.settings.rollout, generator)

    def recycle_metrics(self, new: list[dict], dropped: int) -> dict:
        counts = {kind: sum(e["kind"] == kind for e in new) for kind in recycling.KINDS}
        metrics = {**{f"{kind}_examples": float(n) for kind, n in counts.items()},
                   "cache_size": float(len(self.cache)), "dropped_stale": float(dropped)}  # after the reward period
        if counts[recycling.POINTWISE]:  # drifts towards "Y" as solve accuracy rises
            metrics["pointwise_yes_fraction"] = sum(e["kind"] == recycling.POINTWISE and e["answer"] == recycling.YES
                                                    for e in new) / counts[recycling.POINTWISE]
        return metrics

    def reward_metrics(self, examples: list[dict], rollout) -> dict:
        """Mean reward per kind and the fraction of groups whose rewards are all equal (A = 0)."""
        rewards = rollout.grouped(rollout.rewards)  # (P, K)
        rate = rewards.mean(-1)  # (P,)
        metrics = {"groups_zero_advantage": ((rate == 0) | (rate == 1)).float().mean()}
        for kind in recycling.KINDS:
            index = [i for i, e in enumerate(examples) if e["kind"] == kind]
            if index:
                metrics[f"reward_{kind}"] = rate[index].mean()
        return metrics

    def schedule_period(self) -> int:
        minibatch = self.settings.prompts_per_minibatch
        per_batch = online.updates_per_batch(self.trainer, minibatch)
        if self.recycle:
            per_batch += max(1, math.ceil(self.reward_batch_size / minibatch))
        return int(self.trainer.estimated_stepping_batches) * per_batch

    # ---- evaluation ---------------------------------------------------------------------------------------------
    def validation_step(self, batch, batch_idx, dataloader_idx: int = 0):
        super().validation_step(batch, batch_idx, dataloader_idx)
        if self.eval_splits()[dataloader_idx] == self.judge_eval["split"]:
            self.judge_step(batch, batch_idx)

    def judge_update(self, name: str, values) -> None:
        values = torch.as_tensor(values, dtype=torch.float32, device=self.device).flatten()
        if values.numel():
            self.judge_metrics[name].update(values)

    @torch.no_grad()
    def judge_step(self, batch, batch_idx: int) -> None:
        chosen = [i for i, e in enumerate(batch["examples"]) if e["index"] < self.judge_eval["size"]]
        if not chosen:
            return
        examples = [batch["examples"][i] for i in chosen]
        questions = [e["prompt"] for e in examples]
        index = torch.tensor(chosen, device=self.device)
        prompts = {"prompt_input_ids": batch["prompt_input_ids"][index],
                   "prompt_attention_mask": batch["prompt_attention_mask"][index]}
        judge = SelfJudge(self.model, self.processor, max_new_tokens=self.evaluator.max_new_tokens)
        if self.judge_eval["samples"]:
            # the model's own held-out answers, and the start model's (π_ref: the same answers in every evaluation
            # and every run from this start), with fixed noise
            answers = self.held_out_answers(self.model, prompts, examples, seed=7_919 + batch_idx)
            wrong = self.judge_answers(judge, "", questions, examples, *answers)
            if self.reference is not None:
                self.judge_answers(judge, "ref_", questions, examples,
                                   *self.held_out_answers(self.reference, prompts, examples, seed=7_919 + batch_idx))
            if wrong:
                owners, texts = answers[0], answers[1]
                revised = judge.revise([questions[owners[j]] for j in wrong], [texts[j] for j in wrong])
                self.judge_update("repaired", [float(self.reward(examples[owners[j]], r).correct)
                                               for j, r in zip(wrong, revised)])
        greedy = [c.strip() for c in self.evaluator.greedy_completions(self.model, prompts)]
        rounds = self_reflection(questions, greedy, judge.p_correct, judge.revise,
                                 lambda i, a: self.reward(examples[i], a).correct, self.judge_eval["rounds"])
        for k, correct in enumerate(rounds):
            self.judge_update(f"tts_round_{k}", [float(c) for c in correct])

    def held_out_answers(self, model, prompts: dict, examples: list[dict], seed: int):
        """`judge_eval.samples` answers per problem from `model` at the evaluator's sampling temperature: (problem
        of each answer, stripped answers, their verdicts)."""
        n = self.judge_eval["samples"]
        answers = [c.strip() for c in self.evaluator.sampled_completions(model, prompts, n, seed)]
        owners = [i for i in range(len(examples)) for _ in range(n)]
        return owners, answers, [self.reward(examples[i], a) for i, a in zip(owners, answers)]

    def judge_answers(self, judge: SelfJudge, prefix: str, questions, examples, owners, answers, verdicts) -> list:
        """Pointwise P(Y) of every parsed answer (judged only extracted answers, as in training) and pairwise
        verdicts in both orders on mixed groups (a problem with a correct sample: its correct answer is the truth);
        returns the indices of the wrong parsed answers."""
        judged = [j for j, v in enumerate(verdicts) if v.parsed]
        self.judge_update(prefix + "p_yes", judge.p_correct([questions[owners[j]] for j in judged],
                                                            [answers[j] for j in judged]))
        self.judge_update(prefix + "yes_label", [float(verdicts[j].correct) for j in judged])
        wrong = [j for j in judged if not verdicts[j].correct]
        solved = {owners[j] for j in judged if verdicts[j].correct}
        pairs = [j for j in wrong if owners[j] in solved]
        if pairs:
            q = [questions[owners[j]] for j in pairs]
            truth, bad = [examples[owners[j]]["answer"] for j in pairs], [answers[j] for j in pairs]
            first = judge.p_first(q, truth, bad) >= 0.5  # (N,) correct in slot A
            second = judge.p_first(q, bad, truth) < 0.5  # (N,) correct in slot B
            self.judge_update(prefix + "pair_correct", torch.cat([first, second]).float())
            self.judge_update(prefix + "pair_order_agreement", (first == second).float())
        return wrong

    def gather_judge_values(self) -> dict[str, torch.Tensor]:
        """The per-item values of every judge metric of this validation, from all processes; resets them."""
        values = {}
        for name, metric in self.judge_metrics.items():
            # compute() gathers across processes, so every process must call it for every metric, in the same order,
            # whether or not it saw data itself; a metric is present if any process did
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message=".*compute.*before the ``update``")
                value = metric.compute()
            metric.reset()
            if isinstance(value, list):  # no process updated it: CatMetric returns its empty state list
                value = torch.cat([torch.as_tensor(v).flatten() for v in value]) if value else torch.zeros(0)
            if value.numel():
                values[name] = value.flatten().float()
        return values

    def on_validation_epoch_end(self) -> None:
        results = judge_summary(self.gather_judge_values())
        split = self.judge_eval["split"]
        self.judge_results = {f"{split}/{k}": v for k, v in results.items()}
        for name, value in self.judge_results.items():
            self.log(name, value)
        super().on_validation_epoch_end()

    def progress_info(self) -> dict:
        return dict(self.judge_results)

    # ---- checkpoint ---------------------------------------------------------------------------------------------
    def extra_state(self) -> dict:
        return {"cache": list(self.cache), "batches_seen": self.batches_seen}

    def load_extra_state(self, state: dict) -> None:
        self.cache = list(state.get("cache", []))
        self.batches_seen = int(state.get("batches_seen", 0))
