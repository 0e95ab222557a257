"""LLaVA-Critic-R1's reward α·r_pref + (1 − α)·r_format, computed by hand."""
import pytest

from posttrain.rewards.think_boxed import ThinkBoxedReward, follows_format
from posttrain.utils.config import ConfigError

ITEM = {"answer": "2"}


@pytest.mark.parametrize("completion, formatted", [
    ("<think>red vs blue</think>\\boxed{2}", True),
    ("<think>\nmulti\nline\n</think> so \\boxed{2}", True),         # DOTALL
    ("< think >a</ think > \\boxed{2}", True),                       # spaces around < / > are stripped first
    ("<think>a</think>\\boxed{2} and more", False),                  # the whole string must match
    ("\\boxed{2}", False),                                          # no monologue
    ("<think>a</think>2", False),                                   # no box
    ("I think <think>a</think>\\boxed{2}", False),                   # text before <think>
    ("<think>a</think>\\boxed{2", False),                            # unclosed box
])
def test_format_is_a_full_match_after_stripping_spaces_around_tag_characters(completion, formatted):
    assert follows_format(completion) is formatted


@pytest.mark.parametrize("completion, reward, correct, parsed", [
    ("<think>x</think>\\boxed{2}", 0.9 * 1 + 0.1 * 1, True, True),
    ("<think>x</think>\\boxed{1}", 0.1, False, True),                 # format only
    ("\\boxed{2}", 0.9, True, True),                                  # answer only
    ("the answer is 2", 0.0, False, False),                           # no box: not parsed, wrong
    ("<think>x</think>\\boxed{1} \\boxed{ 2 }", 0.9 + 0.1, True, True),   # several boxes: the last one counts
    ("<think>x</think>\\boxed{Response 2}", 0.1, False, True),          # the reference string is "2"
])
def test_reward_is_alpha_pref_plus_one_minus_alpha_format(completion, reward, correct, parsed):
    verdict = ThinkBoxedReward(alpha=0.9)(ITEM, completion)
    assert verdict.reward == pytest.approx(reward)
    assert verdict.correct is correct and verdict.parsed is parsed


def test_nested_braces_and_normalised_answers():
    reward = ThinkBoxedReward(alpha=0.5)
    assert reward({"answer": "\\frac{1}{2}"}, "<think>t</think>\\boxed{\\frac{1}{2}}").reward == 1.0
    assert reward({"answer": "red"}, "<think>t</think>\\boxed{ Red. }").reward == 1.0
    assert reward({"answer": "red"}, "<think>t</think>\\boxed{}").reward == 0.5  # empty box: format only
    assert ThinkBoxedReward(alpha=1.0)(ITEM, "<think>t</think>\\boxed{1}").reward == 0.0


def test_alpha_outside_the_unit_interval_is_named():
    with pytest.raises(ConfigError, match="reward.alpha"):
        ThinkBoxedReward(alpha=1.5)
