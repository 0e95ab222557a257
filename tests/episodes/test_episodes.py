"""The agent's prompt, the answer parser, episodes with invalid answers, expert trajectories, the replay buffer and
the per-step log-probabilities."""
import math

import pytest
import torch

from posttrain.envs import make_env
from posttrain.episodes.buffer import ReplayBuffer, needs_augmentation
from posttrain.episodes.prompts import INADMISSIBLE, OK, UNPARSABLE, format_output, format_prompt, parse_output
from posttrain.episodes.rollout import Episode, EpisodeSettings, expert_trajectory, run_episodes
from posttrain.episodes.scoring import trajectory_tensors
from posttrain.episodes.trajectory import Trajectory
from posttrain.models import tiny_llama
from posttrain.processors import make_processor

ACTIONS = ["+", "-", "[DONE]"]


@pytest.mark.parametrize("text, status, action, thought", [
    ('{"thoughts": "cur 1 tgt 3", "action": "+"}', OK, 0, "cur 1 tgt 3"),
    ('{"thoughts":"x","action":" [DONE] "}', OK, 2, "x"),  # spaces around the action
    ('{"thoughts": "x", "action": "-"', OK, 1, "x"),  # stopped before the closing brace
    ('noise {"action": "+", "thoughts": "late"} more', OK, 0, "late"),
    ('{"thoughts": "x", "action": "*"}', INADMISSIBLE, None, "x"),
    ('{"thoughts": "x", "action": "hit"}', INADMISSIBLE, None, "x"),
    ('{"thoughts": "x", "action": 5}', UNPARSABLE, None, "x"),
    ('{"thoughts": "x"}', UNPARSABLE, None, "x"),
    ("garbage", UNPARSABLE, None, None),
    ("", UNPARSABLE, None, None),
    ('{"action": "\\u002b"}', OK, 0, None),  # JSON escapes are read
])
def test_parser_cases(text, status, action, thought):
    parsed = parse_output(text, ACTIONS)
    assert (parsed.status, parsed.action, parsed.thought) == (status, action, thought)


def test_action_start_points_at_the_action_value():
    text = format_output("cur 1 tgt 3", "[DONE]")
    parsed = parse_output(text, ACTIONS)
    assert text[parsed.action_start:].startswith("[DONE]")


def test_prompt_holds_goal_history_state_and_actions_markovian_drops_history():
    prompt = format_prompt("reach", [("tgt 3, cur 1", "+")], "tgt 3, cur 2", ACTIONS)
    assert prompt == "goal: reach\nhistory: tgt 3, cur 1 > +\nstate: tgt 3, cur 2\nactions: +, -, [DONE]\n"
    assert "history" not in format_prompt("reach", [("a", "+")], "b", ACTIONS, markovian=True)
    assert "state" not in format_prompt("reach", [], None, ACTIONS)  # a VLM sees the state as its image


@pytest.fixture(scope="module")
def policy():
    model, tokenizer = tiny_llama(hidden_size=32, num_heads=2, intermediate_size=64, max_position_embeddings=512)
    return model, make_processor(tokenizer, 512)


def test_invalid_answers_are_counted_cost_a_turn_and_never_crash(policy):
    _, processor = policy
    env = make_env({"id": "numberline", "max_steps": 3})
    episode = Episode(env, 5, images=False)
    start = env.current
    for text in ("garbage", '{"thoughts": "x", "action": "*"}'):
        episode.advance("p", text, processor.response(text), processor)
    traj = episode.trajectory
    assert [s.status for s in traj.steps] == [UNPARSABLE, INADMISSIBLE] and traj.invalid_steps() == 2
    assert env.current == start and env.steps == 0  # the environment never moved
    assert [s.reward for s in traj.steps] == [-1.0, -1.0] and not episode.finished
    episode.advance("p", "???", processor.response("???"), processor)
    assert episode.finished and not traj.success  # the third turn spends the budget
    # the states after an invalid answer are outside R's support: the floor, not the unmoved state's reward
    assert traj.state_rewards == [env.state_reward(), 1e-10, 1e-10, 1e-10]


def test_a_valid_move_after_an_invalid_answer_keeps_the_floor(policy):
    _, processor = policy
    env = make_env({"id": "numberline", "max_steps": 5})
    episode = Episode(env, 5, images=False)
    good = format_output("x", "+")
    episode.advance("p", good, processor.response(good), processor)
    first = env.state_reward()
    for text in ("garbage", good, format_output("x", "[DONE]")):
        episode.advance("p", text, processor.response(text), processor)
    traj = episode.trajectory
    assert traj.done and len(traj.moves) == 3
    assert traj.state_rewards[:2] == [traj.state_rewards[0], first] and traj.state_rewards[0] > 1
    assert traj.state_rewards[2:] == [1e-10, 1e-10]  # the [DONE] terminates a history with an invalid answer


def test_expert_trajectory_ends_with_done_and_tokenises_like_an_answer(policy):
    _, processor = policy
    env = make_env({"id": "numberline"})
    traj = expert_trajectory(env, 3, processor, EpisodeSettings())
    assert traj.done and traj.success and traj.expert and traj.steps[-1].action == "[DONE]"
    assert len(traj.state_rewards) == len(traj.moves) + 1 and traj.state_rewards[-1] == 100.0
    step = traj.steps[0]
    assert processor.decode([step.output_ids[step.action_from:]])[0] == f'{step.action}"}}'
    assert processor.decode([step.done_ids[step.done_from:]])[0] == '[DONE]"}'
    blackjack = expert_trajectory(make_env({"id": "blackjack"}), 3, processor, EpisodeSettings())
    assert blackjack.steps[-1].action in ("[DONE]", "hit")  # stands with [DONE] at >= 17, or busts


def test_rollouts_are_batched_seeded_and_reproducible(policy):
    model, processor = policy
    settings = EpisodeSettings(max_new_tokens=12)

    def play(seed):
        envs = [make_env({"id": "numberline", "max_steps": 2}) for _ in range(3)]
        return run_episodes(model, processor, envs, [0, 1, 2], settings, torch.Generator().manual_seed(seed))

    first, again = play(0), play(0)
    assert [t.signature() for t in first] == [t.signature() for t in again]
    assert all(len(t.steps) == 2 and t.invalid_steps() == 2 for t in first)  # a random model: invalid, counted
    assert [t.task for t in first] == [0, 1, 2]


def test_step_logprobs_split_thought_and_action_tokens(policy):
    model, processor = policy
    traj = expert_trajectory(make_env({"id": "numberline"}), 1, processor, EpisodeSettings())
    out = trajectory_tensors(model, processor, [traj], lam=0.0)
    full = trajectory_tensors(model, processor, [traj], lam=1.0)
    m = len(traj.moves)
    assert out["log_pf"].shape == (1, m) and out["log_pterm"].shape == (1, m + 1)
    assert (full["log_pf"] < out["log_pf"]).all()  # the thoughts' log-prob is negative and enters with λ
    # action-only log-prob of a move, by hand: the sum over its action tokens
    from posttrain.models.forward import label_logprobs
    from posttrain.processors import pack
    step = traj.steps[0]
    prompt = processor.encode_prompts([{"prompt": step.prompt}])[0]
    rows = pack(prompt, [step.output_ids], processor.pad_id, 4096)
    logps, mask = label_logprobs(model, rows["input_ids"], rows["attention_mask"], rows["labels"])
    answer = logps[mask]
    assert out["log_pf"][0, 0].item() == pytest.approx(answer[step.action_from:].sum().item(), abs=1e-4)
    assert full["log_pf"][0, 0].item() == pytest.approx(answer.sum().item(), abs=1e-4)
    assert out["log_reward"][0, -1].item() == pytest.approx(math.log(100.0))


def test_replay_buffer_keeps_the_newest_per_task_and_round_trips():
    buffer = ReplayBuffer(capacity=2)
    trajs = [Trajectory(task=7, state_rewards=[float(i)]) for i in range(3)]
    assert [t.state_rewards[0] for t in buffer.add(7, trajs)] == [1.0, 2.0]
    buffer.add(8, trajs[:1])
    restored = ReplayBuffer(1)
    restored.load_state_dict(buffer.state_dict())
    assert restored.capacity == 2 and len(restored) == 3 and restored.tasks[7][1].state_rewards == [2.0]


def test_augmentation_rules():
    ok, failed = Trajectory(task=0, success=True), Trajectory(task=0, success=False)
    assert needs_augmentation("on_failure", [ok, failed]) and not needs_augmentation("on_failure", [ok])
    assert needs_augmentation("always", [ok]) and not needs_augmentation("none", [failed])


def test_outside_marks_the_states_after_an_invalid_answer(policy):
    model, processor = policy
    env = make_env({"id": "numberline", "max_steps": 5})
    episode = Episode(env, 5, images=False)
    good = format_output("x", "+")
    for text in (good, "garbage", good, format_output("x", "[DONE]")):
        episode.advance("p", text, processor.response(text), processor)
    valid = expert_trajectory(make_env({"id": "numberline"}), 1, processor, EpisodeSettings())
    out = trajectory_tensors(model, processor, [episode.trajectory, valid], lam=0.4)
    m = len(valid.moves)
    assert out["outside"][0].tolist() == [False, False, True, True]  # moves: +, garbage, +; then [DONE]
    assert not out["outside"][1, :m + 1].any()


# seed 16: target 3, current 2; with a budget of 2 steps the terminal objects and their R = 100/(|3 − y| + 1) are
# [DONE] (y=2: 50), (+, [DONE]) (3: 100), (−, [DONE]) (1: 100/3), and the four two-move sequences the time limit
# ends: ++ (4: 50), +− (2: 50), −+ (2: 50), −− (0: 25)
TERMINAL_BY_HAND = {("[DONE]",): 50.0, ("+", "[DONE]"): 100.0, ("-", "[DONE]"): 100 / 3, ("+", "+"): 50.0,
                    ("+", "-"): 50.0, ("-", "+"): 50.0, ("-", "-"): 25.0}


def test_terminal_objects_and_their_final_numbers_by_hand():
    from posttrain.episodes.evaluate import final_number_rewards, terminal_rewards
    env = make_env({"id": "numberline", "max_steps": 2})
    env.reset(seed=16)
    assert (env.target, env.current) == (3, 2)
    assert terminal_rewards(env, 16) == pytest.approx(TERMINAL_BY_HAND)
    assert final_number_rewards(env, 16) == pytest.approx({0: 25.0, 1: 100 / 3, 2: 150.0, 3: 100.0, 4: 50.0})


def test_total_variation_by_hand():
    from collections import Counter

    from posttrain.episodes.evaluate import total_variation
    # 4 samples: 2 at y=3, 1 at y=2, 1 invalid (None, outside the support); R: {2: 1, 3: 3}
    tv = total_variation(Counter({3: 2, 2: 1, None: 1}), 4, {2: 1.0, 3: 3.0})
    assert tv == pytest.approx(0.5 * (abs(0.5 - 0.75) + abs(0.25 - 0.25) + 0.25))
