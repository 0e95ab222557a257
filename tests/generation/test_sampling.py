import pytest
import torch

from posttrain.generation import generate, sampling_logprobs
from posttrain.models import tiny_llama
from posttrain.processors import TextProcessor, left_pad


@pytest.fixture(scope="module")
def setup():
    model, tok = tiny_llama(hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64, seed=1)
    enc = TextProcessor(tok)
    prompts = left_pad([enc.prompt("12+3="), enc.prompt("1+1="), enc.prompt("999+999=")], tok.pad_token_id)
    return model.eval(), tok, prompts


def run(model, tok, prompts, **kw):
    return generate(model, prompts["prompt_input_ids"], prompts["prompt_attention_mask"], eos_token_id=tok.eos_token_id,
                    pad_token_id=tok.pad_token_id, **kw)


def test_seeded_sampling_is_reproducible(setup):
    model, tok, prompts = setup
    a = run(model, tok, prompts, max_new_tokens=12, num_samples=3, generator=torch.Generator().manual_seed(5))
    b = run(model, tok, prompts, max_new_tokens=12, num_samples=3, generator=torch.Generator().manual_seed(5))
    c = run(model, tok, prompts, max_new_tokens=12, num_samples=3, generator=torch.Generator().manual_seed(6))
    assert a.tokens.shape == (9, 12)
    assert torch.equal(a.tokens, b.tokens) and torch.equal(a.logprobs, b.logprobs)
    assert not torch.equal(a.tokens, c.tokens)


def test_greedy_matches_hf_generate(setup):
    model, tok, prompts = setup
    ours = run(model, tok, prompts, max_new_tokens=10, temperature=0.0)
    theirs = model.generate(input_ids=prompts["prompt_input_ids"], attention_mask=prompts["prompt_attention_mask"],
                            max_new_tokens=10, do_sample=False, eos_token_id=tok.eos_token_id,
                            pad_token_id=tok.pad_token_id)[:, prompts["prompt_input_ids"].shape[1]:]
    for row, ref in zip(ours.token_lists(), theirs.tolist()):
        assert row == ref[: len(row)]


def test_logprobs_are_those_of_the_model_without_cache(setup):
    """The cached, left-padded sampler must score each token as a plain forward pass over the unpadded row does."""
    model, tok, prompts = setup
    out = run(model, tok, prompts, max_new_tokens=6, temperature=0.7, generator=torch.Generator().manual_seed(0))
    for i in range(3):
        prompt = prompts["prompt_input_ids"][i][prompts["prompt_attention_mask"][i].bool()]
        response = out.tokens[i][out.mask[i]]
        full = torch.cat([prompt, response])[None]
        logits = model(input_ids=full).logits[0, len(prompt) - 1 : -1]  # (L, V)
        expected = torch.log_softmax(logits / 0.7, -1).gather(-1, response[:, None]).squeeze(-1)
        torch.testing.assert_close(out.logprobs[i][out.mask[i]], expected, atol=1e-4, rtol=1e-4)


def test_eos_stops_a_row_and_pads_after_it(setup):
    model, tok, prompts = setup
    with torch.no_grad():
        model.lm_head.bias = None
        bias = torch.zeros(len(tok))
        bias[tok.eos_token_id] = 1e4  # force eos as the first token
    original = model.lm_head.forward
    model.lm_head.forward = lambda h: original(h) + bias
    try:
        out = run(model, tok, prompts, max_new_tokens=5, temperature=1.0, generator=torch.Generator().manual_seed(0))
    finally:
        model.lm_head.forward = original
    assert out.finished.all() and out.lengths.tolist() == [1, 1, 1]
    assert (out.tokens[:, 1:] == tok.pad_token_id).all()


def test_top_k_and_top_p_truncate():
    logits = torch.tensor([[3.0, 2.0, 1.0, 0.0]])
    assert torch.isinf(sampling_logprobs(logits, top_k=2)[0, 2:]).all()
    probs = torch.softmax(logits, -1)[0]  # 0.64, 0.24, 0.09, 0.03
    kept = sampling_logprobs(logits, top_p=0.8)[0]
    assert torch.isfinite(kept[:2]).all() and torch.isinf(kept[2:]).all()
    torch.testing.assert_close(kept[:2].exp(), probs[:2] / probs[:2].sum())


def test_bad_arguments_raise():
    model, tok = tiny_llama(hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64)
    ids = torch.ones(1, 2, dtype=torch.long)
    with pytest.raises(ValueError, match="top_p"):
        generate(model, ids, ids, max_new_tokens=2, eos_token_id=2, pad_token_id=0, top_p=0.0)
    with pytest.raises(ValueError, match="max_new_tokens"):
        generate(model, ids, ids, max_new_tokens=0, eos_token_id=2, pad_token_id=0)
