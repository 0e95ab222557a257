"""The VLA model: shapes, the gradient decay measured on planner parameters, classifier-free guidance, sampling in
the data's units, saving and loading."""
import numpy as np
import pytest
import torch
from PIL import Image

from posttrain.models.vla import GradScale, load_vla, tiny_vla
from posttrain.utils.config import ConfigError
from posttrain.vla.inputs import robot_inputs, views_tensor

PLANNER = {"_target_": "posttrain.models.vlm.tiny_vlm", "hidden_size": 64, "num_layers": 2, "num_heads": 2,
           "intermediate_size": 128, "vision_hidden_size": 32, "vision_heads": 2, "image_size": 32}
SMALL = dict(state_dim=5, chunk=3, num_queries=4, query_width=32, view_width=16, expert_width=32, expert_heads=2,
             repeated_diffusion_steps=2)


def small_vla(planner=None, **settings):
    return tiny_vla(planner=planner or PLANNER, **{**SMALL, **settings})


def inputs(processor, rows: int = 2, seed: int = 0):
    rng = np.random.default_rng(seed)
    images = [rng.integers(0, 255, (32, 32, 3), dtype=np.uint8) for _ in range(rows)]
    views = views_tensor([[im, im[::-1]] for im in images])  # (B, 2, 3, 32, 32)
    return robot_inputs(processor, ["put the puck in the goal"] * (rows - 1) + ["reach"],
                        [Image.fromarray(im) for im in images], views,
                        torch.from_numpy(rng.standard_normal((rows, 5))).float())


def action_loss_grads(model, batch, params):
    condition = model.condition(batch["prompt_input_ids"], batch["prompt_attention_mask"], batch["image_inputs"],
                                batch["views"])
    generator = torch.Generator().manual_seed(3)
    noisy, t, noise = model.noised(torch.rand(2, 3, 4, generator=generator) * 2 - 1, generator)
    loss = (model.predict_noise(noisy, t, condition, batch["state"]) - noise).pow(2).mean()
    return torch.autograd.grad(loss, params)


def test_grad_scale_scales_only_the_backward():
    x = torch.randn(3, requires_grad=True)
    y = GradScale.apply(x, 0.25)
    assert torch.equal(y, x)
    y.sum().backward()
    assert torch.allclose(x.grad, torch.full((3,), 0.25))


def test_gradient_decay_scales_the_action_gradient_reaching_the_planner():
    grads = {}
    for decay in (1.0, 0.5, 0.0):
        model, processor = small_vla(grad_decay=decay, query_dropout=0.0, condition_dropout=0.0)
        model.eval()
        batch = inputs(processor)
        planner_param = model.planner.base_model.language_model.layers[0].self_attn.q_proj.weight
        expert_param = model.expert.action_out.weight
        grads[decay] = action_loss_grads(model, batch, [planner_param, expert_param])
    assert grads[1.0][0].abs().sum() > 0
    torch.testing.assert_close(grads[0.5][0], 0.5 * grads[1.0][0], rtol=1e-5, atol=1e-9)
    assert torch.count_nonzero(grads[0.0][0]) == 0
    for decay in (0.5, 0.0):  # the action modules' own gradients are not decayed
        torch.testing.assert_close(grads[decay][1], grads[1.0][1])


def test_condition_tokens_and_sampled_chunks_have_the_configured_shapes_and_units():
    model, processor = small_vla()
    model.set_statistics({"action_q01": [-2.0, 0.0, 0.0, 5.0], "action_q99": [2.0, 1.0, 0.0, 5.0],
                          "state_mean": [0.0] * 5, "state_std": [1.0] * 5})
    batch = inputs(processor, rows=3)
    condition = model.condition(batch["prompt_input_ids"], batch["prompt_attention_mask"], batch["image_inputs"],
                                batch["views"])
    assert condition.shape == (3, 4, 32)
    actions = model.act(batch["prompt_input_ids"], batch["prompt_attention_mask"], batch["image_inputs"],
                        batch["views"], batch["state"], generator=torch.Generator().manual_seed(0), steps=3)
    assert actions.shape == (3, 3, 4)
    assert actions[..., 0].abs().max() <= 2.0 and (actions[..., 1] >= 0).all() and (actions[..., 1] <= 1).all()
    assert torch.all(actions[..., 2] == 0.0) and torch.all(actions[..., 3] == 5.0)


def test_classifier_free_guidance_extrapolates_from_the_null_condition():
    model, _ = small_vla()
    model.eval()
    noisy, t = torch.randn(2, 3, 4), torch.tensor([5, 50])
    condition, state = torch.randn(2, 4, 32), torch.randn(2, 5)
    conditional = model.predict_noise(noisy, t, condition, state)
    null = model.predict_noise(noisy, t, model.null_condition[None].expand(2, -1, -1), state)
    guided = model.predict_noise(noisy, t, condition, state, cfg_scale=1.5)
    torch.testing.assert_close(guided, null + 1.5 * (conditional - null), rtol=1e-4, atol=1e-5)


def test_condition_dropout_replaces_whole_rows_by_the_null_condition():
    model, _ = small_vla(condition_dropout=0.5)
    condition = torch.randn(64, 4, 32)
    dropped = model.drop_condition(condition, torch.Generator().manual_seed(0))
    is_null = (dropped == model.null_condition).flatten(1).all(1)
    kept = (dropped == condition).flatten(1).all(1)
    assert torch.all(is_null ^ kept) and 10 < is_null.sum() < 54


def test_saved_vla_loads_back_with_its_weights_and_statistics(tmp_path):
    model, processor = small_vla(prediction_type="sample")
    model.set_statistics({"action_q01": [0.0] * 4, "action_q99": [1.0] * 4})
    model.save_pretrained(tmp_path)
    processor.save_pretrained(tmp_path)
    loaded, loaded_processor = load_vla(str(tmp_path))
    assert loaded.statistics == model.statistics and len(loaded_processor.tokenizer) == len(processor.tokenizer)
    assert loaded.noise_scheduler.config.prediction_type == "sample"
    for (name, a), (_, b) in zip(model.state_dict().items(), loaded.state_dict().items()):
        if isinstance(a, torch.Tensor):
            assert torch.equal(a, b), name


@pytest.mark.parametrize("setting, key", [({"grad_decay": 1.5}, "model.grad_decay"),
                                           ({"query_layers": [7]}, "model.query_layers"),
                                           ({"condition_dropout": 1.0}, "model.condition_dropout"),
                                           ({"prediction_type": "v_prediction"}, "model.prediction_type")])
def test_bad_settings_name_their_key(setting, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        small_vla(**setting)


def robot_batch(processor, rows: int = 2) -> dict:
    batch = inputs(processor, rows)
    actions = torch.rand(rows, 3, 4, generator=torch.Generator().manual_seed(1)) * 2 - 1  # (B, H, A) normalised
    return {**batch, "actions": actions, "action_mask": torch.ones(rows, 3)}


@pytest.mark.parametrize("prediction_type", ["epsilon", "sample"])
def test_training_target_is_the_noise_or_the_clean_chunk(prediction_type):
    model, processor = small_vla(prediction_type=prediction_type)
    batch = robot_batch(processor)
    predicted, target, mask = model.training_prediction(batch)
    repeated = batch["actions"].repeat_interleave(2, 0)  # (B·R, H, A), rows of one sample consecutive
    assert predicted.shape == target.shape == (4, 3, 4) and mask.shape == (4, 3)
    if prediction_type == "sample":
        torch.testing.assert_close(target, repeated)
    else:  # fresh Gaussian noise, a different draw for each of a sample's R rows
        assert not torch.allclose(target, repeated) and not torch.allclose(target[0], target[1])


def test_sample_prediction_makes_ddim_return_the_predicted_chunk():
    """Under prediction_type=sample the expert's output is the clean chunk: an expert that always predicts c makes
    DDIM (η = 0, final ᾱ = 1) end exactly at c, whatever the starting noise; under epsilon it does not."""
    chunk = torch.linspace(-0.9, 0.9, 12).view(1, 3, 4)
    for prediction_type in ("sample", "epsilon"):
        model, processor = small_vla(prediction_type=prediction_type)
        model.expert.forward = lambda noisy, *rest: chunk.expand(noisy.shape[0], -1, -1)
        condition = torch.zeros(2, 4, 32)
        sampled = model.sample(condition, torch.zeros(2, 5), torch.Generator().manual_seed(0), cfg_scale=1.0)
        if prediction_type == "sample":
            torch.testing.assert_close(sampled, chunk.expand(2, -1, -1))
        else:
            assert not torch.allclose(sampled, chunk.expand(2, -1, -1), atol=1e-2)


def test_planner_loads_from_a_model_directory_as_a_real_checkpoint_would(tmp_path):
    """model.planner.name_or_path=DIR: the planner comes from the directory (vlm_from_pretrained), the VLA's other
    modules are sized by its hidden width."""
    from posttrain.models.builders import save
    from posttrain.models.vlm import tiny_vlm

    vlm, processor = tiny_vlm(**{k: v for k, v in PLANNER.items() if k != "_target_"}, seed=5)
    save(vlm, processor, str(tmp_path))
    model, _ = small_vla(planner={**PLANNER, "name_or_path": str(tmp_path)})
    loaded = dict(model.planner.named_parameters())
    for name, param in vlm.named_parameters():
        assert torch.equal(param, loaded[name]), name
    assert model.querying.view_proj.out_features == vlm.config.get_text_config().hidden_size
