"""SPARK's warm-up task: the solve problems plus labelled examples of each format, none from held-out problems."""
from datamodules.tasks.arithmetic import ArithmeticTask
from datamodules.tasks.spark_formats import SparkFormatsTask
from posttrain.rewards.recycling import KINDS, PAIRWISE, POINTWISE, REFLECT, TEMPLATES

ARITH = {"operations": ["+"], "digits": [1, 2], "train_size": 50, "val_size": 20, "test_ood_size": 0}


def test_formats_are_labelled_and_held_out_problems_stay_out():
    task = SparkFormatsTask(format_size=30, seed=3, **ARITH)
    train = task.examples("train")
    solve = ArithmeticTask(seed=3, **ARITH).examples("train")
    assert train[:50] == solve and len(train) == 50 + 3 * 30
    formats = train[50:]
    assert {e["kind"] for e in formats} == set(KINDS)
    truth = {e["prompt"]: e["answer"] for e in solve}
    held_out = {e["prompt"] for e in task.examples("val")}
    for e in formats:
        question = next(q for q in truth if q in e["prompt"])
        assert question not in held_out
        rest = e["prompt"].split(question, 1)[1]
        if e["kind"] == POINTWISE:
            answer = rest.split("?")[0].split(" ")[0].rstrip("?")
            assert e["answer"] == ("Y" if answer == truth[question] else "N"), e
        elif e["kind"] == PAIRWISE:
            assert e["answer"] in "AB" and truth[question] in rest
        else:
            assert e["answer"] == truth[question] and e["response"] == e["answer"]
    assert any(e["prompt"].startswith("R:") and "[" in e["prompt"] for e in formats if e["kind"] == REFLECT)
    assert sum(e["answer"] == "Y" for e in formats if e["kind"] == POINTWISE) not in (0, 30)


def test_random_labels_keep_the_format():
    task = SparkFormatsTask(format_size=40, judge_labels="random", seed=0, **ARITH)
    pointwise = [e for e in task.examples("train") if e.get("kind") == POINTWISE]
    assert {e["answer"] for e in pointwise} == {"Y", "N"}
    assert all(any(e["prompt"].startswith(t.split("{")[0]) for t in TEMPLATES[POINTWISE]) for e in pointwise)
