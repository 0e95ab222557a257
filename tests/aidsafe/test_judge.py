"""The violation scorer: the rule by default, a judge chat model when `method.judge` is set (strict Yes/No parser,
unparseable verdicts counted), and the ranking of preference pairs (ties dropped)."""
import pytest

from posttrain.agents import HFChatModel, ScriptedChatModel
from posttrain.aidsafe.judge import ChatJudge, RuleScorer, parse_verdict
from posttrain.aidsafe.prompts import ReplyError
from posttrain.aidsafe.world import PolicyBook, sft_target
from posttrain.models import tiny_llama
from tests.agents.tiny_chat import save_tiny_chat_model

BOOK = PolicyBook()


def test_verdicts_are_parsed_strictly():
    assert parse_verdict(" Yes, it helps with poison") == 1.0 and parse_verdict("no.") == 0.0
    assert parse_verdict("0.25") == 0.25 and parse_verdict("1") == 1.0
    for bad in ("Yesterday", "The answer is yes", "1.5", "", "0.3 maybe"):
        with pytest.raises(ReplyError):
            parse_verdict(bad)


def test_scripted_judge_scores_and_counts_unparseable_replies():
    replies = {"a": "Yes", "b": "No, it refuses", "c": "0.7", "d": "I cannot judge this"}

    def respond(messages, rng):
        assert "### POLICIES" in messages[-1]["content"] and "P1" in messages[-1]["content"]
        return replies[messages[-1]["content"].split("### RESPONSE\n")[1].split("\n")[0]]

    judge = ChatJudge(ScriptedChatModel(respond), BOOK.text)
    assert judge(["q"] * 4, ["a", "b", "c", "d"]) == [1.0, 0.0, 0.7, None]
    assert judge.errors == 1 and judge.calls == 4


def test_tiny_hf_judge_never_crashes(tmp_path):
    agent = HFChatModel(name_or_path=save_tiny_chat_model(tmp_path / "chat", max_positions=2048), batch_size=2)
    judge = ChatJudge(agent, "P1: no poison", max_new_tokens=3)
    scores = judge(["poison", "bake"], ["ANSWER: help poison", "ANSWER: help bake"])
    assert len(scores) == 2 and judge.errors == sum(s is None for s in scores)  # random weights: mostly None


def test_pairs_rank_by_violation_then_faithfulness_and_drop_ties():
    from lightning_modules.aidsafe import PreferencePairsModule

    model, tokenizer = tiny_llama(hidden_size=16, num_layers=1, num_heads=2, intermediate_size=32)
    module = PreferencePairsModule(model, tokenizer, mode="sampling")
    assert isinstance(module.violation, RuleScorer)
    module.on_predict_start()
    query = "poison and bake"
    safe = sft_target(BOOK.required_thoughts(query), "help bake; refuse poison")
    bare = sft_target([], "help bake; refuse poison")  # same violation (0), less faithful
    unsafe = sft_target([], "help bake, poison")
    v = module.violation([query] * 3, [safe, bare, unsafe])
    assert v[0] == v[1] == 0 and v[2] == 0.5
    pair = module.pair(query, unsafe, safe, "", v[2], v[0])  # sampling: swapped
    assert (pair["chosen"], pair["rejected"]) == (safe, unsafe)
    pair = module.pair(query, bare, safe, "", 0.0, 0.0)  # tie on violation: the more faithful side chosen
    assert pair["chosen"] == safe and pair["chosen_faithfulness"] > pair["rejected_faithfulness"]
    assert module.pair(query, safe, safe, "", 0.0, 0.0) is None and module.dropped["tied"] == 1
    assert module.pair(query, safe, unsafe, "", 0.0, None) is None and module.dropped["unjudged"] == 1
    module.mode = "belief"  # y⁻ must rank below y⁺, never swapped
    assert module.pair(query, unsafe, safe, "b", 0.5, 0.0) is None and module.dropped["inverted"] == 1
    judged = PreferencePairsModule(model, tokenizer, mode="sampling",
                                   judge=ScriptedChatModel(lambda messages, rng: "No"))
    assert judged.violation(["q"], ["x"]) == [0.0]


def test_ties_can_be_kept():
    from lightning_modules.aidsafe import PreferencePairsModule

    model, tokenizer = tiny_llama(hidden_size=16, num_layers=1, num_heads=2, intermediate_size=32)
    module = PreferencePairsModule(model, tokenizer, mode="sampling", keep_ties=True)
    module.on_predict_start()
    assert module.pair("poison", "ANSWER: refuse poison", "ANSWER: refuse poison", "", 0.0, 0.0) is not None
    assert module.tied_kept == 1 and module.dropped["tied"] == 0


def test_a_misconfigured_judge_names_its_key():
    from posttrain.agents import OpenAIChatModel, build_agent
    from posttrain.utils.config import ConfigError

    with pytest.raises(ConfigError, match=r"^method\.judge\.name_or_path"):
        build_agent({"_target_": "posttrain.agents.HFChatModel"}, key="method.judge")
    judge = ChatJudge(OpenAIChatModel(base_url="http://127.0.0.1:9/v1", model="m", max_retries=0, timeout=2), "P")
    with pytest.raises(ConfigError, match=r"^method\.judge\.base_url: cannot reach"):
        judge(["q"], ["c"])
