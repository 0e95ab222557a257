"""experiment=llava_critic_r1's optional arms and ablations are settings of the same run: the format-only RL arm
(`+stage@stages.format_only=critic_format_only`) is the critic GRPO stage with reward.alpha = 0 and nothing else
changed, from the same start; the α and rationale ablations reach every arm that uses them."""
from hydra.utils import instantiate
from omegaconf import OmegaConf

from posttrain.pipeline import plan
from posttrain.rewards.parsing import parse_boxed
from tests.helpers import compose_config

FORMAT_ONLY = ["experiment=llava_critic_r1", "+stage@stages.format_only=critic_format_only"]


def resolved(node):
    return OmegaConf.to_container(node, resolve=True)


def test_format_only_arm_is_the_critic_grpo_stage_with_alpha_zero(tmp_path):
    cfg = compose_config(FORMAT_ONLY, tmp_path)
    arm, main = resolved(cfg.stages.format_only.method), resolved(cfg.method)
    assert arm["reward"]["alpha"] == 0.0 and main["reward"]["alpha"] == 0.9
    assert {k: v for k, v in arm.items() if k != "reward"} == {k: v for k, v in main.items() if k != "reward"}
    assert cfg.stages.format_only.start == "warmup"
    assert [p.stage.key for p in plan(cfg)] == ["warmup", "main", "critic_sft", "policy_grpo", "format_only"]
    reward = instantiate(cfg.stages.format_only.method.reward)
    formatted_wrong = reward({"answer": "1"}, "<think>x</think>\\boxed{2}")
    assert formatted_wrong.reward == 1.0 and not formatted_wrong.correct  # the format alone is rewarded
    assert reward({"answer": "1"}, "\\boxed{1}").reward == 0.0


def test_alpha_and_rationale_ablations_reach_the_arms(tmp_path):
    cfg = compose_config([*FORMAT_ONLY, "reward.alpha=0.5", "data.task.remove_rationale=false"], tmp_path)
    assert resolved(cfg.method)["reward"]["alpha"] == 0.5
    assert resolved(cfg.stages.policy_grpo.method)["reward"]["alpha"] == 0.5
    assert resolved(cfg.stages.format_only.method)["reward"]["alpha"] == 0.0  # the arm's own, whatever α is
    assert resolved(cfg.stages.critic_sft.data)["task"]["remove_rationale"] is False


def test_warmup_judging_items_have_true_labels_and_a_rationale(tmp_path):
    """The default base judges weakly: its warm-up's judging items carry the true label after what the image shows
    (`<think>square red</think>\\boxed{1}`), so it has seen the comparison, not only the format."""
    cfg = compose_config(["experiment=llava_critic_r1", "stages.warmup.data.task.judge.train_size=40",
                          "stages.warmup.data.task.judge_items=40", "stages.warmup.data.task.qa.train_size=20"],
                         tmp_path)
    task = instantiate(cfg.stages.warmup.data.task)
    judged = [e for e in task.examples("train") if "responses" in e]
    assert len(judged) == 40 and len(task.examples("train")) == 60
    for e in judged:
        right = e["responses"][int(e["preferred"]) - 1]
        assert parse_boxed(right) == e["qa_answer"]  # the label names the right response
        shape = e["question"].rstrip("?").split()[-1]
        assert e["response"] == f"<think>{shape} {e['qa_answer']}</think>\\boxed{{{e['preferred']}}}"
