"""Vision-language rollouts and evaluation: every consumer passes each row's own images to the model.

The ratio test is the one GRPO relies on: the log-probs recorded while sampling (π_old) and the training forward's
log-probs of the same rows (π_θ, before any update) must be the same distribution, images, 3-D positions and the
sampler's restricted vocabulary included, so the importance ratio of a step's first update is exactly 1.
"""
import pytest
import torch

from posttrain.evaluators import GenerationEvaluator
from posttrain.generation import generate
from posttrain.models.forward import label_logprobs
from posttrain.models.multimodal import forward_kwargs, placeholder_token_ids
from posttrain.processors import SFTCollator, make_processor
from posttrain.rewards import ExactMatchVerifier
from posttrain.rewards.judges import PairwiseJudge, encode_prompts, next_token_logits
from posttrain.rollouts import (
    RolloutSettings,
    collect_rollout,
    concat_rollouts,
    policy_logprobs,
    rollout,
    select_prompts,
)
from posttrain.utils.config import ConfigError
from tests.helpers import CoinFlipVerifier
from tests.vlm import image_examples, shape_image, tiny_llava, tiny_qwen_vl

BUILDERS = {"qwen2.5-vl": tiny_qwen_vl, "llava": tiny_llava}


def setup_model(build=tiny_qwen_vl, template: str = "{image}Q:{prompt}A:"):
    model, processor = build(seed=1)
    return model, make_processor(processor, 128, template)


def answered(examples: list[dict]) -> list[dict]:
    return [{**e, "answer": e["response"]} for e in examples]


def same_size_examples(n: int = 4) -> list[dict]:
    """n examples with equally sized images of different colours (same prompt tokens, so images can be swapped)."""
    colours = [(255, 0, 0), (0, 0, 255), (0, 160, 0), (240, 200, 0), (90, 0, 90)]
    return [{"image": shape_image(64, 64, colours[i % 5], (0.1 * i, 0.2, 0.5 + 0.1 * i, 0.8)),
             "prompt": "colour?" if i % 2 else "which colour is it?", "response": "red", "answer": "red",
             "index": i} for i in range(n)]


def sampled(model, processor, examples, k: int = 3, temperature: float = 0.8, reward=None):
    batch = SFTCollator(processor, with_prompts=True)(examples)
    settings = RolloutSettings(num_samples=k, temperature=temperature, max_new_tokens=6, truncated_is_wrong=False)
    out = collect_rollout(model, batch, processor, reward or ExactMatchVerifier(), settings,
                          torch.Generator().manual_seed(5))
    return batch, out


@pytest.mark.parametrize("name", list(BUILDERS))
def test_recorded_old_logps_equal_policy_logprobs_so_the_first_ratio_is_one(name):
    model, processor = setup_model(BUILDERS[name])
    batch, out = sampled(model, processor, answered(image_examples()))
    assert len(set(batch["prompt_attention_mask"].sum(-1).tolist())) == 3  # left padding is exercised
    assert out.image_inputs is not None and len(out.image_inputs) == out.rewards.shape[0] == 9
    with torch.no_grad():
        whole = policy_logprobs(model, out.rows(torch.arange(9)), temperature=0.8)  # (R, T-1)
        # a mini-batch of rows in another order, as GRPO's updates take them
        index = torch.tensor([7, 2, 4, 0])
        part_rows = out.rows(index)
        part = policy_logprobs(model, part_rows, temperature=0.8)
    mask = out.mask
    assert mask.sum() > 9  # more than the eos of every row
    assert (whole - out.old_logps)[mask].abs().max() <= 1e-5
    assert (part - part_rows["old_logps"])[part_rows["mask"]].abs().max() <= 1e-5
    ratio = (whole - out.old_logps)[mask].exp()
    assert torch.allclose(ratio, torch.ones_like(ratio), atol=1e-5)


def test_policy_logprobs_exclude_image_placeholders_from_the_vocabulary():
    """The sampler never draws placeholders; scoring over the full vocabulary would give smaller log-probs (the
    placeholders' probability mass is left out of the sampler's softmax), so first-update ratios would not be 1."""
    model, processor = setup_model()
    _, out = sampled(model, processor, answered(image_examples()))
    rows = out.rows(torch.arange(9))
    assert placeholder_token_ids(model)
    with torch.no_grad():
        restricted = policy_logprobs(model, rows, temperature=0.8)  # (R, T-1)
        inputs = forward_kwargs(model, rows["input_ids"], rows["attention_mask"], rows["image_inputs"])
        logits = model(**inputs).logits[:, :-1] / 0.8  # (R, T-1, V), every id
    full = torch.log_softmax(logits, -1).gather(-1, rows["labels"][:, 1:].clamp(min=0)[..., None])[..., 0]
    mask = out.mask
    assert ((restricted - full)[mask] > 1e-6).all()
    assert (full - out.old_logps)[mask].abs().max() > 1e-5 >= (restricted - out.old_logps)[mask].abs().max()


def test_each_row_keeps_its_own_image_through_rollout_rows():
    """Swapping the images of two rows of a rollout changes those rows' log-probs and no other row's."""
    model, processor = setup_model()
    _, out = sampled(model, processor, same_size_examples(4), k=2)
    rows = out.rows(torch.arange(8))
    swapped = dict(rows, image_inputs=rows["image_inputs"].select([0, 1, 2, 6, 4, 5, 3, 7]))  # rows 3 and 6
    with torch.no_grad():
        before = policy_logprobs(model, rows, temperature=0.8)
        after = policy_logprobs(model, swapped, temperature=0.8)
    changed = ((before - after).abs() * out.mask).amax(-1)  # (R,)
    assert changed[3] > 1e-4 and changed[6] > 1e-4
    assert torch.equal(changed[[0, 1, 2, 4, 5, 7]], torch.zeros(6))


def test_selected_and_concatenated_rollouts_keep_rows_and_images_together():
    model, processor = setup_model()
    _, first = sampled(model, processor, same_size_examples(4), k=2)
    _, second = sampled(model, processor, answered(image_examples()), k=2)
    part = select_prompts(second, torch.tensor([2, 0]))
    both = concat_rollouts([first, part], processor.pad_id)
    assert len(both.image_inputs) == both.rewards.shape[0] == 12 and both.first_prompts == 4
    with torch.no_grad():
        logps = policy_logprobs(model, both.rows(torch.arange(12)), temperature=0.8)
    assert (logps - both.old_logps)[both.mask].abs().max() <= 1e-5


def test_dynamic_sampling_refill_brings_the_drawn_prompts_images():
    model, processor = setup_model()
    collate = SFTCollator(processor, with_prompts=True)
    pool = same_size_examples(5) + answered(image_examples())
    drawn = []

    def draw(n, generator):
        picks = torch.randint(len(pool), (n,), generator=generator).tolist()
        drawn.append(picks)
        return collate([pool[i] for i in picks])

    settings = RolloutSettings(num_samples=2, max_new_tokens=4, truncated_is_wrong=False, max_generation_batches=8)
    out = rollout(model, collate(same_size_examples(3)), processor, CoinFlipVerifier(), settings,
                  torch.Generator().manual_seed(1), draw)
    assert out.generation_batches > 1 and drawn  # the refill ran
    assert len(out.image_inputs) == out.rewards.shape[0]
    with torch.no_grad():
        logps = policy_logprobs(model, out.rows(torch.arange(out.rewards.shape[0])), temperature=1.0)
    assert (logps - out.old_logps)[out.mask].abs().max() <= 1e-5


def test_rollout_refuses_image_rows_that_pack_would_cut():
    model, processor = setup_model()
    short = make_processor(processor, 26, "{image}Q:{prompt}A:")  # the 18-token image block, bos and a short prompt
    batch = SFTCollator(short, with_prompts=True)([{**same_size_examples(1)[0], "prompt": "q"}])
    with pytest.raises(ConfigError, match="data.max_length"):
        collect_rollout(model, batch, short, ExactMatchVerifier(), RolloutSettings(2, max_new_tokens=8,
                        truncated_is_wrong=False), torch.Generator().manual_seed(0))


def test_generation_evaluator_scores_a_vision_language_batch():
    """Accuracy from the completions generated with the images, NLL of the references with the images: both equal
    what the model computes directly, and the NLL differs from a blind (image-less) forward."""
    model, processor = setup_model()
    examples = answered(image_examples())
    batch = SFTCollator(processor, with_prompts=True)(examples)
    greedy = generate(model, batch["prompt_input_ids"], batch["prompt_attention_mask"], max_new_tokens=5,
                      eos_token_id=processor.eos_id, pad_token_id=processor.pad_id, temperature=0.0,
                      image_inputs=batch["image_inputs"])
    completions = processor.decode(greedy.token_lists())
    examples[0]["answer"] = completions[0]  # one answer right by construction
    evaluator = GenerationEvaluator(reward=ExactMatchVerifier(normalize=False), max_new_tokens=5, sampled_k=2)
    evaluator.setup(["val"], processor)  # the module's `tokenizer` of a VLM is its processor
    evaluator.update(model, batch, "val", seed=0)
    results = {k: float(v) for k, v in evaluator.compute().items()}
    expected = sum(c == e["answer"] for c, e in zip(completions, examples)) / 3
    assert results["val/accuracy"] == pytest.approx(expected) and expected >= 1 / 3
    assert 0 <= results["val/accuracy_sampled"] <= 1
    with torch.no_grad():
        logps, mask = label_logprobs(model, batch["input_ids"], batch["attention_mask"], batch["labels"],
                                     image_inputs=batch["image_inputs"])
        blind, _ = label_logprobs(model, batch["input_ids"], batch["attention_mask"], batch["labels"])
    assert results["val/nll"] == pytest.approx(float(-(logps * mask).sum() / mask.sum()), rel=1e-5)
    assert abs(results["val/nll"] - float(-(blind * mask).sum() / mask.sum())) > 1e-4


def test_judge_next_token_logits_with_images_are_the_samplers():
    """The judge's next-token distribution of an image prompt is the one the sampler draws its first token from."""
    model, processor = setup_model()
    batch = SFTCollator(processor, with_prompts=True)(answered(image_examples()))
    ids, mask, images = batch["prompt_input_ids"], batch["prompt_attention_mask"], batch["image_inputs"]
    gen = generate(model, ids, mask, max_new_tokens=1, eos_token_id=None, pad_token_id=processor.pad_id,
                   temperature=1.0, generator=torch.Generator().manual_seed(0), image_inputs=images)
    with torch.no_grad():
        logits = next_token_logits(model, ids, mask, images)  # (B, V)
    logits[:, placeholder_token_ids(model)] = float("-inf")
    expected = torch.log_softmax(logits, -1).gather(-1, gen.tokens[:, :1])[:, 0]
    assert (expected - gen.logprobs[:, 0]).abs().max() <= 1e-5


def test_text_judges_refuse_an_image_processor():
    model, processor = setup_model(template="{image}{prompt}")
    with pytest.raises(ConfigError, match="text-only"):
        encode_prompts(processor, ["is 2 right?"], "cpu")
    with pytest.raises(ConfigError, match="text-only"):
        PairwiseJudge(model, processor).logprobs(["q"], ["a"], ["b"])
