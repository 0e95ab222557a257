"""Rejection sampling as a dataset stage: the model's own verified answers to the training prompts, written as SFT
data (the data of rejection-sampling fine-tuning, Yuan et al., arXiv 2308.01825, one round, offline).

For every training prompt x the model samples K answers y_1..y_K ~ p_θ(·|x) at `generation.temperature`; each is
checked by the reward (a verifier) against the prompt's reference answer, and up to `max_per_prompt` distinct
correct ones become examples {"prompt": x, "response": y, "answer": a}. The pipeline runs this module with
`trainer.predict` over the data's training prompts and writes the examples as jsonl (a stage with `output:
dataset`); a later stage trains on that file (e.g. `data=jsonl` with `inputs: {data.task.train_path: <this
stage>}`). Nothing is trained here.
"""
from __future__ import annotations

import torch

from lightning_modules.base import PostTrainModule
from posttrain.generation import generate
from posttrain.utils.config import check, with_defaults


class RejectionSamplingModule(PostTrainModule):
    """Args:
        reward: `reward(example, completion) -> Verdict`, e.g. posttrain.rewards.ArithmeticVerifier (conf/reward/).
        num_samples: K, answers sampled per prompt.
        max_per_prompt: at most this many distinct correct answers kept per prompt.
        generation: {temperature, max_new_tokens} of the sampling.
        seed: seeds the sampling per batch, so a rerun writes the same file.
    """

    def __init__(self, model, tokenizer, reward, num_samples: int = 4, max_per_prompt: int = 1,
                 generation: dict | None = None, seed: int = 0, optimizer=None, scheduler=None, evaluator=None):
        super().__init__(model, tokenizer, optimizer, scheduler, evaluator)
        check(num_samples >= 1, "method.num_samples", f"must be >= 1, got {num_samples}")
        check(max_per_prompt >= 1, "method.max_per_prompt", f"must be >= 1, got {max_per_prompt}")
        self.generation_cfg = with_defaults(generation, {"temperature": 1.0, "max_new_tokens": 16}, "method.generation")
        check(self.generation_cfg["temperature"] > 0, "method.generation.temperature", "must be > 0 (sampling)")
        self.reward, self.num_samples, self.max_per_prompt, self.seed = reward, num_samples, max_per_prompt, seed
        self.counts = torch.zeros(3)  # prompts, correct samples, prompts with a kept answer
        self.dataset_metrics: dict[str, float] = {}

    def predict_step(self, batch, batch_idx) -> list[dict]:
        # The dataset is jsonl text: an image example would lose its image there without a word.
        check("image_inputs" not in batch, "stages.<dataset stage>.data",
              "rejection sampling writes text-only jsonl; image examples are not supported")
        k = self.num_samples
        generator = torch.Generator(device=self.device).manual_seed(
            self.seed * 1_000_003 + batch_idx * 1009 + self.global_rank)
        out = generate(self.model, batch["prompt_input_ids"], batch["prompt_attention_mask"], num_samples=k,
                       generator=generator, temperature=self.generation_cfg["temperature"],
                       max_new_tokens=self.generation_cfg["max_new_tokens"],
                       eos_token_id=self.tokenizer.eos_token_id, pad_token_id=self.tokenizer.pad_token_id,
                       image_inputs=batch.get("image_inputs"))
        completions = self.tokenizer.batch_decode(out.token_lists(), skip_special_tokens=True)
        kept = []
        for i, example in enumerate(batch["examples"]):
            correct = [c for c in completions[i * k:(i + 1) * k] if self.reward(example, c).correct]
            distinct = list(dict.fromkeys(correct))[: self.max_per_prompt]
            kept += [{"prompt": example["prompt"], "response": c, "answer": example["answer"]} for c in distinct]
            self.counts += torch.tensor([1.0, len(correct), float(bool(distinct))])
        return kept

    def on_predict_epoch_end(self) -> None:
        prompts, correct, covered = self.trainer.strategy.reduce(self.counts.to(self.device), reduce_op="sum").tolist()
        self.dataset_metrics = {"dataset/accuracy_sampled": correct / max(prompts * self.num_samples, 1),
                                "dataset/prompts_kept": covered / max(prompts, 1)}
