"""EMMA's data-producing stages (`output: dataset_dir`, run with `trainer.predict`; docs/methods/emma.md):

- `RenderPoolModule`: the random-appearance render pool the generator and its probes train on
  (`posttrain.emma.pool`); data: `datamodules.sim_seeds` (reset seeds of its own, beside the demonstrations').
- `EditedEpisodesModule`: the demonstrations re-rendered by one editor (`posttrain.emma.engine`: generator, oracle,
  geometry-breaking, conventional augmentation), `prompts` edits per source episode, the source actions kept; with
  the generator, the quality probes score every edit and the failure filter drops the bad ones. Data:
  `datamodules.emma.DemoEpisodes`. A frame grid of source vs edited episodes goes to TensorBoard
  (`emma/source_vs_<editor>`).
Nothing is trained; the start model is not used.
"""
from __future__ import annotations

import lightning as L
import numpy as np

from posttrain.emma import augment, engine, probes
from posttrain.emma.generator import check_matches
from posttrain.emma.pool import collect_pool_episode, read_pool, write_pool
from posttrain.envs import make_env
from posttrain.envs.appearance import ATTRIBUTES, Appearance, attribute_index, check_set
from posttrain.envs.metaworld import VIEWS
from posttrain.evaluators import write_image_grids
from posttrain.utils.config import check, check_choice


class RenderPoolModule(L.LightningModule):
    """Args:
        env: the environment config; the pool's env adds `appearance=appearance_set` and `geometry=True`.
        appearance_set: the named set appearances are drawn from (one per episode).
        stride: every stride-th frame of an episode is kept; max_frames: at most this many per episode.
    """

    def __init__(self, model=None, tokenizer=None, env: dict | None = None, appearance_set: str = "in_domain",
                 stride: int = 4, max_frames: int | None = None):
        super().__init__()
        check_set(appearance_set, "method.appearance_set")
        check(stride >= 1, "method.stride", f"must be >= 1, got {stride}")
        self.appearance_set, self.stride, self.max_frames = appearance_set, stride, max_frames
        self.env = make_env(dict(env or {}), appearance=appearance_set, geometry=True)
        self.dataset_metrics: dict[str, float] = {}

    def predict_step(self, batch: list[int], batch_idx: int) -> list[dict]:
        return [collect_pool_episode(self.env, int(seed), self.stride, self.max_frames) for seed in batch]

    def on_predict_end(self) -> None:
        self.env.close()

    def write_dataset(self, episodes: list[dict], directory: str) -> str:
        self.dataset_metrics = {"dataset/pool_frames": float(sum(len(e["state"]) for e in episodes))}
        return write_pool(episodes, directory, self.appearance_set, self.stride)


class EditedEpisodesModule(L.LightningModule):
    """Args:
        env: the environment config the demonstrations were recorded with (their replay must reproduce them).
        editor: generator | oracle | geometry_breaking | augmentation.
        prompts: edits per source episode; appearance_set: the named set their appearances are drawn from.
        generator: the trained transfer model (a stage's output; editor=generator only), checked against the
            simulator's views and image size.
        pool: the render pool folder the quality probes train on (editor=generator; None: no probes, no filter).
        filter: {tolerance, min_attribute_accuracy} of `probes.passes`; None: measured, nothing dropped.
        probe_steps: the probes' training steps; sample_steps: DDIM steps (None: the generator's);
        generation_batch_size: frames per generator call; grid_episodes: source episodes in the TensorBoard grid.
        augmentation: editor=augmentation's parameters ({brightness, contrast, saturation, hue, crop_scale,
            crop_ratio}, `posttrain.emma.augment.AUGMENTATION`; None: those defaults).
        seed: the appearances and noises are drawn from (seed, source episode).
    """

    def __init__(self, model=None, tokenizer=None, env: dict | None = None, editor: str = "generator",
                 prompts: int = 2, appearance_set: str = "in_domain", generator=None, pool: str | None = None,
                 filter: dict | None = None, probe_steps: int = 200, sample_steps: int | None = None,
                 generation_batch_size: int = 64, grid_episodes: int = 2, augmentation: dict | None = None,
                 seed: int = 0):
        super().__init__()
        check_choice(editor, engine.EDITORS, "method.editor")
        check_set(appearance_set, "method.appearance_set")
        check(prompts >= 1, "method.prompts", f"must be >= 1, got {prompts}")
        self.env_config = dict(env or {})
        self.env = make_env(self.env_config)
        if editor == "generator":
            check(generator is not None, "method.generator", "editor=generator needs the trained transfer model "
                  "(inputs: {generator: <stage>})")
            check_matches(generator, VIEWS, self.env.image_size, "method.generator")
            generator.eval()
        self.editor, self.prompts, self.appearance_set, self.generator = editor, prompts, appearance_set, generator
        self.pool, self.filter, self.probe_steps = pool, dict(filter) if filter else None, probe_steps
        self.sample_steps, self.batch, self.grid_episodes, self.seed = sample_steps, generation_batch_size, \
            grid_episodes, seed
        check(augmentation is None or editor == "augmentation", "method.augmentation",
              f"only editor=augmentation takes augmentation parameters (editor={editor})")
        self.augmentation = augment.augmentation_options(augmentation) if editor == "augmentation" else None
        self.probes, self.reference = None, None
        self.totals = {"edits": 0, "kept": 0, "depth_error": 0.0, "cross_view": 0.0, "attribute_accuracy": 0.0}
        self.grids: dict = {}
        self.dataset_metrics: dict[str, float] = {}

    def on_predict_start(self) -> None:
        if self.editor != "generator" or not self.pool:
            return
        pool, _ = read_pool(self.pool, "method.pool")
        held = probes.calibration_rows(pool["episode"])
        fit = np.ones(len(pool["episode"]), dtype=bool)
        fit[held] = False  # a one-episode pool holds nothing out: the probes fit and calibrate on all of it
        self.probes = probes.train_probes({k: v[fit] for k, v in pool.items()}, steps=self.probe_steps, seed=self.seed)
        self.reference = probes.calibrate(self.probes, pool, held if len(held) else np.flatnonzero(fit))

    def predict_step(self, batch: list[tuple[int, object]], batch_idx: int) -> list[tuple]:
        kept = []
        for index, episode in batch:
            states = geometry = None
            if self.editor in engine.NEEDS_GEOMETRY:
                states, geometry = engine.source_geometry(self.env, episode, where=f"demos episode {index}")
            appearances = engine.edit_appearances(self.appearance_set, self.prompts, self.seed * 1_000_003 + index)
            edits = []
            for p, appearance in enumerate(appearances):
                edited = engine.edit_episode(self.editor, episode, appearance, seed=(self.seed * 7919 + index) * 31 + p,
                                             env=self.env, states=states, geometry=geometry, model=self.generator,
                                             batch_size=self.batch, steps=self.sample_steps,
                                             augmentation=self.augmentation)
                edits.append(edited)
                self.totals["edits"] += 1
                if self.keep(edited, geometry, appearance):
                    kept.append((index, edited, appearance.as_dict()))  # Lightning copies outputs: no frozen class
                    self.totals["kept"] += 1
            if len(self.grids) < self.grid_episodes:
                self.grids[f"emma/source_vs_{self.editor}_{index}"] = engine.source_vs_edit_grid(episode, edits)
        return kept

    def keep(self, edited, geometry: dict, appearance) -> bool:
        """Scores the edit with the probes (when there are any) and applies the failure filter."""
        if self.probes is None:
            return True
        colour = attribute_index("object_color", appearance.object_color)
        measures = probes.quality(self.probes, {v: getattr(edited, v) for v in VIEWS},
                                  {v: geometry[f"{v}_depth"] for v in VIEWS}, edited.state, colour)
        for name, value in measures.items():
            self.totals[name] += value
        return self.filter is None or probes.passes(measures, self.reference, **self.filter)

    def on_predict_end(self) -> None:
        self.env.close()
        edits = max(self.totals["edits"], 1)
        metrics = {"dataset/edits": float(self.totals["edits"]), "dataset/kept_fraction": self.totals["kept"] / edits}
        if self.probes is not None:
            for name in ("depth_error", "cross_view", "attribute_accuracy"):
                metrics[f"quality/{name}"] = self.totals[name] / edits
                metrics[f"quality/real_{name}"] = self.reference[name]
        self.dataset_metrics = metrics
        write_image_grids(self.trainer.loggers, self.grids, "grid", 0)

    def write_dataset(self, items: list[tuple], directory: str) -> str:
        check(bool(items), "method.filter", f"every {self.editor} edit was filtered out; loosen the filter")
        sources, episodes, appearances = zip(*items)
        appearances = [Appearance(**a) for a in appearances]
        return engine.write_edited(list(episodes), list(sources), appearances, self.editor, directory,
                                   env_tasks=list(self.env_config.get("tasks") or []),
                                   extra={"attributes": list(ATTRIBUTES), **self.dataset_metrics})
