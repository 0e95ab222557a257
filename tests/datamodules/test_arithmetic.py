import pytest

from datamodules.tasks import ArithmeticTask
from datamodules.tasks.arithmetic import has_carry
from posttrain.utils.config import ConfigError


def test_splits_are_seeded_disjoint_and_correct():
    task = ArithmeticTask(operations=["+", "-", "*"], digits=[1, 2], ood_digits=[3, 3], train_size=500,
                          val_size=100, test_ood_size=50, seed=3)
    again = ArithmeticTask(operations=["+", "-", "*"], digits=[1, 2], ood_digits=[3, 3], train_size=500,
                           val_size=100, test_ood_size=50, seed=3)
    assert task.examples("train") == again.examples("train")
    train = {e["prompt"] for e in task.examples("train")}
    assert len(train) == 500 and not train & {e["prompt"] for e in task.examples("val")}
    for e in task.examples("train") + task.examples("test_ood"):
        assert str(eval(e["prompt"][:-1])) == e["answer"] == e["response"]
    for e in task.examples("test_ood"):
        a, b = e["prompt"][:-1].replace("*", "+").replace("-", "+").split("+")
        assert len(a) == len(b) == 3


def test_is_correct_strips_whitespace():
    assert ArithmeticTask.is_correct({"answer": "42"}, " 42\n")
    assert not ArithmeticTask.is_correct({"answer": "42"}, "420")


def test_bad_settings_name_the_key():
    with pytest.raises(ConfigError, match="data.task.operations"):
        ArithmeticTask(operations=["/"])
    with pytest.raises(ConfigError, match="data.task.digits"):
        ArithmeticTask(digits=[3, 1])
    with pytest.raises(ConfigError, match="data.task"):
        ArithmeticTask(digits=[1, 1], train_size=1000, val_size=10)


def test_retain_split_is_task_a_val_and_outside_task_a_train():
    task_a = ArithmeticTask(operations=["+"], digits=[1, 2], train_size=300, val_size=50, test_ood_size=0, seed=5)
    task_b = ArithmeticTask(operations=["-"], digits=[2, 2], ood_digits=[1, 1], train_size=100, val_size=20,
                            test_ood_size=10, seed=5, retain_operations=["+"], retain_digits=[1, 2], retain_size=40)
    assert task_b.eval_splits == ("val", "test_ood", "retain")
    retain = task_b.examples("retain")
    assert retain == task_a.examples("val")[:40]  # the warm-up's held-out A problems
    assert not {e["prompt"] for e in retain} & {e["prompt"] for e in task_a.examples("train")}
    assert all("+" in e["prompt"] and str(eval(e["prompt"][:-1])) == e["answer"] for e in retain)
    assert all("-" in e["prompt"] for e in task_b.examples("train"))
    assert ArithmeticTask(train_size=10, val_size=5, test_ood_size=5).eval_splits == ("val", "test_ood")


def test_bad_retain_settings_name_the_key():
    with pytest.raises(ConfigError, match="data.task.retain_operations"):
        ArithmeticTask(train_size=10, val_size=5, test_ood_size=5, retain_operations=["/"])
    with pytest.raises(ConfigError, match="data.task.retain_size"):
        ArithmeticTask(train_size=10, val_size=5, test_ood_size=5, retain_operations=["+"], retain_size=-1)


def test_carries_filter_and_carry_free_retain_split():
    assert has_carry(15, 5) and has_carry(95, 7) and not has_carry(12, 34) and not has_carry(0, 9)
    task = ArithmeticTask(digits=[1, 2], ood_digits=[1, 1], train_size=200, val_size=50, test_ood_size=20, seed=1,
                          carries="only", retain_operations=["+"], retain_carries="none", retain_size=30)
    for split in ("train", "val", "test_ood"):
        assert all(has_carry(*map(int, e["prompt"][:-1].split("+"))) for e in task.examples(split))
    assert not any(has_carry(*map(int, e["prompt"][:-1].split("+"))) for e in task.examples("retain"))
    with pytest.raises(ConfigError, match="data.task.carries"):
        ArithmeticTask(operations=["-"], carries="only")


def test_dev_split_is_disjoint_and_leaves_the_other_splits_unchanged():
    kwargs = dict(operations=["+"], digits=[1, 2], train_size=300, val_size=50, test_ood_size=20, seed=4)
    plain, with_dev = ArithmeticTask(**kwargs), ArithmeticTask(**kwargs, dev_size=60)
    for split in ("train", "val", "test_ood"):
        assert with_dev.examples(split) == plain.examples(split)
    dev = {e["prompt"] for e in with_dev.examples("dev")}
    assert len(dev) == 60
    assert not dev & {e["prompt"] for e in with_dev.examples("train") + with_dev.examples("val")}
    assert with_dev.eval_splits == ("val", "test_ood")  # dev is validated on only where a datamodule asks for it
    with pytest.raises(ConfigError, match="data.task.dev_size"):
        ArithmeticTask(train_size=10, val_size=5, test_ood_size=5, dev_size=-1)


def test_retain_keep_filters_a_mixed_task_a_to_its_kept_operations():
    ops = ["+", "+", "+", "-"]
    task_a = ArithmeticTask(operations=ops, digits=[1, 2], train_size=300, val_size=80, test_ood_size=0, seed=2)
    task_b = ArithmeticTask(operations=["-"], digits=[2, 2], ood_digits=[1, 1], train_size=50, val_size=10,
                            test_ood_size=10, seed=2, retain_operations=ops, retain_digits=[1, 2], retain_size=80,
                            retain_keep=["+"])
    expected = [e for e in task_a.examples("val") if "+" in e["prompt"]]
    assert 0 < len(expected) < 80 and task_b.examples("retain") == expected
    with pytest.raises(ConfigError, match="data.task.retain_keep"):
        ArithmeticTask(train_size=10, val_size=5, test_ood_size=5, retain_operations=["+"], retain_keep=["-"])


def test_worked_addition_by_hand():
    from datamodules.tasks.arithmetic import worked_addition

    # 7+8 = 15 (carry 1), 4+3+1 = 8 (carry 0)
    assert worked_addition(47, 38) == "7+8=15 carry 1, 4+3+1=8 carry 0, so 47+38=85"
    # the shorter operand's missing digit is 0, the last carry is written out and the sum gains a digit
    assert worked_addition(347, 85) == "7+5=12 carry 1, 4+8+1=13 carry 1, 3+0+1=4 carry 0, so 347+85=432"
    assert worked_addition(50, 50) == "0+0=0 carry 0, 5+5=10 carry 1, so 50+50=100"
    with pytest.raises(ConfigError, match="a, b"):
        worked_addition(-1, 3)


def test_worked_format_answers_are_the_working_and_only_for_addition():
    task = ArithmeticTask(digits=[2, 2], ood_digits=[3, 3], train_size=50, val_size=20, test_ood_size=10,
                          response_format="worked")
    for e in task.examples("val") + task.examples("test_ood"):
        a, b = e["prompt"][:-1].split("+")
        assert e["response"] == e["answer"] and e["answer"].endswith(f", so {a}+{b}={int(a) + int(b)}")
        assert 40 <= len(e["answer"]) <= 68  # tens of tokens: 2 columns (3 for test_ood) and the restated sum
    # the problems are those of the plain format with the same seed
    plain = ArithmeticTask(digits=[2, 2], ood_digits=[3, 3], train_size=50, val_size=20, test_ood_size=10)
    assert [e["prompt"] for e in plain.examples("train")] == [e["prompt"] for e in task.examples("train")]
    with pytest.raises(ConfigError, match="data.task.response_format"):
        ArithmeticTask(response_format="verbose")
    with pytest.raises(ConfigError, match="data.task.response_format"):
        ArithmeticTask(operations=["*"], response_format="worked")


def test_an_unknown_operation_names_the_key():
    with pytest.raises(ConfigError, match=r"data\.task\.operations"):
        ArithmeticTask(operations=["/"], train_size=10, val_size=5, test_ood_size=5)
