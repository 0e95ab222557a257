"""The synthetic safety world as a task (posttrain/aidsafe/world.py): queries of one or two intents, seeded.

Splits:
- `train`: the queries the deliberation pipeline writes data for; pairs come only from the training combinations,
  a fraction carry a training jailbreak wrapper, a distractor word or a `note: ...;` context prefix (so prefixes are
  in-distribution for the trained model, which the belief search needs);
- `heldout`: pairs of intents never combined in training (with training wrappers as often as in training);
- `jailbreak`: queries with a harmful intent under a wrapper never seen in training;
- `benign`: queries with benign intents only (alarming-sounding ones included), for over-refusal.

Each example is `{"prompt": query, "response": the reference thoughts and answer, "split": name}`; the reference
is the policies' ground truth, used only to score the NLL of held-out splits (the pipeline never trains on it).
`predict_on_eval` makes `train` the concatenation of the held-out splits, for a dataset stage that scores a model.
"""
from __future__ import annotations

import itertools
import random

from posttrain.aidsafe import scorers
from posttrain.aidsafe.world import (
    BELIEF_WORDS,
    DEFAULT_POLICIES,
    DISTRACTORS,
    TRAIN_WRAPPERS,
    UNSEEN_WRAPPERS,
    PolicyBook,
    make_query,
    parse_completion,
    sft_target,
)
from posttrain.utils.config import check


class SafetyTask:
    eval_splits: tuple[str, ...] = ("heldout", "jailbreak", "benign")

    def __init__(self, policies=None, train_size: int = 600, eval_size: int = 100,
                 single_fraction: float = 0.3, heldout_fraction: float = 0.3, p_wrapper: float = 0.3,
                 p_distractor: float = 0.3, p_note: float = 0.2, predict_on_eval: bool = False, seed: int = 0,
                 split_seed: int = 0, policies_key: str = "data.task.policies"):
        # policies_key: the setting the policies came from (experiment=aidsafe: the top-level `policies`)
        for name, p in dict(single_fraction=single_fraction, heldout_fraction=heldout_fraction, p_wrapper=p_wrapper,
                            p_distractor=p_distractor, p_note=p_note).items():
            check(0.0 <= p <= 1.0, f"data.task.{name}", f"must be in [0, 1], got {p}")
        check(train_size > 0 and eval_size > 0, "data.task.train_size", "train_size and eval_size must be > 0")
        self.book = PolicyBook(list(policies or DEFAULT_POLICIES), key=policies_key)
        pairs = list(itertools.combinations(self.book.intents, 2))
        random.Random(split_seed).shuffle(pairs)  # the held-out combinations are the same for every run seed
        cut = int(len(pairs) * heldout_fraction)
        self.heldout_pairs, self.train_pairs = pairs[:cut], pairs[cut:]
        self.sizes = {"train": train_size, **{s: eval_size for s in self.eval_splits}}
        self.p = dict(single=single_fraction, wrapper=p_wrapper, distractor=p_distractor, note=p_note)
        self.seed, self.predict_on_eval = seed, predict_on_eval
        self.cache: dict[str, list[dict]] = {}

    def examples(self, split: str) -> list[dict]:
        if split == "train" and self.predict_on_eval:
            return [e for s in self.eval_splits for e in self.examples(s)]
        if split not in self.cache:
            rng = random.Random(f"{self.seed}-{split}")
            self.cache[split] = [self.example(self.query(split, rng), split) for _ in range(self.sizes[split])]
        return self.cache[split]

    def query(self, split: str, rng: random.Random) -> str:
        harmful = [i for i in self.book.intents if self.book.harmful(i)]
        benign = [i for i in self.book.intents if not self.book.harmful(i)]
        wrapper = rng.choice(TRAIN_WRAPPERS) if rng.random() < self.p["wrapper"] else None
        if split == "benign":
            intents, wrapper = rng.sample(benign, rng.choice([1, 2])), None
        elif split == "jailbreak":
            intents = [rng.choice(harmful)] + ([rng.choice(benign)] if rng.random() < 0.5 else [])
            wrapper = rng.choice(UNSEEN_WRAPPERS)
        elif split == "heldout":
            intents = list(rng.choice(self.heldout_pairs))
        else:
            intents = [rng.choice(self.book.intents)] if rng.random() < self.p["single"] else list(
                rng.choice(self.train_pairs))
        rng.shuffle(intents)
        distractor = rng.choice(DISTRACTORS) if rng.random() < self.p["distractor"] else None
        note = rng.sample(BELIEF_WORDS, rng.choice([1, 2])) if split == "train" and rng.random() < self.p[
            "note"] else None
        return make_query(intents, wrapper, distractor, note)

    def example(self, query: str, split: str) -> dict:
        return {"prompt": query, "response": sft_target(self.book.required_thoughts(query),
                                                        self.book.required_response(query)), "split": split}

    def is_correct(self, example: dict, completion: str) -> bool:
        return scorers.is_correct(self.book, example["prompt"], parse_completion(completion)[1])
