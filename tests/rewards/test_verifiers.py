import pytest

from posttrain.rewards import ArithmeticVerifier, BoxedVerifier, ExactMatchVerifier, GSM8KVerifier

GSM8K_REFERENCE = "She makes 9 * 2 = $<<9*2=18>>18 every day.\n#### 18"


@pytest.mark.parametrize("completion, correct, parsed", [
    ("357", True, True), (" 357 ", True, True), ("358", False, True), ("0357", False, True), ("35 7", False, False),
    ("", False, False), ("357abc", False, False),
])
def test_arithmetic_verifier(completion, correct, parsed):
    verdict = ArithmeticVerifier()({"answer": "357"}, completion)
    assert (verdict.correct, verdict.parsed) == (correct, parsed)
    assert verdict.reward == float(correct)


@pytest.mark.parametrize("completion, correct, parsed", [
    ("2 * 9 = 18\n#### 18", True, True), ("#### 18.00", True, True), ("#### $18", True, True),
    ("#### 17", False, True), ("The answer is 18", False, False), ("#### eighteen", False, False), ("", False, False),
])
def test_gsm8k_verifier(completion, correct, parsed):
    verdict = GSM8KVerifier()({"answer": GSM8K_REFERENCE}, completion)
    assert (verdict.correct, verdict.parsed) == (correct, parsed)


def test_gsm8k_verifier_bare_reference_and_commas():
    assert GSM8KVerifier()({"answer": "1200"}, "#### 1,200").correct


@pytest.mark.parametrize("completion, reference, correct, parsed", [
    ("so \\boxed{0.5}", "\\frac{1}{2}", True, True), ("\\boxed{-3}", "#### -3", True, True),
    ("\\boxed{x^2}", "x^2", True, True), ("\\boxed{3}", "4", False, True), ("3", "3", False, False),
    ("\\boxed{3", "3", False, False),
])
def test_boxed_verifier(completion, reference, correct, parsed):
    verdict = BoxedVerifier()({"answer": reference}, completion)
    assert (verdict.correct, verdict.parsed) == (correct, parsed)


@pytest.mark.parametrize("verifier", [ArithmeticVerifier(), GSM8KVerifier(), BoxedVerifier(), ExactMatchVerifier()])
@pytest.mark.parametrize("junk", ["\x00\x01", "#### \\boxed{", "\\boxed{\\frac{1}{0}}", "#### 1/0", "}" * 50])
def test_verifiers_never_raise(verifier, junk):
    verdict = verifier({"prompt": "2+3=", "answer": "5"}, junk)
    assert not verdict.correct


def test_exact_match_verifier_compares_stripped_text():
    assert ExactMatchVerifier()({"answer": " Paris "}, "Paris\n").correct
    assert not ExactMatchVerifier()({"answer": "Paris"}, "paris").correct


@pytest.mark.parametrize("choice, cls", [("arithmetic", ArithmeticVerifier), ("gsm8k", GSM8KVerifier),
                                         ("boxed", BoxedVerifier), ("exact_match", ExactMatchVerifier)])
def test_reward_group_builds_the_verifier_the_online_methods_receive(choice, cls, tmp_path):
    from hydra.utils import instantiate

    from tests.helpers import compose_config

    cfg = compose_config(["experiment=grpo", f"reward={choice}"], tmp_path)
    assert isinstance(instantiate(cfg.reward), cls)
    assert cfg.method.reward == cfg.reward and cfg.method.evaluator.reward == cfg.reward  # method's, not data's
    assert "verifier" not in cfg.data and "num_samples" not in cfg.data and cfg.method.num_samples == 8


def test_jsonl_prompt_data_selects_the_gsm8k_reward_unless_the_command_line_says_otherwise(tmp_path):
    from tests.helpers import compose_config

    base = ["experiment=nft", "data=prompts_jsonl", "data.task.train_path=x.jsonl"]
    assert compose_config(base, tmp_path).reward._target_ == "posttrain.rewards.GSM8KVerifier"
    assert compose_config([*base, "reward=boxed"], tmp_path).reward._target_ == "posttrain.rewards.BoxedVerifier"
