"""Prompts with verifiable answers for online methods (RFT, GRPO, NFT).

The same DataModule serves the optional SFT warm-up and the online stage: its training batches are SFT batches
(`[bos] prompt answer [eos]`, labels on the answer) that also carry left-padded prompts and the raw examples, from
which an online method draws `num_samples` responses per prompt through `posttrain.generation` (see
`posttrain.rollouts`). Held-out splits are scored by the configured verifier.
"""
from __future__ import annotations

from collections.abc import Mapping

from datamodules.jsonl import JsonlTask
from datamodules.sft import SFTDataModule
from posttrain.rewards import ArithmeticVerifier, Verdict
from posttrain.utils.config import check


class JsonlPromptTask(JsonlTask):
    """Prompts and reference answers from jsonl files, e.g. GSM8K (`prompt_key=question`).

    The answer field doubles as the SFT target of a warm-up (a GSM8K answer is a worked solution ending in
    `#### <number>`, which the GSM8K verifier reads).

    Args:
        train_path: training file.
        eval_paths: split name -> file. Without any, the first `val_fraction` of train is held out as `val`.
        prompt_key / answer_key: the files' field names.
    """

    def __init__(self, train_path: str, eval_paths: Mapping[str, str] | None = None, prompt_key: str = "prompt",
                 answer_key: str = "answer", val_fraction: float = 0.05):
        super().__init__(train_path, eval_paths, prompt_key=prompt_key, response_key=answer_key,
                         answer_key=answer_key, val_fraction=val_fraction)


class PromptDataModule(SFTDataModule):
    """SFTDataModule whose batches also carry generation prompts, scored by a verifier.

    Args (beyond SFTDataModule's):
        verifier: a callable (completion, answer) -> posttrain.rewards.Verdict; default the arithmetic check.
        num_samples: K, responses drawn per prompt by online methods (the group size of group statistics).
    """

    train_with_prompts = True  # online methods generate from the training prompts

    def __init__(self, tokenizer, task, verifier=None, num_samples: int = 8, **kwargs):
        super().__init__(tokenizer, task, **kwargs)
        check(num_samples >= 2, "data.num_samples", f"must be >= 2 (group statistics need a group), got {num_samples}")
        self.verifier = verifier if verifier is not None else ArithmeticVerifier()
        self.num_samples = num_samples

    def verify(self, example: dict, completion: str) -> Verdict:
        return self.verifier(completion, example["answer"])

    def is_correct(self, example: dict, completion: str) -> bool:
        return self.verify(example, completion).correct
