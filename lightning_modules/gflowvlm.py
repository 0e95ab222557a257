"""GFlowVLM (Kang et al., CVPR 2025): a (vision-)language agent fine-tuned as the forward policy of a GFlowNet over
multi-step episodes, with Var-TB, SubTB or DB (`method.loss`); `method.loss=ppo` is the RL4VLM baseline (PPO on the
original rewards) on the same episodes, prompts and λ.

One training step is the paper's Algorithm 1 for the batch's tasks: K episodes per task from the current policy
(`posttrain.episodes.run_episodes`), added to the task's replay buffer with the off-policy augmentation (the
scripted expert's trajectory: NumberLine when an episode failed, Blackjack always), then one update on every
trajectory the tasks' buffers hold. PPO uses only the step's own on-policy episodes.
"""
from __future__ import annotations

import torch

from lightning_modules import online
from lightning_modules.base import PostTrainModule
from posttrain.envs import make_env
from posttrain.episodes.buffer import ReplayBuffer, needs_augmentation
from posttrain.episodes.evaluate import EpisodeEvaluator
from posttrain.episodes.rollout import EpisodeSettings, expert_trajectory, run_episodes
from posttrain.episodes.scoring import trajectory_tensors
from posttrain.episodes.trajectory import Trajectory
from posttrain.losses.gflownet import LOSSES
from posttrain.losses.ppo import ppo_loss, whiten
from posttrain.processors import make_processor
from posttrain.utils.config import check, check_choice, with_defaults

AUGMENTATION = {"numberline": "on_failure", "blackjack": "always"}  # the paper's off-policy data per environment
PPO_DEFAULTS = {"epochs": 2, "clip_eps": 0.2}


class GFlowVLMModule(PostTrainModule):
    def __init__(self, model, tokenizer, env: dict, loss: str = "db", lam: float = 0.4, num_samples: int = 4,
                 buffer_size: int = 4, off_policy: str = "auto", generation: dict | None = None,
                 markovian: bool = False, outside_support: str = "one_sided", grad_clip: float | None = 1.0,
                 chunk: int = 32, ppo: dict | None = None,
                 seed: int = 0, optimizer=None, scheduler=None, evaluator=None):
        check_choice(loss, (*LOSSES, "ppo"), "method.loss")
        check(lam >= 0, "method.lam", f"must be >= 0, got {lam}")
        check(num_samples >= 1, "method.num_samples", f"must be >= 1, got {num_samples}")
        check_choice(off_policy, ("auto", "none", "on_failure", "always"), "method.off_policy")
        check_choice(outside_support, ("one_sided", "floor"), "method.outside_support")
        super().__init__(model, tokenizer, optimizer, scheduler,
                         evaluator if evaluator is not None else EpisodeEvaluator(env))
        self.save_hyperparameters(ignore=["model", "tokenizer", "evaluator"])
        self.automatic_optimization = False
        self.env_config = dict(env)
        make_env(self.env_config)  # an unknown env id or argument stops here, naming the key
        self.loss_name, self.lam, self.num_samples = loss, lam, num_samples
        self.grad_clip, self.chunk = grad_clip, chunk
        self.outside_support = outside_support
        self.augmentation = AUGMENTATION.get(env["id"], "none") if off_policy == "auto" else off_policy
        gen = online.generation_settings(generation)
        self.settings = EpisodeSettings(temperature=gen["temperature"], max_new_tokens=gen["max_new_tokens"],
                                        markovian=markovian)
        self.ppo = with_defaults(ppo, PPO_DEFAULTS, "method.ppo")
        self.buffer, self.seed = ReplayBuffer(buffer_size), seed
        self.processor = make_processor(tokenizer, 2048)
        self.env_steps = 0  # environment steps taken by the policy (the compute budget of the arms)

    # ---- one step of Algorithm 1 ------------------------------------------------------------------------------------
    def training_step(self, batch, batch_idx):
        tasks = batch["task"].tolist()
        generator = online.step_generator(self, self.seed, batch_idx)
        repeated = [t for t in tasks for _ in range(self.num_samples)]
        envs = [make_env(self.env_config) for _ in repeated]
        on_policy = run_episodes(self.model, self.processor, envs, repeated, self.settings, generator)
        self.env_steps += sum(len(t.steps) for t in on_policy)
        if self.loss_name == "ppo":
            metrics = self.ppo_update(on_policy)
        else:
            metrics = self.gflownet_update(self.fill_buffers(tasks, on_policy))
        self.log_metrics("train", {**metrics, **episode_metrics(on_policy), "env_steps": float(self.env_steps)},
                         batch_size=len(tasks))

    def fill_buffers(self, tasks: list[int], on_policy: list[Trajectory]) -> list[Trajectory]:
        """Each task's K new trajectories (and the expert's, by the augmentation rule) into its buffer; returns
        every trajectory the batch's buffers hold."""
        held = []
        for i, task in enumerate(tasks):
            group = on_policy[i * self.num_samples:(i + 1) * self.num_samples]
            if needs_augmentation(self.augmentation, group):
                group = group + [expert_trajectory(make_env(self.env_config), task, self.processor, self.settings)]
            held += self.buffer.add(task, group)
        return held

    def gflownet_update(self, trajectories: list[Trajectory]) -> dict:
        tensors = trajectory_tensors(self.model, self.processor, trajectories, self.lam, self.chunk,
                                     termination=self.loss_name != "tb", temperature=self.settings.temperature)
        args = (tensors["log_pf"], tensors["log_pterm"], tensors["log_reward"], tensors["lengths"])
        # one_sided: residuals into histories with an invalid answer only lower them; floor: squared against 1e-10
        outside = tensors["outside"] if self.outside_support == "one_sided" else None
        if self.loss_name == "tb":
            loss, metrics = LOSSES["tb"](*args, groups=torch.tensor([t.task for t in trajectories]), outside=outside)
        else:
            loss, metrics = LOSSES[self.loss_name](*args, outside=outside)
        online.update(self, loss, self.grad_clip)
        return {"loss": loss.detach(), **metrics, "buffer": float(len(self.buffer))}

    def ppo_update(self, trajectories: list[Trajectory]) -> dict:
        """RL4VLM's PPO on the original rewards, one "token" per step with log π = log P_act + λ log P_CoT: the
        advantage of step t is its reward-to-go minus the mean return of the task's K episodes (no critic),
        whitened over the batch; `ppo.epochs` clipped updates against the log-probs before the first."""
        with torch.no_grad():
            old = trajectory_tensors(self.model, self.processor, trajectories, self.lam, self.chunk, False,
                                     self.settings.temperature)
        old_logp, mask = step_layout(trajectories, old["step_log_pf"])  # (B, T) each
        rewards, _ = step_layout(trajectories, torch.tensor([s.reward for t in trajectories for s in t.steps]))
        to_go = rewards.flip(-1).cumsum(-1).flip(-1)  # (B, T)
        baseline = to_go[:, 0].view(-1, self.num_samples).mean(-1).repeat_interleave(self.num_samples)  # (B,)
        advantages = whiten((to_go - baseline[:, None]) * mask, mask)  # (B, T)
        parts = []
        for _ in range(self.ppo["epochs"]):
            new = trajectory_tensors(self.model, self.processor, trajectories, self.lam, self.chunk, False,
                                     self.settings.temperature)
            logp, _ = step_layout(trajectories, new["step_log_pf"])  # (B, T)
            zeros = torch.zeros_like(logp)
            loss, metrics = ppo_loss(logp, old_logp, advantages, zeros, zeros, zeros, mask,
                                     clip_eps=self.ppo["clip_eps"], value_clip=None, value_coef=1.0)
            online.update(self, loss, self.grad_clip)
            parts.append({"loss": loss.detach(), "clip_fraction": metrics["clip_fraction"],
                          "approx_kl": metrics["approx_kl"]})
        return {k: torch.stack([p[k] for p in parts]).mean() for k in parts[0]}

    # ---- schedule, checkpoint ---------------------------------------------------------------------------------------
    def schedule_period(self) -> int:
        updates = self.ppo["epochs"] if self.loss_name == "ppo" else 1
        return int(self.trainer.estimated_stepping_batches) * updates

    def extra_state(self) -> dict:
        return {"buffer": self.buffer.state_dict(), "env_steps": self.env_steps}

    def load_extra_state(self, state: dict) -> None:
        if "buffer" in state:
            self.buffer.load_state_dict(state["buffer"])
            self.env_steps = state["env_steps"]


def step_layout(trajectories: list[Trajectory], values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-step values (S,) in trajectory order -> (B, T) right-padded with 0, and the (B, T) mask of real steps."""
    width = max(len(t.steps) for t in trajectories)
    out = torch.zeros(len(trajectories), width, dtype=values.dtype, device=values.device)  # (B, T)
    mask = torch.zeros(len(trajectories), width, dtype=torch.bool, device=values.device)  # (B, T)
    at = 0
    for b, traj in enumerate(trajectories):
        n = len(traj.steps)
        out[b, :n], mask[b, :n] = values[at:at + n], True
        at += n
    return out, mask


def episode_metrics(trajectories: list[Trajectory]) -> dict:
    steps = sum(len(t.steps) for t in trajectories)
    return {"success": sum(t.success for t in trajectories) / len(trajectories),
            "invalid": sum(t.invalid_steps() for t in trajectories) / max(steps, 1),
            "return": sum(t.rl_return for t in trajectories) / len(trajectories),
            "episode_length": steps / len(trajectories)}
