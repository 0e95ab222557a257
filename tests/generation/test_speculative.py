"""Speculative decoding is exact: greedy reproduces the target's greedy decoding token for token, sampling reproduces
the target's distribution (chi-squared), with per-row acceptance in batches and left-padded prompts of mixed length."""
import copy

import pytest
import torch
from scipy import stats
from transformers import LlamaConfig, LlamaForCausalLM

from posttrain.generation import generate, speculative_generate
from posttrain.models.builders import tiny_llama
from posttrain.processors import left_pad
from posttrain.utils.config import ConfigError

PROMPTS = [[1, 5, 6, 7], [1, 8], [1, 9, 10, 11, 12, 13], [1, 20, 21], [1, 30, 31, 32, 33]]


def perturbed(model, scale, seed):
    """A copy of `model` with noisy output weights: agrees with it on some tokens, not all."""
    clone = copy.deepcopy(model)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        w = clone.lm_head.weight
        w.add_(scale * w.std() * torch.randn(w.shape, generator=gen, dtype=w.dtype))
    return clone


@pytest.fixture(scope="module")
def models():
    target, tokenizer = tiny_llama(64, 2, 4, 128, seed=1)
    small, _ = tiny_llama(32, 1, 2, 64, seed=2)
    target = target.double()  # float64: no near-tie of the argmax flips between chunked and one-token forwards
    return target, {"random": small.double(), "close": perturbed(target, 0.5, 3),
                    "same": copy.deepcopy(target)}, tokenizer


@pytest.mark.parametrize("gamma", [1, 3, 4])
@pytest.mark.parametrize("draft_name", ["random", "close", "same"])
def test_greedy_matches_target_greedy(models, gamma, draft_name):
    target, drafts, tok = models
    batch = left_pad(PROMPTS, tok.pad_token_id)
    args = dict(max_new_tokens=24, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    ref = generate(target, batch["prompt_input_ids"], batch["prompt_attention_mask"], temperature=0, **args)
    out = speculative_generate(target, drafts[draft_name], batch["prompt_input_ids"], batch["prompt_attention_mask"],
                               gamma=gamma, mode="greedy", **args)
    assert out.token_lists() == ref.token_lists()
    assert torch.equal(out.mask, ref.mask)
    alpha = out.stats["acceptance_rate"]
    if draft_name == "same":
        assert alpha == 1.0 and out.stats["tokens_per_call"] > gamma  # bonus token counted; truncation at the end
    if draft_name == "close":
        assert 0 < alpha < 1
    assert 1.0 <= out.stats["tokens_per_call"] <= gamma + 1


def test_greedy_rows_accept_different_counts(models):
    target, drafts, tok = models
    batch = left_pad(PROMPTS, tok.pad_token_id)
    out = speculative_generate(target, drafts["close"], batch["prompt_input_ids"], batch["prompt_attention_mask"],
                               gamma=4, mode="greedy", max_new_tokens=24, eos_token_id=None, pad_token_id=0)
    rates = out.accepted.double() / out.decided.double()
    assert len(set(rates.tolist())) > 1  # the test really exercises per-row cache bookkeeping
    assert out.lengths.tolist() == [24] * len(PROMPTS)


def small_vocab_model(seed, hidden, layers, vocab=6):
    config = LlamaConfig(vocab_size=vocab, hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers,
                         num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=64,
                         pad_token_id=0, bos_token_id=1, eos_token_id=None, tie_word_embeddings=False)
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config).double()
    with torch.no_grad():
        model.lm_head.weight.mul_(40.0)  # random tiny models are near-uniform; make p and q differ visibly
    return model.eval()


def exact_joint(target, prompt, length, temperature):
    """p(y_1..y_length | prompt) under softmax(target / T), enumerated: (V,) * length tensor."""
    vocab = target.config.vocab_size
    joint = torch.ones(1, dtype=torch.float64)
    prefixes = torch.tensor([prompt])
    for _ in range(length):
        logits = target(input_ids=prefixes).logits[:, -1].double()  # (V^t, V)
        p = torch.softmax(logits / temperature, -1)
        joint = (joint[:, None] * p).reshape(-1)
        prefixes = torch.cat([prefixes.repeat_interleave(vocab, 0), torch.arange(vocab).repeat(len(prefixes))[:,
                                                                                                              None]], 1)
    return joint


def chi_squared_pvalue(counts, probs, min_expected=5.0):
    """Pearson's test with cells of small expectation pooled into one."""
    expected = probs * counts.sum()
    big = expected >= min_expected
    obs = torch.cat([counts[big], counts[~big].sum()[None]]).double()
    exp = torch.cat([expected[big], expected[~big].sum()[None]])
    keep = exp > 0
    return stats.chisquare(obs[keep].numpy(), exp[keep].numpy() * obs.sum().item() / exp[keep].sum().item()).pvalue


@pytest.mark.parametrize("mode, temperature", [("sample", 1.0), ("sample", 0.7)])
def test_sampling_reproduces_target_distribution(mode, temperature):
    target, draft = small_vocab_model(0, 32, 2), small_vocab_model(1, 16, 1)
    prompts = [[1, 2, 3], [1, 4]]  # two prompt lengths interleaved: left padding and per-row acceptance at once
    reps, length = 6000, 3
    batch = left_pad(prompts * reps, 0)
    gen = torch.Generator().manual_seed(123)
    out = speculative_generate(target, draft, batch["prompt_input_ids"], batch["prompt_attention_mask"], gamma=2,
                               max_new_tokens=length, eos_token_id=None, pad_token_id=0, mode=mode,
                               temperature=temperature, generator=gen)
    assert 0.05 < out.stats["acceptance_rate"] < 0.95
    vocab = 6
    for i, prompt in enumerate(prompts):
        seqs = out.tokens[i::len(prompts)]  # (reps, length)
        codes = (seqs * torch.tensor([vocab ** 2, vocab, 1])).sum(-1)
        counts = torch.bincount(codes, minlength=vocab ** length)
        with torch.no_grad():
            probs = exact_joint(target, prompt, length, temperature)
        assert chi_squared_pvalue(counts, probs) > 1e-3


def test_empirical_acceptance_matches_one_minus_tvd():
    target, draft = small_vocab_model(0, 32, 2), small_vocab_model(1, 16, 1)
    batch = left_pad([[1, 2, 3]] * 4000, 0)
    out = speculative_generate(target, draft, batch["prompt_input_ids"], batch["prompt_attention_mask"], gamma=3,
                               max_new_tokens=6, eos_token_id=None, pad_token_id=0, mode="sample",
                               generator=torch.Generator().manual_seed(0))
    assert out.stats["acceptance_rate"] == pytest.approx(out.stats["expected_acceptance"], abs=0.02)


def test_lenience_one_is_lossless_and_lower_lenience_accepts_more():
    target, draft = small_vocab_model(0, 32, 2), small_vocab_model(1, 16, 1)
    batch = left_pad([[1, 2, 3], [1, 4]] * 200, 0)
    run = lambda mode, eps: speculative_generate(  # noqa: E731
        target, draft, batch["prompt_input_ids"], batch["prompt_attention_mask"], gamma=3, max_new_tokens=6,
        eos_token_id=None, pad_token_id=0, mode=mode, lenience=eps, generator=torch.Generator().manual_seed(5))
    assert torch.equal(run("sample", 1.0).tokens, run("lenient", 1.0).tokens)
    alphas = [run("lenient", eps).stats["acceptance_rate"] for eps in (1.0, 0.5, 0.1)]
    assert alphas[0] < alphas[1] < alphas[2]


def test_eos_stops_rows_and_max_new_tokens_truncates(models):
    target, drafts, tok = models
    batch = left_pad(PROMPTS, tok.pad_token_id)
    out = speculative_generate(target, drafts["same"], batch["prompt_input_ids"], batch["prompt_attention_mask"],
                               gamma=4, mode="greedy", max_new_tokens=7, eos_token_id=None, pad_token_id=0)
    assert out.tokens.shape == (len(PROMPTS), 7) and bool(out.mask.all())
    eos = int(out.tokens[0, 2])  # pretend the third token of row 0 is eos: row 0 stops there
    out2 = speculative_generate(target, drafts["same"], batch["prompt_input_ids"], batch["prompt_attention_mask"],
                                gamma=4, mode="greedy", max_new_tokens=7, eos_token_id=eos, pad_token_id=0)
    first = out.tokens[0].tolist().index(eos)
    assert out2.token_lists()[0] == out.tokens[0, : first + 1].tolist() and bool(out2.finished[0])


@pytest.mark.parametrize("kwargs, key", [({"gamma": 0}, "gamma"), ({"mode": "beam"}, "mode"),
                                          ({"lenience": 0.0}, "lenience"), ({"temperature": 0.0}, "temperature")])
def test_bad_arguments_name_the_key(models, kwargs, key):
    target, drafts, tok = models
    batch = left_pad(PROMPTS[:1], tok.pad_token_id)
    args = {"gamma": 2, "max_new_tokens": 3, "eos_token_id": None, "pad_token_id": 0, **kwargs}
    with pytest.raises(ConfigError, match=key):
        speculative_generate(target, drafts["random"], batch["prompt_input_ids"], batch["prompt_attention_mask"],
                             **args)


def test_eval_mode_restores_training_and_leaves_eval_models_alone():
    from posttrain.generation import eval_mode

    model = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Dropout(0.5))
    with eval_mode(model):
        assert not model.training and not model[1].training
    assert model.training and model[1].training
    model.eval()
    calls = []
    model.train = lambda mode=True: calls.append(mode)  # an eval model is neither switched nor restored
    with eval_mode(model):
        pass
    assert calls == [] and not model.training
