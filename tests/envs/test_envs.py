"""NumberLine and Blackjack: rules checked by hand, seeds, spaces, rewards, experts, the registry."""
from types import SimpleNamespace

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

from posttrain.envs import BlackjackEnv, NumberLineEnv, make_env
from posttrain.envs.blackjack import DONE as BJ_DONE
from posttrain.envs.blackjack import HIT, STAND
from posttrain.envs.numberline import DONE
from posttrain.utils.config import ConfigError

PLUS, MINUS = 0, 1


def placed(env: NumberLineEnv, target: int, current: int) -> NumberLineEnv:
    env.reset(seed=0)
    env.target, env.current = target, current
    return env


def test_numberline_moves_and_rl4vlm_rewards_by_hand():
    env = placed(NumberLineEnv(), target=3, current=1)
    _, r, term, trunc, info = env.step(PLUS)  # 1 -> 2, closer
    assert (env.current, r, term, trunc) == (2, 0.0, False, False)
    assert info["gfn_reward"] == pytest.approx(100 / 2)
    _, r, *_ = env.step(MINUS)  # 2 -> 1, away
    assert (env.current, r) == (1, -1.0)
    env.step(PLUS)
    _, r, term, _, info = env.step(PLUS)  # reaches 3
    assert (env.current, r, term, info["success"]) == (3, 1.0, False, True)
    assert info["gfn_reward"] == 100.0
    _, r, term, _, _ = env.step(DONE)  # [DONE] at the target: the episode ends, return +1 in all
    assert (r, term) == (0.0, True)


def test_numberline_done_away_from_target_and_range_edges():
    env = placed(NumberLineEnv(), target=0, current=5)
    _, r, term, _, info = env.step(DONE)
    assert (r, term, info["success"]) == (-1.0, True, False)
    env = placed(NumberLineEnv(), target=0, current=5)
    _, r, *_ = env.step(PLUS)  # stays at n_max: not closer
    assert (env.current, r) == (5, -1.0)


def test_numberline_rl4vlm_rule_ends_at_target_and_truncates_at_2_n_max():
    env = placed(NumberLineEnv(end_at_target=True, max_steps=None), target=2, current=1)
    assert env.max_steps == 10
    assert env.step(PLUS)[2] is True
    env = placed(NumberLineEnv(max_steps=None), target=5, current=4)
    flags = [env.step(MINUS if t % 2 else PLUS)[2:4] for t in range(10)]
    assert flags[-1] == (False, True) and all(f == (False, False) for f in flags[:-1])


def test_numberline_seeds_ranges_and_ood_distance():
    a, b = NumberLineEnv(), NumberLineEnv()
    assert [a.reset(seed=s)[0]["text"] for s in range(20)] == [b.reset(seed=s)[0]["text"] for s in range(20)]
    starts = set()
    for s in range(200):
        a.reset(seed=s)
        assert 0 <= a.target <= 5 and 0 <= a.current <= 5 and a.current != a.target
        starts.add((a.target, a.current))
    assert len(starts) == 30  # every (target, start) pair with start != target
    ood = NumberLineEnv(n_min=10, n_max=50, max_distance=5, max_steps=10)
    for s in range(100):
        ood.reset(seed=s)
        assert 10 <= ood.target <= 50 and 1 <= abs(ood.target - ood.current) <= 5


def test_numberline_expert_is_the_shortest_path_ending_with_done():
    env = NumberLineEnv()
    for s in range(30):
        env.reset(seed=s)
        distance, actions = abs(env.target - env.current), []
        while True:
            action = env.expert_action()
            actions.append(action)
            _, _, term, trunc, info = env.step(action)
            if term or trunc:
                break
        assert actions[-1] == DONE and len(actions) == distance + 1 and info["success"]


def test_observation_image_and_spaces():
    for env in (NumberLineEnv(), BlackjackEnv()):
        obs, _ = env.reset(seed=3)
        assert obs["image"].shape == (64, 64, 3) and obs["image"].dtype == np.uint8
        assert (obs["image"] < 128).any() and (obs["image"] > 128).any()  # something is drawn
        assert np.array_equal(env.render(), obs["image"])
        assert env.observation_space.contains(obs)
        check_env(env, skip_render_check=False)


def test_image_changes_with_the_state():
    env = placed(NumberLineEnv(), target=3, current=1)
    before = env.render()
    env.step(PLUS)
    assert not np.array_equal(before, env.render())


def blackjack(player, dealer) -> BlackjackEnv:
    env = BlackjackEnv()
    env.reset(seed=0)
    env.game.player, env.game.dealer = list(player), list(dealer)
    return env


def test_blackjack_bust_loses_and_gfn_reward_floor():
    env = blackjack([10, 6], [7, 10])
    env.game.np_random = SimpleNamespace(choice=lambda deck: 10)  # the next card is a ten: 26, bust
    _, r, term, _, info = env.step(HIT)
    assert (r, term, info["success"]) == (-1.0, True, False)
    assert info["gfn_reward"] == 1e-10


def test_blackjack_stand_and_done_score_like_gymnasium():
    for action in (STAND, BJ_DONE):
        env = blackjack([10, 10], [10, 7])  # 20 against the dealer's 17: the dealer stands, the player wins
        _, r, term, _, info = env.step(action)
        assert (r, term, info["success"], info["gfn_reward"]) == (1.0, True, True, 20.0)
    env = blackjack([10, 7], [10, 7])  # 17 against 17: a draw
    _, r, _, _, info = env.step(STAND)
    assert (r, info["gfn_reward"]) == (0.0, 10.0)


def test_blackjack_matches_gymnasium_blackjack_v1_episode_by_episode():
    ours, theirs = BlackjackEnv(), gym.make("Blackjack-v1").unwrapped
    for s in range(50):
        ours.reset(seed=s)
        theirs.reset(seed=int(np.random.default_rng(s).integers(2**31)))  # the seed ours passes on
        assert ours.game.player == theirs.player and ours.game.dealer == theirs.dealer
        r1 = ours.step(HIT)[1]
        r2 = theirs.step(1)[1]
        assert r1 == r2


def test_blackjack_expert_stands_at_17_and_text_shows_cards():
    env = blackjack([10, 6], [7, 10])
    assert env.expert_action() == HIT and env.text() == "dealer 7, player 10 6" and env.thought() == "sum 16 dealer 7"
    env = blackjack([1, 6], [7, 10])  # a usable ace: 17
    assert env.expert_action() == BJ_DONE


def test_blackjack_seeds_reproduce_episodes():
    a, b = BlackjackEnv(), BlackjackEnv()
    for s in range(10):
        assert a.reset(seed=s)[0]["text"] == b.reset(seed=s)[0]["text"]
        assert a.step(HIT)[0]["text"] == b.step(HIT)[0]["text"]


def test_registry_unknown_id_and_argument_name_the_key():
    assert isinstance(make_env({"id": "numberline", "n_max": 7}), NumberLineEnv)
    with pytest.raises(ConfigError, match=r"^env\.id: unknown environment 'pong'"):
        make_env({"id": "pong"})
    with pytest.raises(ConfigError, match=r"^env: .*n_maxx"):
        make_env({"id": "numberline", "n_maxx": 7})
    with pytest.raises(ConfigError, match=r"^env\.n_max"):
        make_env({"id": "numberline", "n_min": 5, "n_max": 5})
    assert isinstance(gym.make("posttrain/Blackjack-v0").unwrapped, BlackjackEnv)
