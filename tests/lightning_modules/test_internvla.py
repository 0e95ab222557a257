"""InternVLA-M1 post-training: the summed loss and its gradient on the planner (decayed action part, weighted
grounding part), training steps, config checks against the data, the closed-loop evaluator, kill and resume."""
import lightning as L
import pytest
import torch

from datamodules.robot import RobotDataModule
from lightning_modules.internvla import InternVLAModule
from posttrain.envs import registry
from posttrain.utils.config import ConfigError
from posttrain.vla import evaluator as evaluator_module
from posttrain.vla.evaluator import ClosedLoopEvaluator
from tests.helpers import KillAtStep, Killed, assert_same_parameters
from tests.models.test_vla import small_vla
from tests.vla_fixtures import GroundingTask, ToyReachEnv, box_metrics, write_demos


@pytest.fixture(autouse=True)
def toy_env(monkeypatch):
    monkeypatch.setitem(registry.ENVS, "toy_reach", ToyReachEnv)


@pytest.fixture(scope="module")
def demos(tmp_path_factory):
    return write_demos(tmp_path_factory.mktemp("demos"))


def make(demos, cotrain=True, vlm_weight=0.1, model_settings=None, evaluator=None, **data):
    model, processor = small_vla(**(model_settings or {}))
    dm = RobotDataModule(processor, path=demos, grounding=GroundingTask(size=6), cotrain=cotrain, chunk=3,
                         batch_size=4, grounding_batch_size=2, episode_splits=["val", "test_paraphrase"],
                         eval_episodes=2, eval_seed_start=7, eval_batch_size=2, eval_size=2,
                         **data)
    evaluator = evaluator or ClosedLoopEvaluator({"id": "toy_reach", "max_steps": 6}, max_steps=6,
                                                 grounding_metrics=box_metrics, max_new_tokens=4, media_every=1)
    module = InternVLAModule(model, processor, vlm_weight=vlm_weight, vlm_lr=1e-3, action_lr=1e-3,
                             evaluator=evaluator)
    return module, dm


def trainer(tmp_path, steps=2, callbacks=(), **kwargs):
    from lightning.pytorch.callbacks import ModelCheckpoint

    return L.Trainer(max_epochs=kwargs.pop("max_epochs", 1), limit_train_batches=steps, logger=False,
                     enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                     callbacks=[ModelCheckpoint(dirpath=tmp_path, save_last=True), *callbacks], **kwargs)


def test_planner_gradient_is_decayed_action_plus_weighted_grounding(demos):
    module, dm = make(demos, model_settings={"grad_decay": 0.5, "query_dropout": 0.0, "condition_dropout": 0.0})
    dm.setup("fit")
    module.model.set_statistics(dm.statistics)
    batch = next(iter(dm.train_dataloader()))[0]
    param = module.model.planner.base_model.language_model.layers[-1].mlp.down_proj.weight

    def grad(loss_fn):
        torch.manual_seed(0)
        return torch.autograd.grad(loss_fn(), param, allow_unused=True)[0]

    decayed = grad(lambda: module.action_loss(batch["robot"])[0])
    vlm = grad(lambda: module.vlm_loss(batch["grounding"]))
    module.model.grad_decay = 1.0
    full = grad(lambda: module.action_loss(batch["robot"])[0])
    torch.testing.assert_close(decayed, 0.5 * full, rtol=1e-5, atol=1e-10)
    module.model.grad_decay = 0.5
    total = grad(lambda: module.action_loss(batch["robot"])[0] + 0.1 * module.vlm_loss(batch["grounding"]))
    torch.testing.assert_close(total, 0.5 * full + 0.1 * vlm, rtol=1e-4, atol=1e-9)
    assert full.abs().sum() > 0 and vlm.abs().sum() > 0


def test_two_steps_change_planner_and_action_modules_and_evaluate_in_closed_loop(demos, tmp_path):
    module, dm = make(demos)
    start = {n: p.detach().clone() for n, p in module.named_parameters()}
    fit = trainer(tmp_path)
    fit.fit(module, datamodule=dm)
    assert fit.global_step == 2
    unchanged = [n for n, p in module.named_parameters() if torch.equal(p, start[n])]
    assert not unchanged, unchanged
    groups = fit.optimizers[0].param_groups
    assert [g["lr"] > 0 for g in groups] == [True, True] and len(groups[0]["params"]) == len(
        list(module.model.planner.parameters()))
    history = module.eval_history[-1]
    assert {"val/success", "val/steps", "test_paraphrase/success", "grounding/box_iou50"} <= set(history)
    assert 0 <= history["val/success"] <= 1 and 1 <= history["val/steps"] <= 6
    perf = ("perf/train_frames_per_s", "perf/train_frames_per_cpu_s", "perf/eval_episodes_per_min")
    assert all(history[k] > 0 for k in perf)
    assert module.throughput["frames"] == 2 * 4  # two steps of four frames timed
    assert module.model.statistics["action_q99"]


def test_closed_loop_evaluator_plays_the_episodes_and_grids_their_frames(demos):
    module, dm = make(demos)
    dm.setup("fit")
    module.model.set_statistics(dm.statistics)
    evaluator = module.evaluator
    evaluator.setup(dm.eval_splits, module.tokenizer)
    evaluator.encode = dm.encode_observations
    specs = next(iter(dm.val_dataloader()[1]))
    evaluator.update(module.model.eval(), specs, "test_paraphrase", seed=0)
    results = evaluator.compute()
    assert set(results) == {"test_paraphrase/success", "test_paraphrase/steps", "perf/eval_episodes_per_min",
                            "perf/eval_env_steps_per_s"}
    # steps/s over episodes/s is the mean episode length: both rates are over the same wall time
    rate = results["perf/eval_env_steps_per_s"] / results["perf/eval_episodes_per_min"] * 60
    assert float(rate) == pytest.approx(float(results["test_paraphrase/steps"]), rel=1e-5)
    grid = evaluator.grids["test_paraphrase"]
    assert grid.shape[0] == 3 and grid.shape[1] == 2 * 33 + 1  # two episodes, 32-pixel frames
    envs = evaluator.envs["test_paraphrase"]
    evaluator.update(module.model, specs, "test_paraphrase", seed=0)
    assert evaluator.envs["test_paraphrase"] == envs  # the environments (and renderers) are reused


def test_a_closed_evaluators_environments_serve_the_next_one_and_play_the_same(demos):
    module, dm = make(demos)
    dm.setup("fit")
    module.model.set_statistics(dm.statistics)
    specs = next(iter(dm.val_dataloader()[1]))

    def play(evaluator):
        evaluator.setup(dm.eval_splits, module.tokenizer)
        evaluator.encode = dm.encode_observations
        evaluator.update(module.model.eval(), specs, "test_paraphrase", seed=3)
        envs = list(evaluator.envs["test_paraphrase"])
        results = {k: float(v) for k, v in evaluator.compute().items() if not k.startswith("perf/")}
        grid = evaluator.grids["test_paraphrase"]  # every frame of the filmed episodes: the trajectories
        evaluator.close()
        return envs, (results, grid)

    config = {"id": "toy_reach", "max_steps": 6}
    first_envs, first = play(ClosedLoopEvaluator(config, max_steps=6))
    assert evaluator_module.IDLE_ENVS[evaluator_module.env_key(config, "test_paraphrase", {})] == first_envs
    for env in first_envs:  # leave them mid-episode: the next evaluator's resets must undo it
        env.step(env.expert())
    second_envs, second = play(ClosedLoopEvaluator(config, max_steps=6))
    assert {id(e) for e in second_envs} == {id(e) for e in first_envs}
    assert second[0] == first[0] and set(first[0]) == {"test_paraphrase/success", "test_paraphrase/steps"}
    torch.testing.assert_close(second[1], first[1])
    other_envs, _ = play(ClosedLoopEvaluator({**config, "max_steps": 5}, max_steps=6))  # another config: new ones
    assert not {id(e) for e in other_envs} & {id(e) for e in first_envs}


@pytest.mark.parametrize("change, key", [({"model_settings": {"action_dim": 3}}, "model.action_dim"),
                                         ({"vlm_weight": 0.0}, "method.vlm_weight"),
                                         ({"model_settings": {"views": 3}}, "data.views")])
def test_data_and_model_mismatches_name_the_key(demos, tmp_path, change, key):
    module, dm = make(demos, **change)
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        trainer(tmp_path).fit(module, datamodule=dm)


def test_killed_run_resumes_to_the_same_weights(demos, tmp_path):
    settings = dict(limit_val_batches=0, max_epochs=2)
    reference, dm = make(demos)
    trainer(tmp_path / "reference", **settings).fit(reference, datamodule=dm)

    killed, dm = make(demos)
    with pytest.raises(Killed):
        trainer(tmp_path / "killed", callbacks=[KillAtStep(3)], **settings).fit(killed, datamodule=dm)
    resumed, dm = make(demos)
    run = trainer(tmp_path / "killed", **settings)
    run.fit(resumed, datamodule=dm, ckpt_path=str(tmp_path / "killed" / "last.ckpt"))
    assert run.global_step == 4
    assert_same_parameters(resumed, reference)
    assert resumed.model.statistics == reference.model.statistics


def test_pss_of_grounding_and_action_gradients_is_logged(demos, tmp_path):
    module, dm = make(demos)
    module.pss_every, module.pss_window = 2, 2
    logged = {}
    module.log = lambda name, value, **kwargs: logged.__setitem__(name, value)
    trainer(tmp_path, limit_val_batches=0).fit(module, datamodule=dm)
    assert len(module.pss_grads["vlm"]) == 2 and module.pss_grads["vlm"][0].shape == module.pss_grads["action"][0].shape
    assert 0.0 <= logged["train/pss"] <= 1.0


def test_untrained_policy_plays_meta_world_episodes(tmp_path):
    """The real simulator: two short pick-place episodes in lockstep, chunks executed, environments kept."""
    from tests.vla_fixtures import SIZE

    env = {"id": "metaworld", "tasks": ["pick-place-v3"], "image_size": SIZE, "max_steps": 5}
    demos = write_demos(tmp_path, episodes=2, state_dim=4)  # Meta-World's state: gripper xyz and finger opening
    module, dm = make(demos, model_settings={"state_dim": 4},
                      evaluator=ClosedLoopEvaluator(env, max_steps=5, media_every=1))
    dm.setup("fit")
    module.model.set_statistics(dm.statistics)
    evaluator = module.evaluator
    evaluator.setup(dm.eval_splits, module.tokenizer)
    evaluator.encode = dm.encode_observations
    evaluator.update(module.model.eval(), {"seed": torch.tensor([3, 4])}, "val", seed=0)
    results = evaluator.compute()
    assert results["val/steps"] == 5 and results["val/success"] == 0  # 5 random-ish steps cannot place the puck
    assert results["val/grasped"] == 0 and results["val/distance"] > 0.07  # nor lift it; the puck starts far away
    assert results["val/reached"] == 0  # 5 steps do not bring the gripper within 3 cm of either puck
    assert evaluator.grids["val"].shape == (3, 2 * (SIZE + 1) + 1, 6 * (SIZE + 1) + 1)
    evaluator.close()
