import pytest

from posttrain.rewards import ArithmeticVerifier, BoxedVerifier, GSM8KVerifier

GSM8K_REFERENCE = "She makes 9 * 2 = $<<9*2=18>>18 every day.\n#### 18"


@pytest.mark.parametrize("completion, correct, parsed", [
    ("357", True, True), (" 357 ", True, True), ("358", False, True), ("0357", False, True), ("35 7", False, False),
    ("", False, False), ("357abc", False, False),
])
def test_arithmetic_verifier(completion, correct, parsed):
    verdict = ArithmeticVerifier()(completion, "357")
    assert (verdict.correct, verdict.parsed) == (correct, parsed)
    assert verdict.reward == float(correct)


@pytest.mark.parametrize("completion, correct, parsed", [
    ("2 * 9 = 18\n#### 18", True, True), ("#### 18.00", True, True), ("#### $18", True, True),
    ("#### 17", False, True), ("The answer is 18", False, False), ("#### eighteen", False, False), ("", False, False),
])
def test_gsm8k_verifier(completion, correct, parsed):
    verdict = GSM8KVerifier()(completion, GSM8K_REFERENCE)
    assert (verdict.correct, verdict.parsed) == (correct, parsed)


def test_gsm8k_verifier_bare_reference_and_commas():
    assert GSM8KVerifier()("#### 1,200", "1200").correct


@pytest.mark.parametrize("completion, reference, correct, parsed", [
    ("so \\boxed{0.5}", "\\frac{1}{2}", True, True), ("\\boxed{-3}", "#### -3", True, True),
    ("\\boxed{x^2}", "x^2", True, True), ("\\boxed{3}", "4", False, True), ("3", "3", False, False),
    ("\\boxed{3", "3", False, False),
])
def test_boxed_verifier(completion, reference, correct, parsed):
    verdict = BoxedVerifier()(completion, reference)
    assert (verdict.correct, verdict.parsed) == (correct, parsed)


@pytest.mark.parametrize("verifier", [ArithmeticVerifier(), GSM8KVerifier(), BoxedVerifier()])
@pytest.mark.parametrize("junk", ["\x00\x01", "#### \\boxed{", "\\boxed{\\frac{1}{0}}", "#### 1/0", "}" * 50])
def test_verifiers_never_raise(verifier, junk):
    verdict = verifier(junk, "5")
    assert not verdict.correct
