import math

import pytest

from datamodules.tasks import ArithmeticPairTask
from datamodules.tasks.arithmetic_pairs import WRONG_KINDS, gold_score, wrong_answer
from posttrain.utils.config import ConfigError


def make(**kwargs):
    settings = dict(digits=[1, 2], ood_digits=[3, 3], train_size=2000, val_size=300, test_ood_size=300, seed=1)
    return ArithmeticPairTask(**{**settings, **kwargs})


def test_gold_score():
    assert gold_score("42", 42) == 0 and gold_score(" 40 ", 42) == -2 and gold_score("-3", 2) == -5
    assert gold_score("4a", 42) == gold_score("", 42) == -math.inf


@pytest.mark.parametrize("kind", WRONG_KINDS)
def test_every_kind_of_wrong_answer_is_wrong(kind):
    import random

    rng = random.Random(0)
    for truth in (0, 7, 42, 105, -13):
        answer = wrong_answer(kind, truth, rng)
        assert answer is None or gold_score(answer, truth) < 0
    assert wrong_answer("digit_swap", 5, rng) is None and wrong_answer("digit_swap", 11, rng) is None


def test_held_out_pairs_are_gold_ordered_and_graded():
    task = make()
    for split in ("val", "test_ood"):
        pairs = task.examples(split)
        assert all(gold_score(e["chosen"], _truth(e)) > gold_score(e["rejected"], _truth(e)) for e in pairs)
        assert all(e["chosen_score"] > e["rejected_score"] and not e["noisy"] for e in pairs)
        correct = sum(e["chosen_score"] == 0 for e in pairs) / len(pairs)
        assert 0.4 < correct < 0.6  # correct_fraction 0.5; the rest are graded wrong-vs-wrong pairs
        assert any(e["rejected_score"] == -math.inf for e in pairs) and any(-5 < e["rejected_score"] < 0 for e in pairs)


def test_label_noise_flips_train_pairs_only_at_its_rate():
    task = make(label_noise=0.2)
    train = task.examples("train")
    flipped = [e for e in train if e["chosen_score"] < e["rejected_score"]]
    assert [e["noisy"] for e in train] == [e in flipped for e in train]
    assert abs(len(flipped) / len(train) - 0.2) < 0.03  # 3 standard errors at n = 2000
    assert not any(e["chosen_score"] < e["rejected_score"] for e in make(label_noise=0.0).examples("train"))


def test_splits_are_seeded_and_disjoint():
    task, again = make(), make()
    assert task.examples("train") == again.examples("train") and task.examples("val") == again.examples("val")
    train = {e["prompt"] for e in task.examples("train")}
    assert not train & {e["prompt"] for e in task.examples("val")}
    assert all(len(e["prompt"].split("+")[0]) == 3 for e in task.examples("test_ood"))
    assert task.examples("train") != make(seed=2).examples("train")
    assert len(make(pairs_per_problem=3).examples("val")) == 900


def test_bad_settings_name_the_key():
    for kwargs, key in [({"label_noise": 0.5}, "data.task.label_noise"),
                        ({"correct_fraction": 1.5}, "data.task.correct_fraction"),
                        ({"wrong_kinds": {"typo": 1.0}}, "data.task.wrong_kinds"),
                        ({"wrong_kinds": {"malformed": 1.0}}, "data.task.wrong_kinds")]:
        with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
            make(**kwargs)


def _truth(example):
    a, b = example["prompt"][:-1].split("+")
    return int(a) + int(b)


@pytest.mark.parametrize("kinds", [{"off_by_one": 1.0}, {"off_by_ten": 1.0}, {"digit_swap": 1.0},
                                   {"off_by_one": 1.0, "malformed": 0.0}])
def test_kinds_whose_wrong_answers_always_tie_are_a_config_error(kinds):
    # before the check, wrong-vs-wrong pair generation retried forever; the alarm turns a hang into a failure
    import signal

    def hang(*_):
        raise TimeoutError("pair generation did not stop")

    previous = signal.signal(signal.SIGALRM, hang)
    signal.alarm(20)
    try:
        with pytest.raises(ConfigError, match=r"data\.task\.wrong_kinds"):
            make(wrong_kinds=kinds, train_size=50, val_size=20, test_ood_size=20)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
    assert make(wrong_kinds=kinds, correct_fraction=1.0, train_size=20, val_size=5, test_ood_size=5).examples("val")
    assert make(wrong_kinds={"digit_swap": 1.0, "nearby": 1.0}, train_size=20, val_size=5,
                test_ood_size=5).examples("val")
