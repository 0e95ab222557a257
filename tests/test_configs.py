"""Every experiment composes and trains; bad configuration stops with an error that names the key."""
import json
import os

import pytest
import torch
from hydra.errors import HydraException
from hydra.utils import instantiate
from safetensors.torch import load_file

from posttrain.models.value_head import ValueModel
from posttrain.pipeline import train
from posttrain.pipeline.outputs import load_stage_model
from posttrain.pipeline.stages import resolved
from tests.helpers import compose_config, experiments

# Overrides that make every stage of one experiment two steps on tiny data (debug=tiny: 8 examples in batches of 4,
# two training batches per epoch); every stage runs, cached ones and controls included.
WARMUP = ["stages.warmup.trainer.max_epochs=1"]
OWN_WARMUP_DATA = [*WARMUP, "stages.warmup.data.train_size=8", "stages.warmup.data.eval_size=8",
                   "stages.warmup.data.batch_size=4"]
# Online methods learn nothing from an untrained model under a real verifier (every group all wrong), so their
# runs use a coin-flip verifier that gives mixed groups (and lets truncated answers count).
COIN_FLIP = ["reward._target_=tests.helpers.CoinFlipVerifier"]
ONLINE = [*WARMUP, *COIN_FLIP, "trainer.max_epochs=1", "method.truncated_is_wrong=false"]
# PPO runs train their reward model first (from the warm-up): one epoch of 8 pairs.
PPO = [*WARMUP, "trainer.max_epochs=1", "method.ppo.epochs=1", "stages.reward_model.trainer.max_epochs=1",
       "stages.reward_model.data.train_size=8", "stages.reward_model.data.eval_size=8",
       "stages.reward_model.data.batch_size=4"]
# Diffusion runs: the pretraining stage on 8 images, a smaller UNet, 2-step DDIM samples.
DIFFUSION = ["stages.pretrain.trainer.max_epochs=1", "stages.pretrain.data.train_size=8",
             "stages.pretrain.data.batch_size=4", "stages.pretrain.data.eval_size=8", "trainer.max_epochs=1",
             "model.block_out_channels=[8,16]", "model.norm_num_groups=4", "model.sample_steps=2",
             *[f"{data}.task.{split}_size=40" for data in ("data", "stages.pretrain.data")
               for split in ("train", "val", "test")]]
STAGES = {
    "sft": ["trainer.max_epochs=1"],
    "spin": [*WARMUP, "method.num_iterations=1", "method.epochs_per_iteration=1"],
    "otr": [*OWN_WARMUP_DATA, "trainer.max_epochs=1"],
    "pairwise_rm": [*OWN_WARMUP_DATA, "trainer.max_epochs=1"],
    "bt_rm": [*OWN_WARMUP_DATA, "trainer.max_epochs=1"],
    "dpo": [*OWN_WARMUP_DATA, "trainer.max_epochs=1"],
    "rft": ONLINE, "grpo": ONLINE, "nft": ONLINE, "pairwise_rl": PPO, "bt_ppo": PPO,
    # the tiny VLM on the shapes task; the coin flip takes no options (exact_answer's normalize goes)
    "grpo_vlm": [*ONLINE, "~reward.normalize", "method.evaluator.sampled_k=2"],
    # one solve batch: one solve update and one reward-period update on its 4 recycled examples; the control
    # (policy-only GRPO) makes its two updates from two solve batches
    "spark": [*ONLINE, "stages.warmup.data.train_size=8", "stages.warmup.data.batch_size=4",
              "+stages.warmup.trainer.limit_train_batches=2",
              "trainer.limit_train_batches=1", "method.reward_batch_size=4",
              "+stages.control.trainer.limit_train_batches=2"],
    # warm-up on its own QA + true-label critic data; the evaluator's self-critique on 2 questions with N up to 4
    "llava_critic_r1": [*ONLINE, "~reward.alpha", "stages.warmup.data.train_size=8", "stages.warmup.data.batch_size=4",
                        "method.evaluator.self_critique_questions=2", "method.evaluator.self_critique_n=[1,2,4]"],
    "distillspec": [*WARMUP, "trainer.max_epochs=1", "trainer.check_val_every_n_epoch=1",
                    "stages.teacher.trainer.max_epochs=1",
                    "method.speculative.num_prompts=2", "method.speculative.repeats=1",
                    "method.speculative.max_new_tokens=4"],
    # the coin flip verifies about half of the sampled answers, so the SFT stage gets a file of ~16 examples
    "seppo": [*DIFFUSION, "method.sample_steps=2", "method.diagnostics_every=1"],
    "diffusion_dpo": DIFFUSION,
    # 24 expert tasks of two-step episodes make 28 SFT rows (two batches of 16); short answers; cheap evaluations
    # (2 tasks, Div@2, a TV of 2 samples); the PPO arm makes one update per rollout step
    "gflowvlm": [*WARMUP, "data.expert_tasks=24", "data.eval_size=2", "env.max_steps=2", "method.num_samples=2",
                 "method.generation.max_new_tokens=8", "method.ppo.epochs=1", "method.evaluator.num_samples=2",
                 "method.evaluator.diversity_tasks=1", "method.evaluator.tv_samples=2"],
    # 8 queries through the scripted agents; each SFT and DPO arm two steps on its file (every query gives a pair)
    "aidsafe": ["trainer.max_epochs=1", "data.task.eval_size=8", "method.evaluator.max_new_tokens=8",
                "stages.pairs_sampling.method.harmful_only=false", "stages.pairs_belief.method.harmful_only=false",
                "stages.pairs_sampling.method.max_new_tokens=8", "stages.pairs_belief.method.max_new_tokens=8",
                "stages.pairs_belief.method.iterations=1", "stages.pairs_belief.method.candidates=2",
                # a barely trained model's pairs mostly tie (dropped by default): keep them so DPO has data
                "stages.pairs_sampling.method.keep_ties=true", "stages.pairs_belief.method.keep_ties=true",
                "stages.dpo_sampling.data.batch_size=4", "stages.dpo_belief.data.batch_size=4",
                "stages.dpo_sampling.trainer.max_epochs=1", "stages.dpo_belief.trainer.max_epochs=1",
                "stages.score_dpo_sampling.method.max_new_tokens=8", "stages.score_dpo_belief.method.max_new_tokens=8"],
    # PRELUDE interactions train nothing: one seed's 6 rounds for every agent (debug=tiny's batch keys dropped)
    "cipher": ["~data.batch_size", "~data.eval_batch_size", "~data.train_size", "~data.eval_size", "data.rounds=6",
               "data.seeds=[0]"],
    # 2 demonstration episodes, 1 held-out grounding episode, one epoch of 2 steps per arm, one 4-step episode per
    # closed-loop split
    "internvla_m1": ["stages.grounding.trainer.max_epochs=1", "stages.grounding.trainer.limit_train_batches=2",
                     "stages.demos.data.count=2", "trainer.max_epochs=1",
                     "stages.grounding.data.task.eval_episodes=1", "stages.grounding.data.task.stride=8",
                     "stages.grounding.data.batch_size=4", "data.grounding_batch_size=2", "data.eval_episodes=1",
                     "data.eval_batch_size=1", "method.evaluator.max_steps=4", "method.evaluator.sample_steps=2",
                     "method.evaluator.max_new_tokens=8"],
    # 2 single-appearance demonstrations, a 2-episode render pool, 2 generator steps, one edit per episode (probes
    # 5 steps, no filter), every arm 2 steps, one 4-step episode per appearance split and one expert episode (every
    # 8th frame) per offline split
    "emma": ["stages.demos.data.count=2", "stages.pool.data.count=2", "stages.pool.method.stride=10",
             "stages.generator.trainer.max_steps=2", "stages.generator.data.batch_size=4", "emma.prompts=1",
             "emma.steps=2", "stages.generated.method.probe_steps=5", "stages.generated.method.filter=null",
             "stages.generated.method.sample_steps=2", "data.eval_episodes=1", "data.eval_batch_size=1",
             "method.evaluator.max_steps=4", "model.sample_steps=2", "emma.frame_episodes=1", "data.frame_stride=8"],
    "rs_sft": [*WARMUP, *COIN_FLIP, "trainer.max_epochs=1", "stages.generate.method.num_samples=4",
               "stages.generate.method.max_per_prompt=4", "stages.main.data.batch_size=4"],
}
# Metrics each experiment's evaluation must report (default: generation accuracy and reference NLL).
PAIR_METRICS = {f"{split}/{name}" for split in ("val", "test_ood")
                for name in ("pair_accuracy", "pair_accuracy_one_order", "ece", "brier", "position_consistency")}
DIFFUSION_METRICS = {f"{split}/{name}" for split in ("val", "test") for name in ("reward", "reward_winners", "mmd")}
EVAL_KEYS = {"seppo": DIFFUSION_METRICS | {"aaf/flip_fraction", "aaf/sign_agreement"},
             "diffusion_dpo": DIFFUSION_METRICS,
             "aidsafe": {"heldout/safe_rate", "jailbreak/safe_rate", "benign/over_refusal", "heldout/faithfulness"},
             "gflowvlm": {"val/success", "test_ood/success", "val/invalid", "val/div@2", "val/tv_terminal"},
             "pairwise_rm": PAIR_METRICS,
             "bt_rm": PAIR_METRICS | {"val/reward_tau_within", "val/reward_tau_across"},
             "dpo": PAIR_METRICS | {"val/accuracy", "test_ood/accuracy", "val/rewards/margins", "val/logps/accuracies"},
             # the decomposition task: exact measures of the answer distribution next to greedy exact match
             "spin": {f"{split}/{name}" for split in ("val", "test")
                      for name in ("accuracy", "nll", "valid", "tv", "kl")},
             "cipher": {"dataset/examples", "cost/oracle", "cost/cipher_5", "cost/cipher_1", "cost/no_learning"},
             "emma": {f"{prefix}{split}/{name}" for split in ("demo", "in_domain", "held_out_objects",
                                                              "held_out_background", "held_out_lighting")
                      for prefix, name in (("", "success"), ("", "reached"), ("", "grasped"), ("", "distance"),
                                           ("offline/", "action_mse"))},
             "internvla_m1": {"val/success", "test_combos/success", "test_paraphrase/success", "val/steps",
                              "grounding/box_iou50", "grounding/point_acc"},
             "llava_critic_r1": {"val/critic_accuracy", "val/critic_format", "val/position_bias", "qa/policy_accuracy",
                                 "qa/policy_format", "qa/selfcritique@4", "qa/basecritique@4", "qa/majority@4",
                                 "qa/pass@4"}}


# Stages that add no row of their own: aidsafe's DPO arms are scored by the dataset stages after them (score_dpo_*).
UNSCORED_STAGES = {"aidsafe": 2}


# Parameters a method leaves untrained on purpose (names as in `module.named_parameters()`); every other parameter it
# is given must change in two steps, so a method that wrongly freezes one fails here.
FROZEN = {
    # the value head reads hidden states, so the (untied) lm-head is unused; L_BT sees only r_w − r_l, not the bias
    "bt_rm": {"model.backbone.lm_head.weight", "model.head.bias"},
    # the critic is a value model on a copy of the reward model: its (untied) lm-head is unused
    "pairwise_rl": {"critic.backbone.lm_head.weight"},
    "bt_ppo": {"critic.backbone.lm_head.weight"},
    "emma": {"model.planner.lm_head.weight"},  # no co-training: the planner's LM head is unused (frozen)
}
FROZEN_CONTROL = {"pairwise_rm": FROZEN["bt_rm"]}  # its control is a Bradley–Terry RM


def start_values(module, initial, reward_model) -> dict:
    """The starting value of every parameter the method was given to train, by its name in the module: the policy or
    reward model from the initial model (under its value head's `backbone.` if it has one), a PPO critic from the
    reward model it copies (critic_init: reward_model), every value head at zero."""
    starts = {}
    for attr, source in (("model", initial), ("critic", reward_model)):
        network = getattr(module, attr, None)
        if network is None:
            continue
        source = getattr(source, "backbone", source)
        if isinstance(network, ValueModel):
            starts.update({f"{attr}.backbone.{n}": p for n, p in source.named_parameters()})
            starts.update({f"{attr}.head.{n}": torch.zeros_like(p) for n, p in network.head.named_parameters()})
        else:
            starts.update({f"{attr}.{n}": p for n, p in source.named_parameters()})
    return starts


def start_network(cfg, result, key):
    """The network stage `key` started from: a fresh model, or its (cached) start stage's output, read back."""
    stage = result["stages"][key].planned.stage
    if stage.start == "model":
        return instantiate(cfg.model)[0]
    start = result["stages"][stage.start].planned
    assert start.stage.cache, "a test start stage is cached, so its output can be read back untouched"
    return load_stage_model(start.directory, cfg.model)


def assert_every_parameter_changed(module, initial, reward_model, frozen) -> None:
    trained = dict(module.named_parameters())
    starts = start_values(module, initial, reward_model)
    assert frozen <= set(starts), f"allow-listed parameters that do not exist: {frozen - set(starts)}"
    assert not [n for n in frozen if trained[n].requires_grad], "an allow-listed parameter is trained: drop it"
    unchanged = [n for n, p in starts.items() if n not in frozen and torch.equal(p, trained[n].detach())]
    assert not unchanged, f"parameters that did not change: {unchanged}"


@pytest.mark.parametrize("experiment", experiments())
def test_every_stage_of_the_experiment_runs_two_steps_and_changes_every_parameter(experiment, tmp_path):
    cfg = compose_config([f"experiment={experiment}", "debug=tiny", *STAGES[experiment]], tmp_path)
    result = train(cfg)
    assert set(result["stages"]) == {k for k, v in cfg.stages.items() if v is not None}
    reward_model = result["stages"]["reward_model"].output if "reward_model" in result["stages"] else None
    for key, stage in result["stages"].items():
        assert stage.module is not None, f"{key}: every stage ran (no cache from earlier tests)"
        if stage.planned.stage.output in ("dataset", "dataset_dir"):
            assert os.path.exists(stage.output), key
            if experiment in ("rs_sft", "internvla_m1"):  # its path reached the stages that read it
                assert any(stage.output in json.dumps(resolved(other.planned.data))
                           for other in result["stages"].values())
            continue
        assert stage.trainer.global_step == 2, key
        if key in ("main", "control"):
            frozen = FROZEN.get(experiment, set()) if key == "main" else FROZEN_CONTROL.get(experiment, set())
            assert_every_parameter_changed(stage.module, start_network(cfg, result, key), reward_model, frozen)
    expected = EVAL_KEYS.get(experiment, {"val/accuracy", "test_ood/accuracy", "val/nll"})
    from_rows = experiment in ("rs_sft", "cipher")
    assert expected <= set(result["rows"][-1] if from_rows else result["module"].eval_history[-1])
    assert len(result["rows"]) >= len(result["stages"]) - UNSCORED_STAGES.get(experiment, 0)


# Mixed precision: the model's parameters in bfloat16 under bf16-mixed autocast, for every experiment (stages with a
# model config of their own, e.g. DistillSpec's teacher, are set to it too).
BF16 = ["model.dtype=bfloat16", "trainer.precision=bf16-mixed"]
BF16_STAGE_MODELS = {"distillspec": ["stages.teacher.model.dtype=bfloat16"],
                     "emma": ["stages.generator.model.dtype=bfloat16"]}


def network_dtypes(network) -> set[torch.dtype]:
    """The dtypes of a network's parameters, value heads left out (they stay float32 on purpose: `ValueModel`)."""
    return {p.dtype for name, p in network.named_parameters() if not name.startswith("head.")}


@pytest.mark.parametrize("experiment", experiments())
def test_every_stage_of_the_experiment_runs_two_steps_in_bfloat16(experiment, tmp_path):
    overrides = [f"experiment={experiment}", "debug=tiny", *STAGES[experiment], *BF16,
                 *BF16_STAGE_MODELS.get(experiment, [])]
    cfg = compose_config(overrides, tmp_path)
    result = train(cfg)
    for key, stage in result["stages"].items():
        if stage.planned.stage.output in ("dataset", "dataset_dir"):
            continue
        assert stage.trainer.global_step == 2 and stage.trainer.precision == "bf16-mixed", key
        assert network_dtypes(stage.output) == {torch.bfloat16}, key
    main = result["stages"]["main"]
    if main.planned.stage.output == "dataset":  # nothing trained: the interaction ran with the model in bfloat16
        assert network_dtypes(main.module.model) == {torch.bfloat16}
        return
    start = start_network(cfg, result, "main")
    assert network_dtypes(start) == {torch.bfloat16}  # a cached start stage reloads in bfloat16 too
    trained = dict(getattr(main.output, "backbone", main.output).named_parameters())  # a reward model's backbone
    changed = [n for n, p in getattr(start, "backbone", start).named_parameters() if not torch.equal(p, trained[n])]
    assert changed, "two bfloat16 steps changed the policy"


def test_cached_stage_reloads_in_the_configured_dtype(tmp_path):
    """A rerun takes the warm-up from the cache, read back through the model builder in model.dtype."""
    overrides = ["experiment=grpo", "debug=tiny", *STAGES["grpo"], *BF16, f"paths.cache_dir={tmp_path}/cache"]
    first = train(compose_config(overrides, tmp_path / "first"))
    cfg = compose_config(overrides, tmp_path / "again")
    again = train(cfg)
    assert first["stages"]["warmup"].module is not None and again["stages"]["warmup"].module is None  # cache hit
    assert network_dtypes(again["module"].model) == {torch.bfloat16}  # the main stage trained the reloaded model
    directory = again["stages"]["warmup"].planned.directory
    saved, reloaded = load_file(os.path.join(directory, "model.safetensors")), load_stage_model(directory, cfg.model)
    for name, param in reloaded.named_parameters():
        assert param.dtype == saved[name].dtype == torch.bfloat16 and torch.equal(param, saved[name]), name


def test_spin_alone_runs_its_own_number_of_epochs(tmp_path):
    """method=spin without its experiment: SPIN sets num_iterations * epochs_per_iteration epochs itself."""
    cfg = compose_config(["method=spin", "debug=tiny", "method.num_iterations=2", "method.epochs_per_iteration=1",
                          "trainer.max_epochs=5"], tmp_path)
    result = train(cfg)
    assert result["trainer"].current_epoch == 2 and result["trainer"].global_step == 4
    assert [row["iteration"] for row in result["rows"]] == [1, 2]


@pytest.mark.parametrize(
    "override, key",
    [
        ("method.beta=-0.1", "method.beta"),
        ("method.loss_type=ipo", "method.loss_type"),
        ("method.optimizer._target_=torch.optim.Adagradd", "method.optimizer"),
        ("+method.optimizer.lrr=1", "method.optimizer.lrr"),
        ("method.optimizer.lr=-1", "method.optimizer.lr"),
        ("method.scheduler.decay=step", "method.scheduler.decay"),
        ("+method.generation.top_kk=5", "method.generation.top_kk"),
        ("+method.evaluator.sampled_kk=2", "method.evaluator"),
        ("data.batch_size=0", "data.batch_size"),
        ("data.task.numbers=[5,20]", "data.task.numbers"),
        ("method.num_iterations=0", "method.num_iterations"),
    ],
)
def test_bad_value_names_the_key(override, key, tmp_path):
    cfg = compose_config(["experiment=spin", "debug=tiny", "stages.warmup=null", "stages.control=null", override],
                         tmp_path)
    with pytest.raises(Exception, match=key.replace(".", r"\.")):
        train(cfg)


def test_unknown_experiment_names_the_group(tmp_path):
    with pytest.raises(HydraException, match="experiment"):
        compose_config(["experiment=does_not_exist"], tmp_path)


def test_pairwise_ppo_judge_prompt_follows_the_reward_model_stage(tmp_path):
    cfg = compose_config(["experiment=pairwise_rl", "stages.reward_model.method.template='{prompt}#{a}#{b}>'",
                          "stages.reward_model.method.verdicts=[Y,N]"], tmp_path)
    assert cfg.method.judge.template == "{prompt}#{a}#{b}>" and list(cfg.method.judge.verdicts) == ["Y", "N"]


@pytest.mark.parametrize("devices, nodes", [(8, 1), (4, 2)])
def test_fsdp_shards_data_over_every_process_of_every_node(devices, nodes, tmp_path):
    cfg = compose_config(["experiment=spin", "trainer=fsdp", f"trainer.devices={devices}",
                          f"trainer.num_nodes={nodes}"], tmp_path)
    strategy = cfg.trainer.strategy
    assert strategy.data_parallel_size == devices * nodes
    assert strategy.tensor_parallel_size == 1
