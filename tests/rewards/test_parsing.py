import json
import os
from fractions import Fraction

import pytest

from posttrain.rewards import answers_match, normalize_number, parse_boxed, parse_hash_answer
from tests.helpers import SHARED

GSM8K_TEST = os.path.join(SHARED, "data", "gsm8k", "test.jsonl")


@pytest.mark.parametrize("text, value", [
    ("42", Fraction(42)), ("+42", Fraction(42)), ("-42", Fraction(-42)), ("\u221242", Fraction(-42)),
    ("1,234", Fraction(1234)), ("1,234,567.50", Fraction(123456750, 100)), ("007", Fraction(7)),
    ("2.50", Fraction(5, 2)), ("2.", Fraction(2)), (".5", Fraction(1, 2)), ("18.", Fraction(18)),
    ("$18", Fraction(18)), ("\\$1,000", Fraction(1000)), ("50%", Fraction(50)), ("50\\%", Fraction(50)),
    ("3/4", Fraction(3, 4)), ("-3/4", Fraction(-3, 4)), ("\\frac{3}{4}", Fraction(3, 4)),
    ("\\dfrac{10}{4}", Fraction(5, 2)), ("-\\frac{1}{2}", Fraction(-1, 2)), ("1e3", Fraction(1000)),
    ("5 \\text{ dollars}", Fraction(5)), (" 12 ", Fraction(12)), ("0.000", Fraction(0)), ("-0", Fraction(0)),
])
def test_normalize_number(text, value):
    assert normalize_number(text) == value


@pytest.mark.parametrize("text", ["", "   ", "abc", "1/0", "\\frac{1}{0}", "1/2/3", "12abc", "--3", "1.2.3", "x=5",
                                  "\\frac{a}{b}", "$", "."])
def test_normalize_number_rejects_without_raising(text):
    assert normalize_number(text) is None


@pytest.mark.parametrize("a, b", [("1,000", "1000"), ("2.50", "2.5"), ("0.5", "1/2"), ("\\frac{1}{2}", ".5"),
                                  ("+3", "3"), ("$18.00", "18")])
def test_answers_match_numerically(a, b):
    assert answers_match(a, b)


def test_answers_match_strings_and_near_misses():
    assert answers_match("x + 1", "x+1")
    assert not answers_match("2.51", "2.5")
    assert not answers_match("-3", "3")
    assert not answers_match("12", "1,2,3")


@pytest.mark.parametrize("text, answer", [
    ("so the total is 9.\n#### 18", "18"), ("#### 1,234", "1,234"), ("####-5", "-5"),
    ("first #### 3 then\n#### 4", "4"), ("#### 7 \nextra", "7"),
])
def test_parse_hash_answer(text, answer):
    assert parse_hash_answer(text) == answer


@pytest.mark.parametrize("text", ["no marker", "#### ", "### 5", ""])
def test_parse_hash_answer_missing(text):
    assert parse_hash_answer(text) is None


@pytest.mark.parametrize("text, answer", [
    ("the answer is \\boxed{42}.", "42"), ("\\boxed{\\frac{1}{2}}", "\\frac{1}{2}"),
    ("\\boxed{1} then \\boxed{2}", "2"), ("\\boxed{ {a}+{b} }", "{a}+{b}"), ("\\fbox{3}", "3"),
])
def test_parse_boxed(text, answer):
    assert parse_boxed(text) == answer


@pytest.mark.parametrize("text", ["\\boxed{", "\\boxed{12", "\\boxed{}", "no box", "boxed{3}"])
def test_parse_boxed_missing_or_unclosed(text):
    assert parse_boxed(text) is None


@pytest.mark.skipif(not os.path.isfile(GSM8K_TEST), reason=f"{GSM8K_TEST} absent (../shared is not part of a clone)")
def test_every_gsm8k_reference_answer_parses_to_a_number():
    with open(GSM8K_TEST, encoding="utf-8") as handle:
        answers = [json.loads(line)["answer"] for line in handle if line.strip()]
    assert len(answers) == 1319
    failures = [(i, a[-40:]) for i, a in enumerate(answers)
                if parse_hash_answer(a) is None or normalize_number(parse_hash_answer(a)) is None]
    assert not failures, failures[:5]
