"""model=hf loads any causal LM and its tokenizer from a local directory and trains it."""
import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel, Qwen2Config, Qwen2ForCausalLM

from posttrain.models import build_char_tokenizer, save
from posttrain.pipeline import train
from tests.helpers import compose_config


def tiny_gpt2(tok):
    return GPT2LMHeadModel(GPT2Config(vocab_size=len(tok), n_embd=32, n_layer=1, n_head=2, n_positions=128,
                                      bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id))


def tiny_qwen2(tok):
    return Qwen2ForCausalLM(Qwen2Config(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                        num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=128))


# one epoch, the main stage alone
ONE_EPOCH = {"sft": ["trainer.max_epochs=1"],
             "spin": ["method.num_iterations=1", "method.epochs_per_iteration=1", "stages.warmup=null",
                      "stages.control=null"]}


@pytest.mark.parametrize("build", [tiny_gpt2, tiny_qwen2])
@pytest.mark.parametrize("experiment", ["sft", "spin"])
def test_train_from_a_saved_directory(build, experiment, tmp_path):
    tok = build_char_tokenizer()
    torch.manual_seed(0)
    model = build(tok)
    save(model, tok, tmp_path / "model")
    overrides = [f"experiment={experiment}", "debug=tiny", "model=hf",
                 f"model.name_or_path={tmp_path / 'model'}",
                 *ONE_EPOCH[experiment]]
    result = train(compose_config(overrides, tmp_path / "run"))
    assert type(result["module"].model) is type(model)
    assert result["trainer"].global_step == 2
    before = dict(model.named_parameters())
    changed = [not torch.equal(p, before[n]) for n, p in result["module"].model.named_parameters()]
    assert all(changed)


def test_missing_directory_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    cfg = compose_config(["experiment=sft", "model=hf", f"model.name_or_path={tmp_path / 'nope'}"], tmp_path)
    with pytest.raises(Exception, match="model.name_or_path"):
        train(cfg)
