"""The episode evaluator (`method.evaluator` of the episode methods): an object with the evaluator calls of
`posttrain.evaluators` (setup, update per held-out batch of task seeds, compute) that plays episodes.

Per split: `success` (greedy episodes that end in success: NumberLine's target reached, Blackjack's hand won — the
win rate), `invalid` (the fraction of answers that were unparsable or not admissible), `steps` (mean episode length)
and, on the first `diversity_tasks` tasks of each batch, `success_sampled` and `div@N`: N episodes sampled per task,
S_i the number of distinct successful thought+action sequences of task i, Div = Σ_i S_i / #{i: S_i ≥ 1} (1 at least;
0 when no task has a success). With `tv_samples` > 0 (NumberLine only; ignored elsewhere), `val/tv_terminal`: the
total-variation distance between the policy's sampled terminal action sequences on a short-horizon task and
R(x)/ΣR (`terminal_distance`), and `val/tv_final`: the same on the environment's own step budget (the horizon
the policy is trained on), over the final number of the sampled episodes against R(x)/ΣR summed over the terminal
objects that end on each number (`final_number_rewards`; every action sequence of up to 10 steps is too many
objects for 128 samples, the final numbers are few).
"""
from __future__ import annotations

import functools
import itertools
from collections import Counter

import torch
from torch import nn
from torchmetrics import MeanMetric, SumMetric

from posttrain.envs import make_env
from posttrain.episodes.rollout import EpisodeSettings, run_episodes
from posttrain.processors import make_processor
from posttrain.utils.config import check


class EpisodeEvaluator(nn.Module):
    def __init__(self, env: dict, max_new_tokens: int = 48, num_samples: int = 16, diversity_tasks: int = 4,
                 temperature: float = 1.0, tv_samples: int = 0, tv_max_steps: int = 4, tv_task: int = 0,
                 markovian: bool = False, max_length: int = 2048):
        super().__init__()
        check(num_samples >= 1, "method.evaluator.num_samples", f"must be >= 1, got {num_samples}")
        check(temperature > 0, "method.evaluator.temperature", f"must be > 0, got {temperature}")
        self.env_config, self.max_length = dict(env), max_length
        self.num_samples, self.diversity_tasks, self.tv_samples = num_samples, diversity_tasks, tv_samples
        self.tv_max_steps, self.tv_task = tv_max_steps, tv_task
        self.greedy = EpisodeSettings(temperature=0.0, max_new_tokens=max_new_tokens, markovian=markovian)
        self.sampled = EpisodeSettings(temperature=temperature, max_new_tokens=max_new_tokens, markovian=markovian)
        self.metrics = nn.ModuleDict()
        self.processor, self.tv, self.tv_final = None, None, None

    def setup(self, splits, tokenizer, is_correct=None) -> None:
        self.processor = make_processor(tokenizer, self.max_length)
        for split in splits:
            if split not in self.metrics:
                self.metrics[split] = nn.ModuleDict({
                    "success": MeanMetric(), "invalid": MeanMetric(), "steps": MeanMetric(),
                    "success_sampled": MeanMetric(), "solutions": SumMetric(), "solved_tasks": SumMetric()})

    def envs(self, split: str, count: int, **overrides) -> list:
        return [make_env(self.env_config, split=split, **overrides) for _ in range(count)]

    @torch.no_grad()
    def update(self, model, batch: dict, split: str, seed: int) -> None:
        tasks, metrics = batch["task"].tolist(), self.metrics[split]
        generator = torch.Generator(device=next(model.parameters()).device).manual_seed(seed)
        greedy = run_episodes(model, self.processor, self.envs(split, len(tasks)), tasks, self.greedy, None)
        for traj in greedy:
            metrics["success"].update(float(traj.success))
            metrics["invalid"].update(traj.invalid_steps() / len(traj.steps), weight=len(traj.steps))
            metrics["steps"].update(float(len(traj.steps)))
        chosen = tasks[: self.diversity_tasks]
        if chosen:
            repeated = [t for t in chosen for _ in range(self.num_samples)]
            sampled = run_episodes(model, self.processor, self.envs(split, len(repeated)), repeated, self.sampled,
                                   generator)
            for i in range(len(chosen)):
                group = sampled[i * self.num_samples:(i + 1) * self.num_samples]
                metrics["success_sampled"].update(sum(t.success for t in group) / len(group))
                distinct = len({t.signature() for t in group if t.success})
                metrics["solutions"].update(float(distinct))
                metrics["solved_tasks"].update(float(distinct >= 1))
        if self.tv_samples > 0 and self.env_config["id"] == "numberline" and split == "val" and self.tv is None:
            self.tv = self.terminal_distance(model, generator)
            self.tv_final = self.final_number_distance(model, generator)

    def compute(self) -> dict[str, torch.Tensor]:
        results = {}
        for split, metrics in self.metrics.items():
            if not metrics["success"].update_called:
                continue
            results[f"{split}/success"] = metrics["success"].compute()
            results[f"{split}/invalid"] = metrics["invalid"].compute()
            results[f"{split}/steps"] = metrics["steps"].compute()
            if metrics["success_sampled"].update_called:
                results[f"{split}/success_sampled"] = metrics["success_sampled"].compute()
                solved = metrics["solved_tasks"].compute()
                results[f"{split}/div@{self.num_samples}"] = metrics["solutions"].compute() / solved.clamp(min=1)
            for metric in metrics.values():
                metric.reset()
        if self.tv is not None:
            results["val/tv_terminal"] = torch.tensor(self.tv)
            results["val/tv_final"] = torch.tensor(self.tv_final)
            self.tv, self.tv_final = None, None
        return results

    def terminal_distance(self, model, generator: torch.Generator) -> float:
        """TV between the sampled terminal objects (action sequences; an episode with an invalid answer counts as
        outside the support) of `tv_samples` episodes of task `tv_task` with `tv_max_steps` steps and R(x)/ΣR
        over every terminal object of that horizon."""
        envs = self.envs("val", self.tv_samples, max_steps=self.tv_max_steps)
        trajs = run_episodes(model, self.processor, envs, [self.tv_task] * self.tv_samples, self.sampled, generator)
        counts = Counter(tuple(s.action for s in t.steps) if not t.invalid_steps() else None for t in trajs)
        target = terminal_rewards(make_env(self.env_config, max_steps=self.tv_max_steps), self.tv_task)
        return total_variation(counts, len(trajs), target)

    def final_number_distance(self, model, generator: torch.Generator) -> float:
        """TV between the final numbers of `tv_samples` sampled episodes of task `tv_task` on the environment's
        own step budget (an episode with an invalid answer counts outside the support) and R(x)/ΣR summed over
        the terminal objects that end on each number."""
        envs = self.envs("val", self.tv_samples)
        trajs = run_episodes(model, self.processor, envs, [self.tv_task] * self.tv_samples, self.sampled, generator)
        counts = Counter(env.current if not t.invalid_steps() else None for env, t in zip(envs, trajs))
        return total_variation(counts, len(trajs), final_number_rewards(make_env(self.env_config), self.tv_task))


def total_variation(counts: Counter, samples: int, rewards: dict) -> float:
    """½ Σ_x |counts(x)/samples − R(x)/ΣR| over the union of both supports."""
    total = sum(rewards.values())
    support = set(rewards) | set(counts)
    return 0.5 * sum(abs(counts.get(x, 0) / samples - rewards.get(x, 0.0) / total) for x in support)


def final_number_rewards(env, task: int) -> dict[int, float]:
    """Σ R(x) over the terminal objects x of a NumberLine task (action sequences within its step budget, as
    `terminal_rewards`) grouped by the number they end on; by dynamic programming over (number, steps taken), since
    the terminal objects below a state depend only on those two."""

    @functools.cache
    def below(current: int, steps: int) -> tuple[tuple[int, float], ...]:
        mass = Counter()
        for action in range(len(env.admissible())):
            env.reset(seed=task)
            env.current, env.steps = current, steps  # place the environment in this state, then play its rules
            _, _, terminated, truncated, info = env.step(action)
            if terminated or truncated:
                mass[info["current"]] += info["gfn_reward"]
            else:
                mass.update(dict(below(info["current"], steps + 1)))
        return tuple(sorted(mass.items()))

    env.reset(seed=task)
    return dict(below(env.current, 0))


def terminal_rewards(env, task: int) -> dict[tuple, float]:
    """R(x) of every terminal object of a NumberLine task within its step budget: each sequence of moves followed
    by "[DONE]", and each sequence that fills the budget (the time limit ends it), found by playing them."""
    rewards = {}
    actions = env.admissible()
    moves = [a for a in actions if a != "[DONE]"]
    for length in range(env.max_steps + 1):
        for sequence in itertools.product(moves, repeat=length):
            full = sequence if length == env.max_steps else sequence + ("[DONE]",)
            if len(full) > env.max_steps:
                continue
            env.reset(seed=task)
            for action in full:
                _, _, terminated, truncated, info = env.step(actions.index(action))
                if terminated or truncated:
                    break
            rewards[full] = info["gfn_reward"]
    return rewards
