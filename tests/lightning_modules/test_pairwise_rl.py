"""A pairwise PPO run killed mid-training resumes from last.ckpt and ends exactly where an uninterrupted run ends."""
from types import SimpleNamespace

import pytest
import torch

from posttrain.pipeline import train
from tests.helpers import Killed, assert_same_parameters, compose_config

# 2 epochs x 2 rollout batches x 2 PPO epochs (one mini-batch each) = 8 steps; the kill lands inside epoch 2, after
# epoch 1's checkpoint. Anchors are sampled (not greedy), so a resumed run that lost the cached anchors would draw
# different ones for epoch 2's prompts and end elsewhere.
TINY_MODEL = ["model.hidden_size=32", "model.num_heads=2", "model.num_layers=1", "model.intermediate_size=64"]
REWARD_MODEL = ["stages.reward_model.trainer.max_epochs=1", "stages.reward_model.data.train_size=8",
                "stages.reward_model.data.eval_size=8"]
BASE = ["experiment=pairwise_rl", "debug=tiny", "stages.warmup=null", "trainer.max_epochs=2",
        "method.ppo.num_samples=2",
        "method.anchor_temperature=1.0", "method.optimizer.lr=1e-3", "method.ppo.critic_lr=1e-3",
        "method.evaluator.sampled_k=0", *TINY_MODEL, *REWARD_MODEL]


def test_killed_pairwise_rl_run_resumes_to_the_same_result(tmp_path):
    reference = train(compose_config(BASE, tmp_path / "uninterrupted"))

    killed_cfg = compose_config([*BASE, "+callbacks.kill._target_=tests.helpers.KillAtStep", "+callbacks.kill.step=6"],
                                tmp_path / "killed")
    with pytest.raises(Killed):
        train(killed_cfg)
    last = tmp_path / "killed" / "checkpoints" / "main" / "last.ckpt"
    state = torch.load(last, weights_only=False)
    assert state["global_step"] == 4 and len(state["posttrain"]["anchors"]) == 8  # every prompt's anchor, epoch 1
    assert not [k for k in state["state_dict"] if k.startswith(("reference.", "reward_model."))]

    resumed = train(compose_config([*BASE, f"ckpt_path={last}"], tmp_path / "killed"))
    assert resumed["trainer"].global_step == reference["trainer"].global_step == 8
    assert resumed["module"].anchors == reference["module"].anchors
    assert_same_parameters(resumed["module"], reference["module"])  # policy, critic and the frozen networks
    assert resumed["module"].eval_history == reference["module"].eval_history


def prompt_batch(tokenizer, prompts):
    from posttrain.processors import TextProcessor, left_pad

    encoder = TextProcessor(tokenizer)
    return {"examples": [{"prompt": p} for p in prompts], **left_pad([encoder.prompt(p) for p in prompts],
                                                                     encoder.pad_id)}


def test_sampled_anchor_depends_on_the_prompt_only_not_its_batch_or_process():
    """Under DDP each process draws anchors for its own prompts: the same prompt must get the same anchor wherever
    (and after a resume, whenever) it is drawn, so every process judges against one y*."""
    from lightning_modules.pairwise_rl import PairwiseRLModule
    from posttrain.models.builders import tiny_llama
    from posttrain.rewards import ArithmeticVerifier

    model, tokenizer = tiny_llama(hidden_size=32, num_heads=2, num_layers=1, intermediate_size=64)
    def make():
        return PairwiseRLModule(model, tokenizer, reward_model=model, reward=ArithmeticVerifier(),
                                anchor_temperature=1.0, generation={"max_new_tokens": 6})

    first, second = make(), make()
    a = first.anchor_responses(prompt_batch(tokenizer, ["12+5=", "3+4=", "77+8="]))
    b = second.anchor_responses(prompt_batch(tokenizer, ["1+1=", "77+8=", "12+5="]))
    assert a[0] == b[2] and a[2] == b[1]
    draws = {make().anchor_responses(prompt_batch(tokenizer, [p]))[0] for p in ["12+5=", "40+2=", "9+9=", "1+2="]}
    assert len(draws) > 1  # still a sample per prompt, not one fixed string


def _gather_anchors(rank, path, out):
    import torch.distributed as dist

    from lightning_modules.pairwise_rl import PairwiseRLModule

    dist.init_process_group("gloo", init_method=f"file://{path}", rank=rank, world_size=2)
    try:
        mine = SimpleNamespace(anchors={f"q{rank}": f"a{rank}"})
        torch.save(PairwiseRLModule.all_anchors(mine), f"{out}.{rank}")
    finally:
        dist.destroy_process_group()


def test_checkpoint_anchors_are_gathered_from_every_process(tmp_path):
    import torch.multiprocessing as mp

    mp.spawn(_gather_anchors, args=(str(tmp_path / "store"), str(tmp_path / "anchors")), nprocs=2)
    for rank in (0, 1):
        assert torch.load(tmp_path / f"anchors.{rank}") == {"q0": "a0", "q1": "a1"}
