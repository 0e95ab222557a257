"""FSDP2 (`trainer=fsdp`: fully_shard through Lightning's ModelParallelStrategy) with two CPU processes (gloo): the
installed torch runs fully_shard on CPU, so these run without a GPU.

A sharded policy must train exactly as DDP does (same data split, same averaged gradient), generate on gathered
parameters, keep the processes in step when one keeps no group, write a whole model at the end, and resume from its
distributed checkpoint to the same end as an uninterrupted run.
"""
import json

import pytest
import torch
from safetensors.torch import load_file

from posttrain.models.tokenizer import build_char_tokenizer
from tests.ddp_probe import TINY_MODEL, assert_processes_in_step, run_two_processes

CPU_FP32 = ["trainer.precision=32-true", *TINY_MODEL]
GRPO = ["experiment=grpo", "debug=tiny", "stages.warmup=null", "data.train_size=16", "method.num_samples=4",
        "method.truncated_is_wrong=false", "method.evaluator.sampled_k=0", *CPU_FP32]


def saved_weights(directory) -> dict[str, torch.Tensor]:
    return load_file(str(directory / "model.safetensors"))


def assert_same_weights(a: dict, b: dict, atol: float) -> None:
    assert a.keys() == b.keys()
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=0, atol=atol, msg=name)


@pytest.mark.parametrize("run", ["sft", "spin"])
def test_sharded_training_ends_where_ddp_does(run, tmp_path):
    """SFT; SPIN copies the gathered policy into its replicated opponent at each iteration, which then generates."""
    overrides = {"sft": ["debug=tiny", "data.train_size=16", "trainer.max_epochs=2", *CPU_FP32],
                 "spin": ["experiment=spin", "debug=tiny", "stages.warmup=null", "stages.control=null",
                          "method.num_iterations=2", "method.epochs_per_iteration=1", *CPU_FP32]}[run]
    for trainer in ("ddp", "fsdp"):
        proc = run_two_processes([*overrides, f"stages.main.save_dir={tmp_path}/{trainer}/model"],
                                 tmp_path / trainer, trainer)
        assert proc.returncode == 0, proc.stderr[-4000:]
    assert (tmp_path / "fsdp" / "checkpoints" / "main" / "last.ckpt" / "meta.pt").is_file()  # distributed checkpoint
    assert_same_weights(saved_weights(tmp_path / "ddp" / "model"), saved_weights(tmp_path / "fsdp" / "model"), 1e-5)


def test_sharded_grpo_keeps_processes_in_step(tmp_path):
    overrides = [*GRPO, "trainer.max_epochs=1", "method.prompts_per_minibatch=1",
                 "reward._target_=tests.ddp_probe.StarvedRankReward", f"stages.main.save_dir={tmp_path}/model"]
    proc = run_two_processes(overrides, tmp_path, "fsdp")
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert_processes_in_step(tmp_path, padded=True)
    with open(tmp_path / "results.json") as handle:
        assert [row["step"] for row in json.load(handle)["rows"]][0] == 0  # the start row: generation while sharded
    vocabulary = len(build_char_tokenizer())
    assert saved_weights(tmp_path / "model")["model.embed_tokens.weight"].shape[0] == vocabulary  # not a shard


def test_sharded_grpo_resumes_from_its_distributed_checkpoint(tmp_path):
    """With a KL to π_ref, whose frozen copy a distributed checkpoint holds too."""
    overrides = [*GRPO, "method.prompts_per_minibatch=2", "method.kl_coef=0.01",
                 "reward._target_=tests.helpers.CoinFlipVerifier"]
    full = run_two_processes([*overrides, "trainer.max_epochs=2", f"stages.main.save_dir={tmp_path}/full/model"],
                             tmp_path / "full", "fsdp")
    half = run_two_processes([*overrides, "trainer.max_epochs=1"], tmp_path / "half", "fsdp")
    ckpt = tmp_path / "half" / "checkpoints" / "main" / "last.ckpt"
    resumed = run_two_processes([*overrides, "trainer.max_epochs=2", f"ckpt_path={ckpt}",
                                 f"stages.main.save_dir={tmp_path}/resumed/model"], tmp_path / "resumed", "fsdp")
    for proc in (full, half, resumed):
        assert proc.returncode == 0, proc.stderr[-4000:]
    assert_same_weights(saved_weights(tmp_path / "full" / "model"), saved_weights(tmp_path / "resumed" / "model"),
                        1e-6)


@pytest.mark.parametrize("experiment", ["pairwise_rl", "bt_rm"])
def test_a_method_that_cannot_shard_names_the_trainer(experiment, tmp_path):
    proc = run_two_processes([f"experiment={experiment}", "debug=tiny", "stages.warmup=null", *CPU_FP32], tmp_path,
                             "fsdp")
    assert proc.returncode != 0
    assert "ConfigError: trainer: " in proc.stderr and "does not shard (trainer=fsdp)" in proc.stderr
