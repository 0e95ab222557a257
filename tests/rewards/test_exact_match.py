import pytest

from posttrain.rewards import ExactMatchVerifier, Verdict, normalize_answer


@pytest.mark.parametrize("completion, answer, verdict", [
    ("red", "red", Verdict(correct=True, parsed=True)),
    ("  Red \n", "red", Verdict(correct=True, parsed=True)),
    ("Yes.", "yes", Verdict(correct=True, parsed=True)),
    ("3", " 3 ", Verdict(correct=True, parsed=True)),
    ("light   Blue", "light blue", Verdict(correct=True, parsed=True)),
    ("reds", "red", Verdict(correct=False, parsed=True)),
    ("red square", "red", Verdict(correct=False, parsed=True)),
    ("30", "3", Verdict(correct=False, parsed=True)),
    (" \n", "red", Verdict(correct=False, parsed=False)),
    (".", "", Verdict(correct=False, parsed=False)),  # an empty reference never rewards an empty completion
])
def test_exact_answer_normalises_case_whitespace_and_full_stop(completion, answer, verdict):
    assert ExactMatchVerifier(normalize=True)({"answer": answer, "prompt": "ignored"}, completion) == verdict


def test_normalize_answer():
    assert normalize_answer("  Two\tWords. ") == "two words"
    assert normalize_answer("3.5") == "3.5"
