"""PRELUDE / CIPHER: the edit cost, the synthetic world, retrieval, aggregation, the stored-preference rule,
resuming a killed interaction, and the error cases."""
import itertools
import json
import os
import random

import numpy as np
import pytest

from posttrain.agents import ScriptedChatModel
from posttrain.envs.prelude import PreludeEnv
from posttrain.prelude import prompts, world
from posttrain.prelude.agents import CipherAgent, make_agent
from posttrain.prelude.contexts import Context, ContextError, load_contexts, synthetic_contexts
from posttrain.prelude.cost import edit_cost, word_tokens
from posttrain.prelude.encoders import RandomEncoder, TfidfEncoder, build_encoder, top_k
from posttrain.prelude.interaction import interact, read_log
from posttrain.prelude.preferences import preference_table
from posttrain.prelude.scripted import PreludeResponder
from posttrain.prelude.user import SimulatedUser
from posttrain.utils.config import ConfigError

SYNTHETIC = preference_table("synthetic")


def scripted(noise=0.0):
    return ScriptedChatModel(PreludeResponder(noise=noise))


def env_for(contexts, user_chat=None):
    return PreludeEnv(contexts, SimulatedUser(user_chat or scripted(), SYNTHETIC))


# ---- edit cost -----------------------------------------------------------------------------------------------------
def test_word_tokens_split_punctuation_and_keep_contractions():
    assert word_tokens("Hello, world! Don't stop 🙂") == ["Hello", ",", "world", "!", "Don't", "stop", "🙂"]


@pytest.mark.parametrize("a, b, distance", [
    ("the cat sat", "the cat sat", 0),
    ("the cat sat", "the cat sat down", 1),            # one insertion
    ("the cat sat", "the dog sat", 1),                 # one substitution
    ("a b c", "c b a", 2),                             # two substitutions
    ("the cat sat on the mat", "cat sat mat", 3),      # three deletions
    ("Hi, Bob.", "Hi Bob !", 2),                       # ',' deleted, '.' -> '!'
    ("", "one two three", 3),
])
def test_edit_cost_is_word_level_levenshtein(a, b, distance):
    assert edit_cost(a, b) == edit_cost(b, a) == distance


# ---- the synthetic world -------------------------------------------------------------------------------------------
def test_detectors_read_back_every_attribute_set_of_up_to_four():
    for document in world.documents("wiki", 2, random.Random(1)):
        for n in range(5):
            for attributes in itertools.combinations(world.ATTRIBUTES, n):
                text = world.render(world.content(document), attributes)
                assert world.detect(text) == set(attributes), (attributes, text)


def test_preference_text_round_trips_and_hidden_sets_differ():
    for attributes in world.HIDDEN.values():
        assert world.parse(world.describe(attributes)) == attributes
    assert len(set(world.HIDDEN.values())) == len(world.HIDDEN)
    assert world.closest_source(world.HIDDEN["wiki"]) == "wiki"


def test_perturb_changes_exactly_one_attribute_at_noise_one_and_none_at_zero():
    rng = random.Random(0)
    for _ in range(50):
        noisy = world.perturb({"bullets", "brief"}, 1.0, rng)
        assert len(noisy ^ {"bullets", "brief"}) == 1
        assert world.perturb({"bullets", "brief"}, 0.0, rng) == {"bullets", "brief"}


def test_scripted_user_says_yes_only_to_the_exact_preference():
    context = synthetic_contexts(1, seed=0)[0]
    user = SimulatedUser(scripted(), SYNTHETIC)
    wanted = world.render(world.content(context.text), world.HIDDEN[context.source])
    assert user.edit(context, wanted, seed=0).satisfied
    extra = world.render(world.content(context.text), world.HIDDEN[context.source] | {"greeting"})
    edit = user.edit(context, extra, seed=0)
    assert not edit.satisfied and edit.text == wanted and edit_cost(extra, edit.text) == 3  # "dear reader ,"


# ---- aggregation and inference -------------------------------------------------------------------------------------
def test_aggregation_keeps_the_attributes_of_more_than_half_of_the_retrieved_preferences():
    listed = ["bullet points, brief", "bullet points, emojis", "brief, bullet points", "emojis", "brief"]
    reply = scripted().chat([[{"role": "user", "content": prompts.aggregation("summary", listed)}]],
                            max_new_tokens=64)[0].text
    assert world.parse(reply) == {"bullets", "brief"}  # bullets 3/5, brief 3/5, emojis 2/5
    assert world.majority([{"a"}, {"a", "b"}]) == {"a"}  # 1 of 2 is not a majority


def test_inference_reads_the_revision_and_its_noise_rate_is_the_configured_one():
    document = synthetic_contexts(1, seed=0)[0].text
    y = world.render(world.content(document), set())
    edited = world.render(world.content(document), {"bullets", "brief"})
    prompt = [[{"role": "user", "content": prompts.inference("summary", [(y, edited)])}]]
    assert world.parse(scripted().chat(prompt, max_new_tokens=64)[0].text) == {"bullets", "brief"}
    noisy = scripted(noise=0.3)
    wrong = [world.parse(noisy.chat(prompt, max_new_tokens=64, seed=s)[0].text) != {"bullets", "brief"}
             for s in range(400)]
    assert 0.22 < np.mean(wrong) < 0.38


# ---- retrieval -----------------------------------------------------------------------------------------------------
def test_top_k_is_cosine_order_capped_at_the_history_size():
    keys = np.array([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8], [0.8, 0.6]])
    assert top_k(np.array([1.0, 0.0]), keys, 3) == [0, 3, 2]
    assert top_k(np.array([0.0, 1.0]), keys, 10) == [1, 2, 3, 0]
    assert top_k(np.array([1.0, 0.0]), np.zeros((0, 2)), 5) == []


def test_tfidf_retrieves_same_source_documents_and_random_vectors_do_not():
    contexts = synthetic_contexts(20, seed=3)
    texts, sources = [c.text for c in contexts], [c.source for c in contexts]

    def recall_at_1(encoder):
        vectors = encoder.fit(texts).encode(texts)
        assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0)
        hits = [sources[top_k(vectors[i], np.delete(vectors, i, axis=0), 1)[0] + (top_k(
            vectors[i], np.delete(vectors, i, axis=0), 1)[0] >= i)] == sources[i] for i in range(len(texts))]
        return np.mean(hits)

    assert recall_at_1(TfidfEncoder(sublinear_tf=True)) > 0.95
    assert recall_at_1(RandomEncoder(seed=0)) < 0.5


# ---- agents --------------------------------------------------------------------------------------------------------
def same_source_contexts(n=3):
    return [c for c in synthetic_contexts(n, seed=0) if c.source == "wiki"][:n]


def cipher(k=1, store_empty=False, noise=0.0):
    first, second = same_source_contexts(2)
    contexts = [first, second, second]  # round 2's nearest past context is round 1's (the same text)
    encoder = TfidfEncoder().fit([c.text for c in contexts])
    return CipherAgent(scripted(noise), encoder, k=k, store_empty=store_empty), contexts


def test_cipher_stores_the_inferred_preference_after_an_edit_and_the_used_one_without():
    agent, contexts = cipher()
    rows = interact(agent, env_for(contexts), seed=0, log_path=_tmp_log(), name="cipher_1")
    hidden = world.describe(world.HIDDEN["wiki"])
    assert rows[0]["preference"] == "" and rows[0]["cost"] > 0 and rows[0]["stored"] == hidden  # inferred
    assert rows[1]["preference"] == hidden and rows[1]["cost"] == 0 and rows[1]["stored"] == hidden  # kept
    assert rows[2]["cost"] == 0
    assert rows[1]["agent_prompt_tokens"] > 0 and rows[0]["user_prompt_tokens"] > 0


def test_storing_nothing_on_edit_free_rounds_forgets_the_preference():
    agent, contexts = cipher(store_empty=True)
    rows = interact(agent, env_for(contexts), seed=0, log_path=_tmp_log(), name="cipher_1_empty")
    assert rows[1]["cost"] == 0 and rows[1]["stored"] == ""
    assert rows[2]["preference"] == "" and rows[2]["cost"] > 0  # the nearest entry now holds nothing


def test_cipher_k_aggregates_with_a_call_and_no_learning_never_calls_twice():
    agent, contexts = cipher(k=5)
    interact(agent, env_for(contexts), seed=0, log_path=_tmp_log(), name="cipher_5")
    # round 0: generate + infer; rounds 1, 2: aggregate + generate (no edit, no inference)
    assert agent.llm.usage.calls == 2 + 2 + 2
    baseline = make_agent({"kind": "no_learning"}, "a", scripted(), None, "summary", 256)
    interact(baseline, env_for(contexts), seed=0, log_path=_tmp_log(), name="none")
    assert baseline.llm.usage.calls == len(contexts)


def _tmp_log():
    """A fresh log path (these interactions' logs are not inspected)."""
    import tempfile
    handle, path = tempfile.mkstemp(suffix=".jsonl")
    os.close(handle)
    os.remove(path)
    return path


# ---- resume --------------------------------------------------------------------------------------------------------
class Killed(RuntimeError):
    pass


class KilledAfter(ScriptedChatModel):
    """A user model that dies after `calls` conversations (a crash in the middle of an interaction)."""

    def __init__(self, calls):
        super().__init__(PreludeResponder())
        self.left = calls

    def _chat(self, conversations, **kwargs):
        self.left -= len(conversations)
        if self.left < 0:
            raise Killed("killed")
        return super()._chat(conversations, **kwargs)


@pytest.mark.parametrize("kind", ["cipher", "explore_exploit", "icl_edit"])
def test_a_killed_interaction_resumes_from_its_last_round_and_ends_as_the_uninterrupted_one(kind, tmp_path):
    contexts = synthetic_contexts(6, seed=1)[::3][:10]

    def agent():
        encoder = TfidfEncoder().fit([c.text for c in contexts])
        return make_agent({"kind": kind, "k": 3, "explore": 3}, "a", scripted(noise=0.3), encoder, "summary", 256)

    whole_agent = agent()
    whole = interact(whole_agent, env_for(contexts), seed=5, log_path=str(tmp_path / "whole.jsonl"), name=kind)
    log = str(tmp_path / "killed.jsonl")
    with pytest.raises(Killed):
        interact(agent(), env_for(contexts, KilledAfter(9)), seed=5, log_path=log, name=kind)
    done = len(read_log(log))
    assert 0 < done < len(contexts)
    with open(log, "a") as handle:
        handle.write('{"agent": "torn')  # a half-written line from the kill
    resumed_agent = agent()
    resumed = interact(resumed_agent, env_for(contexts), seed=5, log_path=log, name=kind)
    assert [json.dumps(r, sort_keys=True) for r in resumed] == [json.dumps(r, sort_keys=True) for r in whole]
    assert read_log(log) == resumed
    # the logged rounds were replayed into the agent, not played again
    assert resumed_agent.llm.usage.calls < whole_agent.llm.usage.calls


def test_a_log_of_another_interaction_is_not_resumed(tmp_path):
    contexts = synthetic_contexts(6, seed=1)[::3][:6]

    def agent():
        encoder = TfidfEncoder().fit([c.text for c in contexts])
        return make_agent({"kind": "cipher", "k": 1}, "a", scripted(noise=0.0), encoder, "summary", 256)

    log = str(tmp_path / "log.jsonl")
    interact(agent(), env_for(contexts), seed=5, log_path=log, name="cipher")
    with pytest.raises(ValueError, match=r"log.jsonl:1: .*seed"):
        interact(agent(), env_for(contexts), seed=6, log_path=log, name="cipher")
    with pytest.raises(ValueError, match="6 rounds logged, but the stream has 3"):
        interact(agent(), env_for(contexts[:3]), seed=5, log_path=log, name="cipher")


# ---- errors --------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("line, message", [
    ('{"text": "a story", "source": "tabloid"}', "unknown source 'tabloid'"),
    ('{"text": "   ", "source": "wiki"}', "empty context"),
    ('{"source": "wiki"}', "empty context"),
    ("not json", "not valid JSON"),
])
def test_bad_context_lines_are_errors_naming_file_and_line(tmp_path, line, message):
    path = tmp_path / "contexts.jsonl"
    path.write_text('{"text": "fine", "source": "news"}\n' + line + "\n")
    with pytest.raises(ContextError, match=f"{path}:2: {message}"):
        load_contexts(str(path), SYNTHETIC)


def test_good_context_file_loads_with_its_sources():
    import tempfile
    with tempfile.NamedTemporaryFile("w", suffix=".jsonl", delete=False) as handle:
        handle.write('{"text": "An article.", "source": "wikipedia"}\n\n{"text": "Notes", "source": "imdb"}\n')
    contexts = load_contexts(handle.name, preference_table("summarization"))
    assert [(c.text, c.source, c.id) for c in contexts] == [("An article.", "wikipedia", f"{handle.name}:1"),
                                                            ("Notes", "imdb", f"{handle.name}:3")]


def test_an_encoder_path_that_does_not_exist_is_an_error_naming_the_key(tmp_path):
    with pytest.raises(ConfigError, match=r"method\.encoder\.name_or_path: no such directory"):
        build_encoder({"type": "hf", "name_or_path": str(tmp_path / "missing")}, "method.encoder")
    with pytest.raises(ConfigError, match=r"method\.encoder\.type: must be one of"):
        build_encoder({"type": "bm25"}, "method.encoder")
    with pytest.raises(ConfigError, match=r"method\.agents\.x\.kind"):
        make_agent({"kind": "cipher9"}, "method.agents.x", scripted(), None, "summary", 8)


def test_a_hf_encoder_from_a_local_directory_mean_pools_unit_vectors(tmp_path):
    from tests.agents.tiny_chat import save_tiny_chat_model
    path = save_tiny_chat_model(tmp_path / "enc")
    encoder = build_encoder({"type": "hf", "name_or_path": path, "max_length": 64}, "method.encoder")
    vectors = encoder.encode(["short", "a somewhat longer text", "short"])
    assert vectors.shape[0] == 3 and np.allclose(np.linalg.norm(vectors, axis=1), 1.0)
    assert np.allclose(vectors[0], vectors[2], atol=1e-5) and not np.allclose(vectors[0], vectors[1])


def test_only_the_oracle_prompt_holds_the_hidden_preference(tmp_path):
    contexts = same_source_contexts(2)
    prompts_seen = {}
    for kind in ("no_learning", "oracle"):
        chat = scripted()
        original, seen = chat._chat, []

        def spy(conversations, _original=original, _seen=seen, **kwargs):
            _seen.extend(m["content"] for c in conversations for m in c)
            return _original(conversations, **kwargs)

        chat._chat = spy
        rows = interact(make_agent({"kind": kind}, "a", chat, None, "summary", 256), env_for(contexts), 0,
                        str(tmp_path / f"{kind}.jsonl"))
        prompts_seen[kind] = (seen, [r["cost"] for r in rows])
    hidden = world.describe(world.HIDDEN["wiki"])
    assert not any(hidden in s for s in prompts_seen["no_learning"][0])
    assert all(hidden in s for s in prompts_seen["oracle"][0]) and prompts_seen["oracle"][1] == [0, 0]
    assert all(c > 0 for c in prompts_seen["no_learning"][1])


def test_context_dataclass_is_plain():
    assert Context("t", "wiki", "x").source == "wiki"


def test_module_and_data_errors_name_their_keys(tmp_path):
    from datamodules.prelude import PreludeDataModule
    from lightning_modules.prelude import PreludeModule

    with pytest.raises(ConfigError, match=r"method\.agents\.x\.kk: unknown key"):
        PreludeModule(None, None, {"x": {"kind": "cipher", "kk": 1}}, agent=scripted(), user=scripted())
    chat = scripted()
    with pytest.raises(ConfigError, match=r"method\.user: must be a chat model of its own"):
        PreludeModule(None, None, {"x": {"kind": "cipher"}}, agent=chat, user=chat)
    with pytest.raises(ConfigError, match=r"data\.path: no such file"):
        PreludeDataModule(path=str(tmp_path / "none.jsonl"), preferences="summarization")
    with pytest.raises(ConfigError, match=r"data\.preferences: the synthetic world's sources need"):
        PreludeDataModule(preferences="email")
    path = tmp_path / "few.jsonl"
    path.write_text('{"text": "one", "source": "imdb"}\n')
    data = PreludeDataModule(path=str(path), preferences="summarization", rounds=2, seeds=[0])
    with pytest.raises(ConfigError, match=r"data\.rounds: 2 rounds but only 1 contexts"):
        data.setup()


def test_the_environment_through_gymnasium_make():
    import gymnasium as gym

    contexts = same_source_contexts(2)
    env = gym.make("posttrain/Prelude-v0", contexts=contexts, user=SimulatedUser(scripted(), SYNTHETIC))
    observation, info = env.reset(seed=0)
    assert observation == {"text": contexts[0].text} and info == {"round": 0}
    plain = world.render(world.content(contexts[0].text), set())
    observation, reward, terminated, truncated, info = env.step(plain)
    assert reward == -info["cost"] == -edit_cost(plain, info["edited"]) < 0 and info["source"] == "wiki"
    assert observation == {"text": contexts[1].text} and not terminated and not truncated
    wanted = world.render(world.content(contexts[1].text), world.HIDDEN["wiki"])
    _, reward, terminated, _, info = env.step(wanted)
    assert reward == 0 and info["satisfied"] and terminated


def test_text_matcher_picks_the_most_similar_latent_preference():
    from posttrain.prelude.preferences import TextMatcher

    match = TextMatcher(preference_table("summarization"))
    assert match.closest("Bullet points, brief.") == "wikipedia"
    assert match.closest("tweet style with emojis") == "arxiv"
    assert match.closest("question answering format") == "imdb"
    assert match.closest("zzz qqq") is None
    assert match("second person, immersive", "slf5k") == {"class_match": 1.0}
    assert match("second person, immersive", "imdb") == {"class_match": 0.0}
    assert match(None, "imdb") == {"class_match": None}
