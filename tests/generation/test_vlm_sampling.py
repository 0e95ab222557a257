"""The sampler's log-probs for vision-language models are the model's own: a teacher-forced forward over the sampled
rows (with their images) through `label_logprobs` gives the same per-token log-probs."""
import pytest
import torch

from posttrain.generation import generate
from posttrain.models.forward import label_logprobs
from posttrain.models.multimodal import placeholder_token_ids
from posttrain.processors import SFTCollator, make_processor, pack
from tests.vlm import image_examples, tiny_llava, tiny_llava_next, tiny_qwen_vl

BUILDERS = {"qwen2.5-vl": tiny_qwen_vl, "llava": tiny_llava, "llava-next": tiny_llava_next}


def sample_and_score(build, num_samples: int, temperature: float = 1.0, max_new_tokens: int = 6):
    model, processor = build(seed=1)
    processor = make_processor(processor, 128, "{image}Q:{prompt}A:")
    batch = SFTCollator(processor, with_prompts=True)(image_examples())
    gen = generate(model, batch["prompt_input_ids"], batch["prompt_attention_mask"], max_new_tokens=max_new_tokens,
                   eos_token_id=processor.eos_id, pad_token_id=processor.pad_id, temperature=temperature,
                   num_samples=num_samples, generator=torch.Generator().manual_seed(3),
                   image_inputs=batch["image_inputs"])
    prompts = [ids[m.bool()].tolist() for ids, m in zip(batch["prompt_input_ids"], batch["prompt_attention_mask"])]
    prompts = [p for p in prompts for _ in range(num_samples)]
    rows = pack(prompts, gen.token_lists(), processor.pad_id, 1000)
    images = batch["image_inputs"].repeat_interleave(num_samples)
    with torch.no_grad():
        logps, mask = label_logprobs(model, rows["input_ids"], rows["attention_mask"], rows["labels"],
                                     image_inputs=images)
    return model, batch, gen, logps, mask


@pytest.mark.parametrize("name", list(BUILDERS))
def test_sampled_logprobs_match_a_teacher_forced_forward(name):
    model, batch, gen, logps, mask = sample_and_score(BUILDERS[name], num_samples=3)
    lengths = batch["prompt_attention_mask"].sum(-1)
    assert len(set(lengths.tolist())) == 3  # left padding is exercised
    assert gen.tokens.shape[0] == 9 and mask.sum() == gen.mask.sum()
    teacher = torch.cat([row[m] for row, m in zip(logps, mask)])
    sampled = torch.cat([row[m] for row, m in zip(gen.logprobs, gen.mask)])
    assert (teacher - sampled).abs().max() <= 1e-5
    # the three samples of a prompt differ, so the comparison covers more than one continuation per image
    assert len({tuple(r) for r in gen.token_lists()[:3]}) > 1


@pytest.mark.parametrize("name", list(BUILDERS))
def test_the_images_change_what_is_sampled(name):
    """Greedy continuations depend on the pixels: a run with other images gives other log-probs."""
    model, processor = BUILDERS[name](seed=1)
    processor = make_processor(processor, 128, "{image}{prompt}")
    examples = image_examples()
    batch = SFTCollator(processor, with_prompts=True)(examples)
    for e in examples:
        e["image"] = e["image"].transpose(0)  # mirrored: same sizes, so the same prompt tokens
    mirrored = SFTCollator(processor, with_prompts=True)(examples)
    assert torch.equal(batch["prompt_input_ids"], mirrored["prompt_input_ids"])
    kwargs = dict(max_new_tokens=3, eos_token_id=None, pad_token_id=processor.pad_id, temperature=1.0,
                  generator=torch.Generator().manual_seed(0))
    a = generate(model, batch["prompt_input_ids"], batch["prompt_attention_mask"],
                 image_inputs=batch["image_inputs"], **kwargs)
    kwargs["generator"] = torch.Generator().manual_seed(0)
    b = generate(model, mirrored["prompt_input_ids"], mirrored["prompt_attention_mask"],
                 image_inputs=mirrored["image_inputs"], **kwargs)
    assert not torch.allclose(a.logprobs, b.logprobs)


def test_image_placeholders_are_never_sampled():
    """A model that prefers the placeholder token still never emits it."""
    model, processor = tiny_qwen_vl(seed=1)
    image_id = model.config.image_token_id
    assert image_id in placeholder_token_ids(model)
    boost = torch.tensor([image_id])
    model.lm_head.register_forward_hook(lambda module, args, logits: logits.index_fill(-1, boost, 1e4))
    processor = make_processor(processor, 128, "{image}{prompt}")
    batch = SFTCollator(processor, with_prompts=True)(image_examples())
    plain = model(input_ids=batch["prompt_input_ids"][:, -2:]).logits  # (B, 2, V)
    assert (plain.argmax(-1) == image_id).all()
    gen = generate(model, batch["prompt_input_ids"], batch["prompt_attention_mask"], max_new_tokens=4,
                   eos_token_id=None, pad_token_id=processor.pad_id, temperature=0, image_inputs=batch["image_inputs"])
    assert not (gen.tokens == image_id).any()
