"""Prompts with verifiable answers for online methods (RFT, GRPO, NFT).

The same DataModule serves the optional SFT warm-up and the online stage: its training batches are SFT batches
(`[bos] prompt answer [eos]`, labels on the answer) that also carry left-padded prompts and the raw examples, from
which an online method draws `num_samples` responses per prompt through `posttrain.generation` (see
`posttrain.rollouts`). Held-out splits are scored by the configured verifier.
"""
from __future__ import annotations

from collections.abc import Mapping

from torch.utils.data import DataLoader

from datamodules.collate import SFTCollator
from datamodules.jsonl import read_jsonl
from datamodules.sampler import EpochShuffleSampler
from datamodules.sft import SFTDataModule
from posttrain.rewards import ArithmeticVerifier, Verdict
from posttrain.utils.config import check


class JsonlPromptTask:
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
        fields = {"prompt": prompt_key, "answer": answer_key}
        train = [{**r, "response": r["answer"]} for r in read_jsonl(train_path, fields)]
        self._splits = {"train": train}
        for split, path in dict(eval_paths or {}).items():
            self._splits[split] = [{**r, "response": r["answer"]} for r in read_jsonl(path, fields)]
        if len(self._splits) == 1 and val_fraction > 0:
            n_val = max(1, int(len(train) * val_fraction))
            self._splits = {"train": train[n_val:], "val": train[:n_val]}
        self.eval_splits = tuple(s for s in self._splits if s != "train")

    def examples(self, split: str) -> list[dict]:
        check(split in self._splits, "split", f"unknown split {split!r}; this task has {sorted(self._splits)}")
        return self._splits[split]


class PromptDataModule(SFTDataModule):
    """SFTDataModule whose batches also carry generation prompts, scored by a verifier.

    Args (beyond SFTDataModule's):
        verifier: a callable (completion, answer) -> posttrain.rewards.Verdict; default the arithmetic check.
        num_samples: K, responses drawn per prompt by online methods (the group size of group statistics).
    """

    def __init__(self, tokenizer, task, verifier=None, num_samples: int = 8, **kwargs):
        super().__init__(tokenizer, task, **kwargs)
        check(num_samples >= 2, "data.num_samples", f"must be >= 2 (group statistics need a group), got {num_samples}")
        self.verifier = verifier if verifier is not None else ArithmeticVerifier()
        self.num_samples = num_samples

    def verify(self, example: dict, completion: str) -> Verdict:
        return self.verifier(completion, example["answer"])

    def is_correct(self, example: dict, completion: str) -> bool:
        return self.verify(example, completion).correct

    def train_dataloader(self) -> DataLoader:
        train = self.splits["train"]
        return DataLoader(
            train,
            batch_size=self.batch_size,
            sampler=EpochShuffleSampler(len(train), seed=self.seed),
            collate_fn=SFTCollator(self.encoder, with_prompts=True),
            num_workers=self.num_workers,
            drop_last=len(train) >= self.batch_size,
        )

