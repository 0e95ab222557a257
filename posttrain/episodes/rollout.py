"""Episodes of a (vision-)language policy against Gymnasium environments, batched over the environments.

Every step, each running episode's prompt (goal, history, state, admissible actions: `prompts.format_prompt`) goes
through the processor (a text model reads the state as text; a vision-language model sees it as the image) and
`posttrain.generation.generate` samples the answers of all of them at once; each answer is parsed
(`prompts.parse_output`) and its action applied. An answer that cannot be parsed, or names an action outside the
admissible set, is an invalid step: the environment does not move, the step costs a turn of the episode's budget
(the environment's `max_steps`) and RL4VLM's −1, and it is counted, never raised. For the GFlowNet rewards a
history that holds an invalid answer is outside the support of R: every state from there on gets R = 1e-10 (the
paper's floor), so the balance losses push such answers down instead of towards the valid trajectories' flow.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from posttrain.episodes.prompts import OK, UNPARSABLE, format_output, format_prompt, parse_output
from posttrain.episodes.trajectory import Step, Trajectory
from posttrain.generation import generate
from posttrain.processors import VisionProcessor, left_pad

DONE_ACTION = "[DONE]"
INVALID_REWARD = -1.0
INVALID_GFN_REWARD = 1e-10  # R(z_{0:t}⊤) of a state whose history holds an invalid answer


@dataclass(frozen=True)
class EpisodeSettings:
    temperature: float = 1.0
    max_new_tokens: int = 48
    markovian: bool = False  # no history in the prompt (the state graph is then no longer a tree)


def uses_images(processor) -> bool:
    return isinstance(processor, VisionProcessor)


class Episode:
    """One running episode: its environment, the history the prompt shows, the trajectory it records."""

    def __init__(self, env, task: int, images: bool, expert: bool = False):
        self.env, self.images = env, images
        self.observation, info = env.reset(seed=task)
        self.trajectory = Trajectory(task=task, state_rewards=[info["gfn_reward"]], expert=expert)
        self.history: list[tuple[str, str]] = []
        self.finished = False

    def prompt(self, settings: EpisodeSettings) -> str:
        state = None if self.images else self.observation["text"]
        return format_prompt(self.env.goal(), self.history, state, self.env.admissible(), settings.markovian)

    def example(self, settings: EpisodeSettings) -> dict:
        example = {"prompt": self.prompt(settings)}
        if self.images:
            example["image"] = Image.fromarray(self.observation["image"])
        return example

    def advance(self, prompt: str, output: str, output_ids: list[int], processor) -> None:
        """Applies one answer: parse, step the environment (or count an invalid answer), record."""
        admissible = self.env.admissible()
        parsed = parse_output(output, admissible)
        state_text = self.observation["text"]
        action_from = token_offset(processor, output_ids, parsed.action_start) if parsed.status != UNPARSABLE else 0
        done_ids, done_from = answer_tokens(processor, parsed.thought or "", DONE_ACTION)
        step = Step(prompt=prompt, image=self.observation["image"] if self.images else None, output=output,
                    output_ids=list(output_ids), action_from=action_from, done_ids=done_ids, done_from=done_from,
                    status=parsed.status, action=None, reward=INVALID_REWARD)
        traj = self.trajectory
        traj.steps.append(step)
        if parsed.status == OK:
            step.action = admissible[parsed.action]
            self.observation, step.reward, terminated, truncated, info = self.env.step(parsed.action)
            reward = info["gfn_reward"] if traj.invalid_steps() == 0 else INVALID_GFN_REWARD
            ended = terminated or truncated
        else:  # the state does not change; the turn is spent
            reward, ended = INVALID_GFN_REWARD, len(traj.steps) >= self.env.max_steps
            info = {"success": False}
        if step.action == DONE_ACTION:
            traj.done = True
            traj.state_rewards[-1] = reward  # R of terminating at the state the [DONE] was said in
        else:
            traj.state_rewards.append(reward)
        self.history.append((state_text, step.action if step.action is not None else output.strip()[:24]))
        if ended:
            self.finished, traj.success = True, bool(info["success"])


def token_offset(processor, ids: list[int], char_start: int | None) -> int:
    """The index of the first token of `ids` whose text ends after character `char_start` of their decoded text
    (the first action token); len(ids) when none does."""
    if char_start is None:
        return 0
    for k in range(len(ids)):
        if len(processor.decode([ids[: k + 1]])[0]) > char_start:
            return k
    return len(ids)


def answer_tokens(processor, thought: str, action: str) -> tuple[list[int], int]:
    """The tokens of the canonical answer `{"thoughts": thought, "action": action}` with eos, and the index of its
    first action token: how expert and "[DONE]" answers are tokenised, exactly as the policy would write them."""
    text = format_output(thought, action)
    ids = processor.response(text)
    return ids, token_offset(processor, ids, text.rindex(action))


@torch.no_grad()
def run_episodes(model, processor, envs: list, tasks: list[int], settings: EpisodeSettings,
                 generator: torch.Generator | None) -> list[Trajectory]:
    """One episode per (environment, task seed), all stepped together; returns their trajectories in order."""
    device = next(model.parameters()).device
    episodes = [Episode(env, task, uses_images(processor)) for env, task in zip(envs, tasks)]
    while True:
        running = [e for e in episodes if not e.finished]
        if not running:
            break
        examples = [e.example(settings) for e in running]
        prompt_ids, image_inputs = processor.encode_prompts(examples)
        batch = {k: v.to(device) for k, v in left_pad(prompt_ids, processor.pad_id).items()}
        gen = generate(model, batch["prompt_input_ids"], batch["prompt_attention_mask"],
                       max_new_tokens=settings.max_new_tokens, eos_token_id=processor.eos_id,
                       pad_token_id=processor.pad_id, temperature=settings.temperature, generator=generator,
                       image_inputs=image_inputs.to(device) if image_inputs is not None else None)
        answers = gen.token_lists()
        for episode, example, ids, text in zip(running, examples, answers, processor.decode(answers)):
            episode.advance(example["prompt"], text, ids, processor)
    return [e.trajectory for e in episodes]


def expert_trajectory(env, task: int, processor, settings: EpisodeSettings) -> Trajectory:
    """The scripted expert's episode on `task`, its answers written and tokenised as the policy's would be."""
    episode = Episode(env, task, uses_images(processor), expert=True)
    while not episode.finished:
        prompt = episode.prompt(settings)
        action = env.admissible()[env.expert_action()]
        ids, _ = answer_tokens(processor, env.thought(), action)
        episode.advance(prompt, format_output(env.thought(), action), ids, processor)
    return episode.trajectory


def sft_examples(trajectory: Trajectory) -> list[dict]:
    """Each step of a trajectory as an SFT example {"prompt", "response", "image"?}."""
    rows = []
    for step in trajectory.steps:
        row = {"prompt": step.prompt, "response": step.output}
        if step.image is not None:
            row["image"] = Image.fromarray(np.asarray(step.image))
        rows.append(row)
    return rows
