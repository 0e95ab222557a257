"""`model.fused_lm_head=true` on every log-prob path: the same values and gradients as the materialised logits
(float32, the tiny LM and the tiny Qwen2.5-VL), and the lm-head module is never run on the hidden states."""
import json

import pytest
import torch

from lightning_modules.distillspec import DistillSpecModule
from lightning_modules.otr import OTRModule
from posttrain.models import save, tiny_llama
from posttrain.models.builders import check_fusable_head
from posttrain.models.forward import hidden_states, label_logprobs_and_entropy, sequence_logprobs
from posttrain.models.vlm import vlm_from_pretrained
from posttrain.processors import SFTCollator, TextProcessor, make_processor
from posttrain.rewards.judges import verdict_logprobs
from posttrain.rollouts import policy_logprobs
from posttrain.utils.config import ConfigError
from tests.vlm import image_examples, tiny_qwen_vl

EXAMPLES = [{"prompt": "12+3=", "response": "15", "index": 0}, {"prompt": "7*8=", "response": "56", "index": 1},
            {"prompt": "9-4=", "response": "5", "index": 2}]


def tiny_lm(seed=0):
    return tiny_llama(hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64, seed=seed)


def lm_case():
    model, tok = tiny_lm()
    return model, SFTCollator(TextProcessor(tok))(EXAMPLES)


def vlm_case():
    model, processor = tiny_qwen_vl(seed=4)
    return model, SFTCollator(make_processor(processor, 128, "{prompt}"))(image_examples())


CASES = {"lm": lm_case, "vlm": vlm_case}


def both_ways(model, compute):
    """compute() and the gradients of a fixed random projection of it, unfused then fused."""
    results = []
    for fused in (False, True):
        model.config.fused_lm_head = fused
        out = compute()
        weights = torch.rand(out.shape, generator=torch.Generator().manual_seed(0))
        params = [p for p in model.parameters() if p.requires_grad]
        results.append((out.detach(), torch.autograd.grad((out * weights).sum(), params, allow_unused=True)))
    model.config.fused_lm_head = False
    return results


def assert_same(results, rtol=1e-5, atol=1e-5):
    (plain, plain_grads), (fused, fused_grads) = results
    torch.testing.assert_close(fused, plain, rtol=rtol, atol=atol)
    for a, b in zip(fused_grads, plain_grads):
        if a is None or b is None:
            assert a is None and b is None
            continue
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


class HeadCalled(AssertionError):
    pass


def forbid_head(model):
    def hook(module, args):
        raise HeadCalled("the lm-head ran on the hidden states")

    return model.get_output_embeddings().register_forward_pre_hook(hook)


@pytest.mark.parametrize("case", ["lm", "vlm"])
@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_policy_logprobs(case, temperature):
    """The online methods' log-probs (GRPO, NFT, RFT, SPARK, PPO), at the rollout temperature; the VLM's over its
    output vocabulary (no image placeholders)."""
    model, batch = CASES[case]()
    results = both_ways(model, lambda: policy_logprobs(model, batch, temperature))
    assert_same(results)
    assert (results[0][0] != 0).any()


@pytest.mark.parametrize("case", ["lm", "vlm"])
def test_sequence_sums_of_spin_and_dpo(case):
    model, batch = CASES[case]()
    assert_same(both_ways(model, lambda: sequence_logprobs(model, batch)))


@pytest.mark.parametrize("case", ["lm", "vlm"])
def test_evaluation_entropy(case):
    model, batch = CASES[case]()
    inputs = (model, batch["input_ids"], batch["attention_mask"], batch["labels"])
    images = batch.get("image_inputs")
    assert_same(both_ways(model, lambda: label_logprobs_and_entropy(*inputs, image_inputs=images)[1]))


@pytest.mark.parametrize("case", ["lm", "vlm"])
def test_training_log_probs_never_run_the_head(case):
    model, batch = CASES[case]()
    model.config.fused_lm_head = True
    handle = forbid_head(model)
    logps = policy_logprobs(model, batch, 0.9)
    logps.sum().backward()
    assert model.get_output_embeddings().weight.grad is not None  # the head's weight is still trained
    sequence_logprobs(model, batch)
    label_logprobs_and_entropy(model, batch["input_ids"], batch["attention_mask"], batch["labels"],
                               image_inputs=batch.get("image_inputs"))
    assert isinstance(model.get_output_embeddings(), torch.nn.Linear)  # put back after the forward
    handle.remove()
    model.config.fused_lm_head = False
    with pytest.raises(HeadCalled):
        forbid_head(model)
        policy_logprobs(model, batch)


def test_hidden_states_of_a_vlm_include_the_images():
    model, batch = vlm_case()
    with torch.no_grad():
        seen = hidden_states(model, batch["input_ids"], batch["attention_mask"], batch["image_inputs"])
        blind = hidden_states(model, batch["input_ids"], batch["attention_mask"])
        logits = model.lm_head(seen)  # (B, T, V)
        expected = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                         **batch["image_inputs"].tensors, mm_token_type_ids=(batch["input_ids"] == model.config.
                                                                             image_token_id).int()).logits
    mask = batch["attention_mask"].bool()
    torch.testing.assert_close(logits[mask], expected[mask], rtol=1e-5, atol=1e-5)
    assert not torch.allclose(seen[mask], blind[mask], atol=1e-3)


def test_judge_verdicts():
    """Pairwise RM / pair_eval / SPARK's self-judge read log P(verdict) over the verdict tokens."""
    model, tok = tiny_lm(seed=3)
    processor = TextProcessor(tok)
    from posttrain.processors import left_pad

    padded = left_pad([processor.prompt(t) for t in ["1+1=2|A:2|B:3|>", "q|A:x|B:yy|>"]], processor.pad_id)
    ids, mask = padded["prompt_input_ids"], padded["prompt_attention_mask"]
    verdicts = tok.convert_tokens_to_ids(["A", "B"])
    results = both_ways(model, lambda: verdict_logprobs(model, ids, mask, verdicts))
    assert_same(results)
    model.config.fused_lm_head = True
    forbid_head(model)
    verdict_logprobs(model, ids, mask, verdicts)


@pytest.mark.parametrize("divergence", ["forward_kl", "reverse_kl", "jsd", "tvd"])
def test_distillspec_divergences(divergence):
    model, tok = tiny_lm(seed=0)
    teacher, _ = tiny_llama(hidden_size=48, num_layers=1, num_heads=2, intermediate_size=64, seed=7)
    module = DistillSpecModule(model, tok, teacher=teacher, divergence=divergence, beta=0.3)
    batch = SFTCollator(TextProcessor(tok))(EXAMPLES)
    results = both_ways(model, lambda: module.distill_loss(batch, divergence, 1.3)[0])
    assert_same(results)
    model.config.fused_lm_head = True
    forbid_head(model)
    forbid_head(teacher)
    loss, metrics = module.distill_loss(batch, divergence, 1.0)
    loss.backward()
    assert 0 < float(metrics["expected_acceptance"]) < 1


@pytest.mark.parametrize("estimator", ["sampled", "expectation"])
def test_otr_losses(estimator):
    model, tok = tiny_lm(seed=1)
    module = OTRModule(model, tok, k=6, temperature=1.5, beta=-0.2, estimator=estimator)
    batch = SFTCollator(TextProcessor(tok))(EXAMPLES)
    labels = batch["labels"][:, 1:]
    mask = labels != -100
    runs = []
    for losses in (module.materialised_losses, module.fused_losses):
        loss, metrics, label_logps, entropy = losses(batch, labels, mask)
        grads = torch.autograd.grad(loss, list(model.parameters()))
        runs.append((loss.detach(), {k: float(v) for k, v in metrics.items()}, label_logps, entropy(), grads))
    (loss, metrics, label_logps, entropy, grads), (f_loss, f_metrics, f_label, f_entropy, f_grads) = runs
    torch.testing.assert_close(f_loss, loss, rtol=1e-5, atol=1e-6)
    assert f_metrics == pytest.approx(metrics, rel=1e-5, abs=1e-6)
    torch.testing.assert_close(f_label, label_logps, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(f_entropy, entropy, rtol=1e-5, atol=1e-6)
    for a, b in zip(f_grads, grads):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)
    forbid_head(model)
    module.fused_losses(batch, labels, mask)[0].backward()


def test_a_head_that_cannot_be_fused_is_a_config_error(tmp_path):
    model, _ = tiny_lm()
    check_fusable_head(model)  # no bias: fine
    model.lm_head = torch.nn.Linear(32, model.config.vocab_size, bias=True)
    with pytest.raises(ConfigError, match="model.fused_lm_head"):
        check_fusable_head(model)
    vlm, processor = tiny_qwen_vl()
    save(vlm, processor, str(tmp_path))
    config = json.load(open(tmp_path / "config.json"))
    config["text_config"]["final_logit_softcapping"] = 30.0
    json.dump(config, open(tmp_path / "config.json", "w"))
    vlm_from_pretrained(str(tmp_path))  # without the fused head a soft-capped head is fine
    with pytest.raises(ConfigError, match="model.fused_lm_head"):
        vlm_from_pretrained(str(tmp_path), fused_lm_head=True)
