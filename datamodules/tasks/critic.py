"""Pairwise critic data for LLaVA-Critic-R1 (Wang et al., arXiv 2509.00676): built from the shapes task, or read
from jsonl (e.g. a converted LLaVA-Critic or VLFeedback export).

A critic item is `{"image", "question", "responses": (response_1, response_2), "preferred": "1" | "2" | "tie",
"prompt": the judging prompt, "answer": preferred, "response": <think>rationale</think>\\boxed{preferred}}`: the
prompt and answer serve GRPO (`reward=think_boxed`), the response a critic SFT. With `remove_rationale` (the
paper's choice) the SFT target keeps only the label: `<think></think>\\boxed{1}`. Held-out pairs appear in both
orders (rows 2k and 2k + 1 are pair k, swapped), so accuracy is over balanced labels and position bias shows.

    ShapesQATask       shapes questions in the think -> boxed format (the warm-up and the policy GRPO control)
    ShapesCriticTask   critic items over shapes questions: one correct response and one plausible error, the
                       correct one's position balanced and shuffled; optional ties (both right, worded differently);
                       held out: `val` (pairs, both orders) and `qa` (the val questions, to score the policy)
    WarmupTask         QA training examples plus critic items (true or coin-flip labels, by `random_labels`): the
                       tiny base learns the judging format and, with true labels, a weak judge (an instruction-tuned
                       base's starting point)
    CriticJsonlTask    jsonl lines {"image", "question", "response_1", "response_2", "preferred"}
"""
from __future__ import annotations

import os
import random
from collections.abc import Mapping, Sequence

from datamodules.image_jsonl import ImageExamples, _record_lines
from datamodules.jsonl import DataError, read_jsonl
from datamodules.tasks.shapes import ShapesTask, answer_choices
from posttrain.critic import TIE, CriticPrompt, target
from posttrain.rewards.think_boxed import ThinkBoxedReward
from posttrain.utils.config import check

_REWARD = ThinkBoxedReward(alpha=1.0)  # the data's own is_correct: the boxed answer alone
LABELS = ("1", "2", TIE)


def reasoning(example: dict, answer: str) -> str:
    """A short reasoning trace for a shapes answer: what the question asks about, then the answer."""
    words = example["prompt"].rstrip("?").split()
    subject = {"colour": words[-1], "count": " ".join(words[2:]), "leftmost": "leftmost"}.get(example["kind"], "")
    return f"{subject} {answer}".strip()


def qa_example(example: dict, prompt: CriticPrompt) -> dict:
    """A shapes example asked in the think -> boxed format."""
    return {"image": example["image"], "question": example["prompt"], "prompt": prompt.question(example["prompt"]),
            "response": target(reasoning(example, example["answer"]), example["answer"]),
            "answer": example["answer"], "kind": example["kind"]}


def critic_item(image, question: str, responses: tuple[str, str], preferred: str, prompt: CriticPrompt,
                rationale: str = "", **extra) -> dict:
    return {"image": image, "question": question, "responses": responses, "preferred": preferred,
            "prompt": prompt.judge(question, *responses), "answer": preferred,
            "response": target(rationale, preferred), **extra}


def both_orders(items: Sequence[dict], prompt: CriticPrompt) -> list[dict]:
    """Each held-out pair as given (order 0) and swapped (order 1), at rows 2k and 2k + 1."""
    swap = {"1": "2", "2": "1", TIE: TIE}
    out = []
    for k, item in enumerate(items):
        extra = {key: item[key] for key in ("kind", "qa_answer", "source") if key in item}
        out.append({**item, "pair": k, "order": 0})
        out.append(critic_item(item["image"], item["question"], item["responses"][::-1], swap[item["preferred"]],
                               prompt, pair=k, order=1, **extra))
    return out


class ShapesQATask:
    """The shapes questions (`ShapesTask`, its keyword arguments) in the think -> boxed format.

    Args:
        style / format_suffix: the prompt's format sentence (`posttrain.critic.CriticPrompt`).
    """

    def __init__(self, style: str = "short", format_suffix: str | None = None, **shapes):
        self.shapes = ShapesTask(**shapes)
        self.prompt = CriticPrompt.of(style, format_suffix=format_suffix)
        self.eval_splits = self.shapes.eval_splits
        self._examples: dict[str, list[dict]] = {}

    def examples(self, split: str) -> list[dict]:
        if split not in self._examples:
            self._examples[split] = [qa_example(e, self.prompt) for e in self.shapes.examples(split)]
        return self._examples[split]

    @staticmethod
    def is_correct(example: dict, completion: str) -> bool:
        return _REWARD(example, completion).correct


class ShapesCriticTask:
    """Critic items over the shapes questions (`ShapesTask`'s keyword arguments pass through).

    Args:
        style, judge_template, format_suffix: the prompts (`posttrain.critic.CriticPrompt`).
        tie_fraction: share of training items whose two responses are both right (worded differently), label "tie".
        remove_rationale: the SFT target keeps only the label (the paper); false: `<think>what the image shows
            </think>\\boxed{label}`.
        random_labels: share of training items whose label is a coin flip (true: every item, the judging format
            without the judging; 0.5: labels right on about 3/4 of the items, a weak judge's supervision).
    Held-out splits: `val` (critic pairs, both orders, no ties) and `qa` (the same scenes' questions).
    """

    eval_splits = ("val", "qa")

    def __init__(self, style: str = "short", judge_template: str | None = None, format_suffix: str | None = None,
                 tie_fraction: float = 0.0, remove_rationale: bool = True, random_labels: float = 0.0, **shapes):
        check(0.0 <= tie_fraction < 1.0, "data.task.tie_fraction", f"must be in [0, 1), got {tie_fraction}")
        random_labels = float(random_labels)  # true / false: every label / none
        check(0.0 <= random_labels <= 1.0, "data.task.random_labels", f"must be in [0, 1], got {random_labels}")
        self.shapes = ShapesTask(**shapes)
        self.prompt = CriticPrompt.of(style, judge_template, format_suffix)
        self.tie_fraction, self.remove_rationale, self.random_labels = tie_fraction, remove_rationale, random_labels
        self.seed = shapes.get("seed", 0)
        self._examples: dict[str, list[dict]] = {}

    def examples(self, split: str) -> list[dict]:
        check(split in ("train", *self.eval_splits), "split", f"unknown split {split!r}")
        if split not in self._examples:
            if split == "qa":
                self._examples[split] = [qa_example(e, self.prompt) for e in self.shapes.examples("val")]
            else:
                items = self.items(self.shapes.examples(split), random.Random(f"critic:{self.seed}:{split}"),
                                   ties=split == "train")
                self._examples[split] = items if split == "train" else both_orders(items, self.prompt)
        return self._examples[split]

    def items(self, examples: Sequence[dict], rng: random.Random, ties: bool) -> list[dict]:
        n = len(examples)
        tie = [ties and rng.random() < self.tie_fraction for _ in range(n)]
        first = [i % 2 == 0 for i in range(n)]  # the correct response first in half of the items, in random order
        rng.shuffle(first)
        return [self.item(e, rng, is_tie, correct_first) for e, is_tie, correct_first in zip(examples, tie, first)]

    def item(self, example: dict, rng: random.Random, tie: bool, correct_first: bool) -> dict:
        answer = example["answer"]
        right = target(reasoning(example, answer), answer)
        if tie:
            other, preferred = target(f"it is {answer}", answer), TIE
        else:
            wrong = rng.choice([c for c in answer_choices(example["kind"], self.shapes.max_count) if c != answer])
            other, preferred = target(reasoning(example, wrong), wrong), "1" if correct_first else "2"
        responses = (right, other) if correct_first else (other, right)
        if self.random_labels >= 1.0 or (self.random_labels > 0.0 and rng.random() < self.random_labels):
            preferred = rng.choice(("1", "2"))
        rationale = "" if self.remove_rationale else reasoning(example, answer)
        return critic_item(example["image"], example["prompt"], responses, preferred, self.prompt, rationale,
                           kind=example["kind"], qa_answer=answer)

    @staticmethod
    def is_correct(example: dict, completion: str) -> bool:
        return _REWARD(example, completion).correct


class WarmupTask:
    """The warm-up's training set: every QA example of `qa` plus the first `judge_items` training items of `judge`
    (a ShapesCriticTask), shuffled together; held-out splits are `qa`'s."""

    def __init__(self, qa: ShapesQATask, judge: ShapesCriticTask, judge_items: int = 200, seed: int = 0):
        check(judge_items >= 0, "data.task.judge_items", f"must be >= 0, got {judge_items}")
        self.qa, self.judge, self.judge_items, self.seed = qa, judge, judge_items, seed
        self.eval_splits = qa.eval_splits

    def examples(self, split: str) -> list[dict]:
        if split != "train":
            return self.qa.examples(split)
        mixed = list(self.qa.examples("train")) + list(self.judge.examples("train")[: self.judge_items])
        random.Random(f"warmup:{self.seed}").shuffle(mixed)
        return mixed

    @staticmethod
    def is_correct(example: dict, completion: str) -> bool:
        return _REWARD(example, completion).correct


class CriticJsonlTask:
    """Critic items from jsonl: `{"image": path relative to the file, "question", "response_1", "response_2",
    "preferred": 1 | 2 | "tie"}` per line (`*_key` map other names; `rationale_key` names an optional rationale kept
    in the SFT target when `remove_rationale` is false). Every problem stops with `DataError("<file>:<line>: ...")`.

    Args:
        train_path: training file; eval_paths: split -> file; without any, `val_fraction` of train is held out as val.
        Held-out pairs are scored in both orders.
    """

    def __init__(self, train_path: str, eval_paths: Mapping[str, str] | None = None, style: str = "paper",
                 judge_template: str | None = None, format_suffix: str | None = None, remove_rationale: bool = True,
                 image_key: str = "image", question_key: str = "question", response_1_key: str = "response_1",
                 response_2_key: str = "response_2", preferred_key: str = "preferred",
                 rationale_key: str | None = None, val_fraction: float = 0.05):
        self.prompt = CriticPrompt.of(style, judge_template, format_suffix)
        self.remove_rationale = remove_rationale
        self.fields = {"image": image_key, "question": question_key, "response_1": response_1_key,
                       "response_2": response_2_key, "preferred": preferred_key}
        if rationale_key:
            self.fields["rationale"] = rationale_key
        train = self.read(train_path)
        splits = {"train": train, **{name: self.read(path) for name, path in dict(eval_paths or {}).items()}}
        if len(splits) == 1 and val_fraction > 0:
            n_val = max(1, int(len(train) * val_fraction))
            splits = {"train": train[n_val:], "val": train[:n_val]}
        self._rows = {name: rows if name == "train" else both_orders(rows, self.prompt)
                      for name, rows in splits.items()}
        self.eval_splits = tuple(s for s in self._rows if s != "train")

    def examples(self, split: str) -> ImageExamples:
        check(split in self._rows, "split", f"unknown split {split!r}; this task has {sorted(self._rows)}")
        return ImageExamples(self._rows[split])

    def read(self, path: str) -> list[dict]:
        folder, items = os.path.dirname(os.path.abspath(path)), []
        for row, lineno in zip(read_jsonl(path, self.fields), _record_lines(path)):
            where = f"{path}:{lineno}"
            image = os.path.join(folder, row["image"])
            if not os.path.isfile(image):
                raise DataError(f"{where}: image {row['image']!r} does not exist (looked for {image})")
            preferred = row["preferred"].strip().lower()
            if preferred not in LABELS:
                raise DataError(f"{where}: {self.fields['preferred']!r} must be 1, 2 or {TIE!r}, "
                                f"got {row['preferred']!r}")
            for key in ("question", "response_1", "response_2"):
                if not row[key].strip():
                    raise DataError(f"{where}: {self.fields[key]!r} is empty")
            rationale = "" if self.remove_rationale else row.get("rationale", "")
            items.append(critic_item(image, row["question"], (row["response_1"], row["response_2"]), preferred,
                                     self.prompt, rationale, source=where))
        return items

    @staticmethod
    def is_correct(example: dict, completion: str) -> bool:
        return _REWARD(example, completion).correct
