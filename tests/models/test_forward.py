import torch

from posttrain.models import tiny_llama
from posttrain.models.forward import label_logprobs, label_logprobs_and_entropy, sequence_logprobs
from posttrain.processors import SFTCollator, TextProcessor


def test_fused_lm_head_matches_materialised_logits():
    torch.manual_seed(0)
    model, tok = tiny_llama(hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64)
    batch = SFTCollator(TextProcessor(tok))([{"prompt": "12+3=", "response": "15", "index": 0},
                                       {"prompt": "7*8=", "response": "56", "index": 1}])
    plain = sequence_logprobs(model, batch)
    grads_plain = torch.autograd.grad(plain.sum(), list(model.parameters()))
    model.config.fused_lm_head = True
    fused = sequence_logprobs(model, batch)
    grads_fused = torch.autograd.grad(fused.sum(), list(model.parameters()))
    torch.testing.assert_close(fused, plain, rtol=1e-5, atol=1e-5)
    for a, b in zip(grads_fused, grads_plain):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_masked_positions_are_zero_and_sums_cover_the_response_only():
    model, tok = tiny_llama(hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64)
    batch = SFTCollator(TextProcessor(tok))([{"prompt": "1+1=", "response": "2", "index": 0}])
    logps, mask = label_logprobs(model, batch["input_ids"], batch["attention_mask"], batch["labels"])
    assert mask.sum().item() == 2  # "2" and eos
    assert torch.equal(logps[~mask], torch.zeros_like(logps[~mask]))
    torch.testing.assert_close(sequence_logprobs(model, batch), logps[mask].sum()[None])


def test_entropy_pass_matches_label_logprobs_and_the_categorical_entropy():
    torch.manual_seed(0)
    model, tok = tiny_llama(hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64)
    batch = SFTCollator(TextProcessor(tok))([{"prompt": "12+3=", "response": "15", "index": 0},
                                       {"prompt": "7*8=", "response": "6", "index": 1}])
    inputs = (model, batch["input_ids"], batch["attention_mask"], batch["labels"])
    logps, mask = label_logprobs(*inputs)
    logps_too, entropy, mask_too = label_logprobs_and_entropy(*inputs)
    assert torch.equal(mask, mask_too)
    torch.testing.assert_close(logps_too, logps, rtol=1e-5, atol=1e-6)
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, :-1]
    expected = torch.distributions.Categorical(logits=logits).entropy() * mask  # (B, T-1)
    torch.testing.assert_close(entropy, expected, rtol=1e-5, atol=1e-5)
    assert torch.equal(entropy[~mask], torch.zeros_like(entropy[~mask]))
