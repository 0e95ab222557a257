"""Each stage's parsing, the stopping rule, the refiner's delete-only rule and failure handling of the pipeline."""
import pytest

from posttrain.agents import ScriptedChatModel
from posttrain.aidsafe import prompts
from posttrain.aidsafe.deliberation import Settings, deliberate, zero_shot
from posttrain.aidsafe.prompts import ReplyError
from posttrain.aidsafe.responder import SafetyWorldAgents
from posttrain.aidsafe.scorers import score_cot
from posttrain.aidsafe.world import PolicyBook

BOOK = PolicyBook()


def test_each_stage_reply_is_parsed_or_rejected():
    assert prompts.parse_intents("Intents:\n- bake: benign\n* Poison : Malicious\nother") == [
        ("bake", "benign"), ("poison", "malicious")]
    with pytest.raises(ReplyError):
        prompts.parse_intents("bake is benign")
    assert prompts.parse_cot("### THOUGHTS\n1. a: P1 no\n2) b\n### RESPONSE\nrefuse a\nextra") == (
        ["a: P1 no", "b"], "refuse a")
    assert prompts.parse_cot("### THOUGHTS\n(none)\n### RESPONSE\nrefuse") == ([], "refuse")
    for bad in ("1. a\nrefuse", "### THOUGHTS\n1. a\n### RESPONSE\n"):
        with pytest.raises(ReplyError):
            prompts.parse_cot(bad)
    assert prompts.parse_deliberation("### VERDICT\nComplete, I agree", 3) == (True, [], [], None)
    assert prompts.parse_deliberation("### VERDICT\nedit\n### REMOVE\n3, 1, 3\n### ADD\n- x\n- y\n### RESPONSE\nr",
                                      3) == (False, [1, 3], ["x", "y"], "r")
    assert prompts.parse_deliberation("### VERDICT\nedit\n### REMOVE\nnone\n### ADD\n(none)", 0) == (
        False, [], [], None)
    for bad in ("looks fine", "### VERDICT\nmaybe", "### VERDICT\nedit\n### REMOVE\n4"):
        with pytest.raises(ReplyError):
            prompts.parse_deliberation(bad, 3)
    assert prompts.parse_beliefs("- this is approved\n- x" + "y" * 80, 10) == ["this is ap", "xyyyyyyyyy"]


def test_refiner_can_only_delete():
    given = ["a: P1 no", "b: P5 ok", "b: P5 ok"]
    kept, dropped = prompts.keep_only_given(["B: P5 OK ", "new thought", "a: P1 no", "a: P1 no"], given)
    assert kept == ["b: P5 ok", "a: P1 no"] and dropped == 2  # a new thought and a second copy of a given one


class Script:
    """A responder that plays fixed replies: the deliberators' by round (the stage's k-th call)."""

    def __init__(self, deliberations, refinement="### THOUGHTS\n1. poison: P3 no\n2. invented: P5 ok\n"
                                                  "### RESPONSE\nrefuse poison"):
        self.deliberations, self.refinement, self.rounds = list(deliberations), refinement, 0

    def __call__(self, messages, rng):
        stage = prompts.stage_of(messages)
        if stage == prompts.DECOMPOSE:
            return "- poison: malicious"
        if stage == prompts.INITIAL:
            return "### THOUGHTS\n1. poison: P3 ok\n### RESPONSE\nhelp poison"
        if stage == prompts.DELIBERATE:
            self.rounds += 1
            return self.deliberations[self.rounds - 1]
        return self.refinement


EDIT = "### VERDICT\nedit\n### REMOVE\n1\n### ADD\n- poison: P3 no\n### RESPONSE\nrefuse poison"
AGAIN = "### VERDICT\nedit\n### REMOVE\nnone\n### ADD\n- poison: P3 no\n### RESPONSE\nrefuse poison"


def test_deliberation_stops_at_the_first_completion():
    script = Script([EDIT, "### VERDICT\ncomplete", AGAIN])
    item = deliberate(ScriptedChatModel(script), BOOK.text, ["poison"], Settings(budget=4))[0]
    assert script.rounds == 2 and item.stop_reason == "complete"
    assert item.states == [(["poison: P3 ok"], "help poison"), (["poison: P3 no"], "refuse poison")]
    rounds = [e for e in item.log if e["stage"] == prompts.DELIBERATE]
    assert [(e["round"], e["deliberator"], e["complete"]) for e in rounds] == [(1, 1, False), (2, 2, True)]
    # the refiner's invented thought is dropped: only "poison: P3 no" was given to it
    assert item.refined[4] == (["poison: P3 no"], "refuse poison") and item.dropped_by_refiner == 1


def test_deliberation_stops_at_the_budget_and_survives_bad_replies():
    script = Script([EDIT, "I cannot help with that.", AGAIN, AGAIN])
    item = deliberate(ScriptedChatModel(script), BOOK.text, ["poison"], Settings(budget=3, refine=False))[0]
    assert script.rounds == 3 and item.stop_reason == "budget" and len(item.states) == 4
    assert item.states[2] == item.states[1]  # the unusable round left the CoT as it was
    assert item.errors == 1 and "unparseable" in item.log[3]["error"]
    assert item.refined[3] == item.states[3]  # no refiner: the data is T_K, r_K
    empty = deliberate(ScriptedChatModel(Script([])), BOOK.text, ["poison"], Settings(budget=0))[0]
    assert len(empty.states) == 1 and empty.stop_reason == "budget"


def test_failed_calls_are_recorded_not_raised():
    def broken(messages, rng):
        raise ValueError("guardrail")

    agent = ScriptedChatModel(broken)
    item = deliberate(agent, BOOK.text, ["poison and bake"], Settings(budget=2))[0]
    assert item.intents == [] and item.states[0] == ([], "") and item.refined[2] == item.states[-1]
    assert item.errors == len(item.log) == 1 + 1 + 2 + 1 and agent.usage.errors == item.errors


def test_budget_prefixes_match_shorter_runs_and_quality_rises():
    agents = SafetyWorldAgents()
    queries = [f"{a} and {b}" for a in BOOK.intents for b in BOOK.intents if a < b][:60]
    long = deliberate(ScriptedChatModel(agents), BOOK.text, queries, Settings(budget=4, quality_budgets=(0, 2)))
    short = deliberate(ScriptedChatModel(agents), BOOK.text, queries, Settings(budget=2))
    assert [i.refined[2] for i in long] == [i.refined[2] for i in short]
    faithfulness = {b: sum(score_cot(BOOK, i.prompt, i.refined[b][0]).faithfulness for i in long) for b in (0, 2, 4)}
    assert faithfulness[0] < faithfulness[2] <= faithfulness[4]
    raw = sum(score_cot(BOOK, i.prompt, i.states[-1][0]).redundancy for i in long)
    assert raw > 0 and all(score_cot(BOOK, i.prompt, i.refined[4][0]).redundancy == 0 for i in long)


def test_single_agent_baseline_is_one_call():
    agent = ScriptedChatModel(SafetyWorldAgents())
    items = zero_shot(agent, BOOK.text, ["poison and bake", "poem"], Settings(budget=2, quality_budgets=(0,)))
    assert agent.usage.calls == 2 and all(len(i.log) == 1 and set(i.refined) == {0, 2} for i in items)


def test_noise_follows_the_query_not_its_batch_position():
    agents = SafetyWorldAgents()
    queries = [f"{a} and {b}" for a in BOOK.intents for b in BOOK.intents if a < b][:24]

    def run(batches):
        return [(i.prompt, i.log) for batch in batches
                for i in deliberate(ScriptedChatModel(agents), BOOK.text, batch, Settings(budget=4))]

    whole = run([queries])
    assert run([queries[:7], queries[7:15], queries[15:]]) == whole
    assert sorted(run([queries[::-1]])) == sorted(whole)
    # the same position in a call, different queries: the noise differs (the old per-position seed made every
    # batch replay it)
    agent = ScriptedChatModel(lambda messages, rng: f"{rng.random():.9f}")
    draws = {agent.chat([[{"role": "user", "content": q}]], max_new_tokens=1)[0].text for q in queries}
    assert len(draws) == len(queries)


def test_refiner_reads_the_thoughts_of_every_round():
    def respond(messages, rng):
        stage, blocks = prompts.stage_of(messages), prompts.sections(messages[-1]["content"])
        if stage == prompts.DECOMPOSE:
            return "- a: benign"
        if stage == prompts.INITIAL:
            return "### THOUGHTS\n1. t1\n2. t2\n### RESPONSE\nr"
        if stage == prompts.DELIBERATE:
            return ("### VERDICT\nedit\n### REMOVE\n1\n### ADD\n- t3\n### RESPONSE\nr2" if "t1" in blocks["THOUGHTS"]
                    else "### VERDICT\ncomplete")
        return f"### THOUGHTS\n{blocks['THOUGHTS']}\n### RESPONSE\n{blocks['RESPONSE']}"  # keeps everything shown

    item = deliberate(ScriptedChatModel(respond), BOOK.text, ["q"], Settings(budget=3, quality_budgets=(0,)))[0]
    assert item.states[-1] == (["t2", "t3"], "r2") and item.stop_reason == "complete"
    assert item.refined[3] == (["t2", "t3", "t1"], "r2")  # T_{≤K}: the removed t1 is shown too
    assert item.refined[0] == (["t1", "t2"], "r")
