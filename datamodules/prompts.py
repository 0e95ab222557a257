"""Prompts with verifiable answers for online methods (RFT, GRPO, NFT, SPARK, PPO).

The same DataModule serves the optional SFT warm-up and the online stage: its training batches are SFT batches
(`[bos] prompt answer [eos]`, labels on the answer) that also carry left-padded prompts and the raw examples, from
which an online method draws its responses per prompt through `posttrain.generation` (see `posttrain.rollouts`).
The data only provides examples: the method is given the reward that scores them (`conf/reward/`) and decides how
many responses it samples.
"""
from __future__ import annotations

from collections.abc import Mapping

from datamodules.jsonl import JsonlTask
from datamodules.sft import SFTDataModule


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
    """SFTDataModule whose training batches also carry generation prompts and the raw examples."""

    train_with_prompts = True  # online methods generate from the training prompts
