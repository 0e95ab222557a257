"""The policy's log-probabilities of recorded trajectories, per step, split into thought and action tokens, laid
out as the GFlowNet losses read them (`posttrain.losses.gflownet`).

For trajectory b with m_b moves (steps before a final "[DONE]"):
    log_pf (B, M)        log P_F(z_k | z_{0:k-1}) = log P_act + λ log P_CoT of move k = 1..m_b, 0 beyond
    log_pterm (B, M + 1) log P_F(⊤ | z_{0:i}) for states i = 0..m_b: the answer with the same sampled thoughts and the
                         action "[DONE]" (its action tokens + λ · the sampled thoughts' log P_CoT); at the last state
                         the agent's own "[DONE]" answer, or 0 where termination was forced (time limit, the game ended)
    log_reward (B, M+1)  log R(z_{0:i}⊤)
    lengths (B,)         m_b
    outside (B, M+1)     bool: state i's history holds an invalid answer (outside R's support; its R is the floor)
"""
from __future__ import annotations

import torch
from PIL import Image

from posttrain.episodes.trajectory import Step, Trajectory
from posttrain.models.forward import IGNORE_INDEX
from posttrain.processors import pack
from posttrain.rollouts import policy_logprobs


def answer_logprobs(model, processor, items: list[tuple[Step, list[int], int]], chunk: int,
                    temperature: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """(log P_CoT, log P_act) of each (step, answer tokens, first action token): the sums of the answer's token
    log-probs before and from its first action token, given the step's prompt (and image). Two (N,) tensors, with
    gradient."""
    thought, action = [], []
    device = next(model.parameters()).device
    for start in range(0, len(items), chunk):
        part = items[start:start + chunk]
        examples = [{"prompt": s.prompt, **({"image": Image.fromarray(s.image)} if s.image is not None else {})}
                    for s, _, _ in part]
        prompts, image_inputs = processor.encode_prompts(examples)
        rows = {k: v.to(device) for k, v in pack(prompts, [ids for _, ids, _ in part], processor.pad_id,
                                                  max(processor.max_length, 1 << 16)).items()}
        if image_inputs is not None:
            rows["image_inputs"] = image_inputs.to(device)
        logp = policy_logprobs(model, rows, temperature)  # (n, T-1)
        position = torch.arange(logp.shape[1], device=device)  # (T-1,)
        first = rows["prompt_lengths"] - 1  # (n,) label position of the answer's first token
        split = first + torch.tensor([f for _, _, f in part], device=device)  # (n,) of its first action token
        answer = rows["labels"][:, 1:] != IGNORE_INDEX  # (n, T-1)
        is_action = answer & (position[None] >= split[:, None])  # (n, T-1)
        thought.append((logp * (answer & ~is_action)).sum(-1))
        action.append((logp * is_action).sum(-1))
    return torch.cat(thought), torch.cat(action)


def trajectory_tensors(model, processor, trajectories: list[Trajectory], lam: float, chunk: int = 32,
                       termination: bool = True, temperature: float = 1.0) -> dict:
    """log_pf, log_pterm (when `termination`; else only the agent's own final "[DONE]"), log_reward, lengths: the
    module docstring's layout."""
    steps = [s for t in trajectories for s in t.steps]
    cot, act = answer_logprobs(model, processor, [(s, s.output_ids, s.action_from) for s in steps], chunk,
                               temperature)  # (S,) each
    step_pf = act + lam * cot  # (S,)
    done_pf = None
    if termination:  # the "[DONE]" answer at every move's state, with that state's sampled thoughts
        moves = [s for t in trajectories for s in t.moves]
        _, done_act = answer_logprobs(model, processor, [(s, s.done_ids, s.done_from) for s in moves], chunk,
                                      temperature)
        move_cot = torch.cat([cot[offset:offset + len(t.moves)] for t, offset in zip(trajectories,
                                                                                     offsets(trajectories))])
        done_pf = done_act + lam * move_cot  # (S',)
    batch, width = len(trajectories), max(len(t.moves) for t in trajectories)
    device = step_pf.device
    log_pf = torch.zeros(batch, width, device=device)  # (B, M)
    log_pterm = torch.zeros(batch, width + 1, device=device)  # (B, M+1)
    log_reward = torch.zeros(batch, width + 1, device=device, dtype=torch.float64)  # (B, M+1)
    outside = torch.zeros(batch, width + 1, dtype=torch.bool, device=device)  # (B, M+1)
    lengths = torch.tensor([len(t.moves) for t in trajectories], device=device)  # (B,)
    step_at, move_at = 0, 0
    for b, traj in enumerate(trajectories):
        m = len(traj.moves)
        log_pf[b, :m] = step_pf[step_at:step_at + m]
        if done_pf is not None:
            log_pterm[b, :m] = done_pf[move_at:move_at + m]
        if traj.done:
            log_pterm[b, m] = step_pf[step_at + m]
        log_reward[b, :m + 1] = torch.tensor(traj.state_rewards, dtype=torch.float64).log()
        invalid = [s.action is None for s in traj.moves]  # (m,): state i follows moves 1..i
        outside[b, 1:m + 1] = torch.tensor(invalid, dtype=torch.int64, device=device).cumsum(0) > 0
        outside[b, m + 1:] = outside[b, m]
        step_at, move_at = step_at + len(traj.steps), move_at + m
    return {"log_pf": log_pf, "log_pterm": log_pterm, "log_reward": log_reward.float(), "lengths": lengths,
            "outside": outside, "step_log_pf": step_pf}


def offsets(trajectories: list[Trajectory]) -> list[int]:
    """Index of each trajectory's first step among all steps."""
    out, at = [], 0
    for t in trajectories:
        out.append(at)
        at += len(t.steps)
    return out
