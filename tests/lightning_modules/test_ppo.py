"""The PPO functions pairwise PPO and BT-PPO share: the critic's input rows, the frozen networks' place (outside the
optimizer, the gradient and the checkpoint), and the reward-model cache of the run's reward_model stage."""
import copy

import lightning as L
import pytest
import torch
from torch import nn

from datamodules.prompts import PromptDataModule
from datamodules.tasks import ArithmeticTask
from lightning_modules import ppo as ppo_lib
from lightning_modules.bt_ppo import BTPPOModule
from lightning_modules.bt_rm import BTRMModule
from lightning_modules.pairwise_rl import PairwiseRLModule
from posttrain.models.builders import tiny_llama
from posttrain.models.value_head import ValueModel
from posttrain.pipeline.outputs import load_stage_model, save_stage_model
from posttrain.processors import pack
from posttrain.rewards import ArithmeticVerifier
from posttrain.rollouts import Rollout
from posttrain.utils.config import ConfigError

TINY = {"hidden_size": 32, "num_heads": 2, "num_layers": 1, "intermediate_size": 64}
GOLD = ArithmeticVerifier()
BOS, EOS, PAD = 1, 2, 0


class TokenCritic(nn.Module):
    """V = the input token id at each position, so gathered values show which token the critic read."""

    def forward(self, input_ids, attention_mask):
        return input_ids.float() * attention_mask


def make_rollout(prompts, responses) -> Rollout:
    packed = pack(prompts, responses, PAD, max_length=64)
    mask = packed["labels"][:, 1:] != -100
    rows = len(prompts)
    return Rollout(input_ids=packed["input_ids"], attention_mask=packed["attention_mask"], labels=packed["labels"],
                   old_logps=torch.zeros(mask.shape), mask=mask, rewards=torch.zeros(rows),
                   parsed=torch.ones(rows, dtype=torch.bool), finished=torch.ones(rows, dtype=torch.bool),
                   num_samples=1)


def test_anchor_aware_critic_reads_prefix_then_response_at_the_rollout_positions():
    rollout = make_rollout([[BOS, 5, 6], [BOS, 7]], [[10, 11, EOS], [12, EOS]])
    inputs = ppo_lib.critic_inputs(rollout, [[BOS, 31, 32, 33, 34], [BOS, 39]], PAD)
    assert inputs["input_ids"].tolist() == [[BOS, 31, 32, 33, 34, 10, 11, EOS], [BOS, 39, 12, EOS, PAD, PAD, PAD, PAD]]
    assert inputs["offsets"].tolist() == [2, 0]
    values = ppo_lib.critic_values(TokenCritic(), inputs, rollout.mask)
    # the state before response token k: the prefix's last token for k = 0, then the response's own tokens
    assert values.tolist() == [[0, 0, 34, 10, 11], [0, 39, 12, 0, 0]]
    rows = ppo_lib.critic_rows(inputs, torch.tensor([1]))
    assert rows["input_ids"].tolist() == [[BOS, 39, 12, EOS]]
    plain = ppo_lib.critic_inputs(rollout, None, PAD)  # no anchor: the policy's own rows
    assert plain["input_ids"] is rollout.input_ids and plain["offsets"].tolist() == [0, 0]
    assert ppo_lib.critic_values(TokenCritic(), plain, rollout.mask).tolist() == [[0, 0, 6, 10, 11], [0, 7, 12, 0, 0]]


def test_settings_name_the_bad_key():
    with pytest.raises(ConfigError, match=r"method\.ppo\.lam"):
        ppo_lib.settings({"lam": 1.5}, None)
    with pytest.raises(ConfigError, match=r"method\.ppo"):
        ppo_lib.settings({"lamda": 0.9}, None)
    with pytest.raises(ConfigError, match=r"method\.generation"):
        ppo_lib.settings(None, {"top_k": 5})


@pytest.mark.parametrize("kind", ["judge", "value"])
def test_reward_model_cache_round_trip(kind, tmp_path):
    model, tokenizer = tiny_llama(**TINY)
    if kind == "value":
        model = ValueModel(model)
        nn.init.normal_(model.head.weight)
    save_stage_model(model, tokenizer, str(tmp_path))
    loaded = load_stage_model(str(tmp_path), {"_target_": "posttrain.models.tiny_llama"})
    assert isinstance(loaded, ValueModel) == (kind == "value")
    ids, mask = torch.tensor([[1, 5, 6, 7]]), torch.ones(1, 4, dtype=torch.long)
    if kind == "value":
        torch.testing.assert_close(loaded.score(ids, mask), model.score(ids, mask))
    else:
        torch.testing.assert_close(loaded(input_ids=ids).logits, model(input_ids=ids).logits)


def fit_two_steps(module, tmp_path):
    tokenizer = module.tokenizer
    data = PromptDataModule(tokenizer, ArithmeticTask(train_size=40, val_size=4, test_ood_size=4), batch_size=4,
                            eval_batch_size=8, max_length=64, train_size=8)
    trainer = L.Trainer(max_epochs=1, limit_train_batches=2, logger=False, default_root_dir=tmp_path,
                        enable_progress_bar=False, enable_model_summary=False, accelerator="cpu",
                        callbacks=[L.pytorch.callbacks.ModelCheckpoint(dirpath=tmp_path, save_last=True)])
    trainer.fit(module, datamodule=data)
    return trainer


@pytest.mark.parametrize("method", ["pairwise_rl", "bt_ppo"])
def test_frozen_networks_stay_out_of_optimizer_gradient_and_checkpoint(method, tmp_path):
    model, tokenizer = tiny_llama(**TINY)
    judge = tiny_llama(**TINY, seed=1)[0]
    if method == "pairwise_rl":
        module = PairwiseRLModule(model, tokenizer, reward_model=judge, reward=GOLD,
                                  ppo={"num_samples": 2, "minibatch_size": 8})
    else:
        module = BTPPOModule(model, tokenizer, reward_model=ValueModel(judge), reward=GOLD,
                             ppo={"num_samples": 2, "minibatch_size": 8})
    before = {n: p.detach().clone() for n, p in module.named_parameters()}
    trainer = fit_two_steps(module, tmp_path)
    assert trainer.global_step == 2 * 2  # 2 batches x 2 PPO epochs x 1 mini-batch of 8 rows
    optimized = {id(p) for group in trainer.optimizers[0].param_groups for p in group["params"]}
    for name, param in module.named_parameters():
        frozen = name.startswith(("reference.", "reward_model.")) or name == "critic.backbone.lm_head.weight"
        assert (id(param) in optimized) != frozen, name
        assert torch.equal(param, before[name]) == frozen, name  # the trained ones all moved
    state = torch.load(tmp_path / "last.ckpt", weights_only=False)["state_dict"]
    assert state and not [k for k in state if k.startswith(("reference.", "reward_model."))]
    assert any(k.startswith("critic.") for k in state)


def test_pairwise_rl_rejects_a_scalar_reward_model_and_bt_ppo_a_judge():
    model, tokenizer = tiny_llama(**TINY)
    with pytest.raises(ConfigError, match="reward_model"):
        PairwiseRLModule(model, tokenizer, reward_model=ValueModel(copy.deepcopy(model)), reward=GOLD)
    with pytest.raises(ConfigError, match="reward_model"):
        BTPPOModule(model, tokenizer, reward_model=copy.deepcopy(model), reward=GOLD)
    with pytest.raises(ConfigError, match="method.anchor"):
        PairwiseRLModule(model, tokenizer, reward_model=copy.deepcopy(model), reward=GOLD, anchor="best")
    with pytest.raises(ConfigError, match=r"method\.reward"):
        PairwiseRLModule(model, tokenizer, reward_model=copy.deepcopy(model))


def tied_llama():
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(vocab_size=40, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=2, tie_word_embeddings=True)
    model = LlamaForCausalLM(config)
    assert model.get_output_embeddings().weight is model.get_input_embeddings().weight
    return model


def test_critic_freezes_an_untied_lm_head_but_never_tied_input_embeddings():
    tied = ppo_lib.build_critic(tied_llama()).backbone
    assert tied.get_input_embeddings().weight.requires_grad
    untied = ppo_lib.build_critic(tiny_llama(**TINY)[0]).backbone
    assert untied.get_input_embeddings().weight.requires_grad and not untied.lm_head.weight.requires_grad
    _, tokenizer = tiny_llama(**TINY)
    bt = BTRMModule(tied_llama(), tokenizer).model.backbone
    assert bt.get_input_embeddings().weight.requires_grad


@pytest.mark.parametrize("judge, key", [({"tempalte": "{prompt}{a}{b}"}, "method.judge.tempalte"),
                                        ({"template": "{prompt}|A:{a}|>"}, "method.judge.template"),
                                        ({"verdicts": ["A"]}, "method.judge.verdicts"),
                                        ({"verdicts": ["Yes", "No"]}, "method.judge.verdicts")])
def test_bad_judge_settings_name_the_key_at_construction(judge, key):
    model, tokenizer = tiny_llama(**TINY)
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        PairwiseRLModule(model, tokenizer, reward_model=copy.deepcopy(model), reward=GOLD, judge=judge)


def test_critic_prefix_is_encoded_as_the_judge_reads_it_not_with_the_policy_prompt_template():
    from types import SimpleNamespace

    from posttrain.processors import TextProcessor

    model, tokenizer = tiny_llama(**TINY)
    module = PairwiseRLModule(model, tokenizer, reward_model=copy.deepcopy(model), reward=GOLD)
    module._trainer = SimpleNamespace(datamodule=SimpleNamespace(
        encoder=TextProcessor(tokenizer, prompt_template="Q:{prompt}=")))
    prefixes = module.critic_prefixes(["1+2="], ["3"])
    assert prefixes == [TextProcessor(tokenizer).prompt("1+2=|B:3|A:")]


@pytest.mark.parametrize("method", ["pairwise_rl", "bt_ppo"])
def test_loss_scaled_precision_with_per_network_clipping_is_a_config_error(method):
    from types import SimpleNamespace

    model, tokenizer = tiny_llama(**TINY)
    judge = copy.deepcopy(model)
    cls, judge = (PairwiseRLModule, judge) if method == "pairwise_rl" else (BTPPOModule, ValueModel(judge))
    module = cls(model, tokenizer, reward_model=judge, reward=GOLD)
    module._trainer = SimpleNamespace(precision_plugin=SimpleNamespace(scaler=torch.amp.GradScaler("cpu")))
    with pytest.raises(ConfigError, match=r"trainer\.precision"):
        module.configure_optimizers()
    module = cls(model, tokenizer, reward_model=judge, reward=GOLD, ppo={"grad_clip": None})
    module._trainer = SimpleNamespace(precision_plugin=SimpleNamespace(scaler=torch.amp.GradScaler("cpu")))
    ppo_lib.check_precision(module.trainer, module.ppo["grad_clip"])  # no clip, nothing to get wrong
