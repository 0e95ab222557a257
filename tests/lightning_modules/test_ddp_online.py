"""Online methods with two processes on CPU (gloo) through Lightning's DDP strategy.

Process 1 keeps no group in its first batch of the epoch (`tests.ddp_probe.StarvedRankReward`) while process 0 keeps
several, so the processes would make different numbers of backward calls (each a gradient all-reduce) unless they
agree on one; the run must finish, both processes must make the same optimizer steps, and their parameters must be
bit-identical before every step and after every batch (`tests.ddp_probe.ParameterChecksums`).
"""
import json

import pytest

from tests.ddp_probe import TINY_MODEL, assert_processes_in_step, run_two_processes

# 16 prompts over 2 processes in batches of 4: two rollout steps per process, one group per mini-batch
ONLINE = ["debug=tiny", "stages.warmup=null", "data.train_size=16", "trainer.max_epochs=1", "method.num_samples=4",
          "method.prompts_per_minibatch=1", "method.truncated_is_wrong=false", "method.evaluator.sampled_k=0",
          "reward._target_=tests.ddp_probe.StarvedRankReward"]
RUNS = {
    "grpo": ["experiment=grpo", *ONLINE, "method.max_generation_batches=2"],  # the refill draws per process
    "nft": ["experiment=nft", *ONLINE, "method.max_generation_batches=1"],
    "rft": ["experiment=rft", *ONLINE, "method.max_generation_batches=1"],
    "spark": ["experiment=spark", *ONLINE, "stages.control=null", "method.reward_batch_size=2",
              "method.filter_groups=true"],
    "pairwise_rl": ["experiment=pairwise_rl", "debug=tiny", "stages.warmup=null", "data.train_size=16",
                    "trainer.max_epochs=1", "method.ppo.num_samples=2", "method.ppo.minibatch_size=4",
                    "method.evaluator.sampled_k=0", "stages.reward_model.trainer.max_epochs=1",
                    "stages.reward_model.data.train_size=8", "stages.reward_model.data.eval_size=8"],
}


@pytest.mark.parametrize("experiment", sorted(RUNS))
def test_online_method_keeps_processes_in_step(experiment, tmp_path):
    proc = run_two_processes([*RUNS[experiment], *TINY_MODEL], tmp_path)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "Initializing distributed: GLOBAL_RANK: 1, MEMBER: 2/2" in proc.stderr + proc.stdout
    assert_processes_in_step(tmp_path, padded=experiment != "pairwise_rl")
    with open(tmp_path / "results.json") as handle:
        assert json.load(handle)["rows"]
