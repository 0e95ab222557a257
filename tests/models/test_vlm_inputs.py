"""Image rows get the positions and features the model means whatever the padding: a padded batch through the value
head and through label_logprobs equals each row alone."""
import pytest
import torch

from posttrain.models.forward import label_logprobs
from posttrain.models.value_head import ValueModel
from posttrain.processors import SFTCollator, make_processor
from tests.vlm import image_examples, tiny_llava, tiny_qwen_vl


@pytest.mark.parametrize("build", [tiny_qwen_vl, tiny_llava])
def test_value_head_reads_images_and_ignores_padding(build):
    model, processor = build(seed=5)
    processor = make_processor(processor, 128, "{prompt}")
    examples = image_examples()
    batch = SFTCollator(processor, with_prompts=True)(examples)
    critic = ValueModel(model)
    torch.manual_seed(0)
    torch.nn.init.normal_(critic.head.weight)
    images = batch["image_inputs"]
    with torch.no_grad():
        right = critic.score(batch["input_ids"], batch["attention_mask"], images)  # (B,)
        left = critic(batch["prompt_input_ids"], batch["prompt_attention_mask"], images)[:, -1]  # (B,)
        for i, example in enumerate(examples):
            alone = SFTCollator(processor, with_prompts=True)([example])
            one = critic.score(alone["input_ids"], alone["attention_mask"], alone["image_inputs"])
            assert torch.allclose(right[i], one[0], atol=1e-5)
            prompt = critic(alone["prompt_input_ids"], alone["prompt_attention_mask"], alone["image_inputs"])
            assert torch.allclose(left[i], prompt[0, -1], atol=1e-5)
        if build is tiny_llava:  # every LLaVA image gives 16 tokens, so rows can swap images: the values move
            swapped = critic.score(batch["input_ids"], batch["attention_mask"], images.select([1, 2, 0]))
            assert not torch.allclose(swapped, right)


@pytest.mark.parametrize("build", [tiny_qwen_vl, tiny_llava])
def test_label_logprobs_of_a_batch_equal_each_row_alone(build):
    model, processor = build(seed=6)
    processor = make_processor(processor, 128, "{prompt}")
    examples = image_examples()
    batch = SFTCollator(processor)(examples)
    with torch.no_grad():
        logps, mask = label_logprobs(model, batch["input_ids"], batch["attention_mask"], batch["labels"],
                                     image_inputs=batch["image_inputs"])
        for i, example in enumerate(examples):
            alone = SFTCollator(processor)([example])
            one, one_mask = label_logprobs(model, alone["input_ids"], alone["attention_mask"], alone["labels"],
                                           image_inputs=alone["image_inputs"])
            assert torch.allclose(logps[i][mask[i]], one[0][one_mask[0]], atol=1e-5)
