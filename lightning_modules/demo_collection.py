"""Expert demonstrations as a dataset stage (`output: dataset_dir`): Meta-World's scripted policy plays one episode
per reset seed of the data (`datamodules.sim_seeds`), and the successful episodes are written as a LeRobot-style
folder (posttrain/envs/demos.py: data/episodes.parquet, meta/info.json, meta/stats.json). Failed episodes are
dropped and counted (`dataset/expert_success`). The collection's cost is reported beside it: `perf/demos_per_min`
and `perf/demos_per_cpu_min` (episodes attempted per wall / CPU minute of this process) and `perf/sim_steps_per_s`
(environment steps per wall second: physics, both views rendered and projected, the expert). Nothing is trained; the
start model is not used."""
from __future__ import annotations

import time

import lightning as L

from posttrain.envs import make_env
from posttrain.envs.demos import Episode, collect_episode, write_demos


class DemoCollectionModule(L.LightningModule):
    """Args:
        env: the environment config (conf/env/metaworld_pick_place.yaml); its `split` decides the combinations
            and instructions, the data's seeds the layouts.
        options: reset options for every episode (e.g. {task: push-v3}); None: drawn from the seed.
    """

    def __init__(self, model=None, tokenizer=None, env: dict | None = None, options: dict | None = None):
        super().__init__()
        self.env_config, self.options = dict(env or {}), dict(options or {}) or None
        self.env = make_env(self.env_config)  # a bad env config stops here, naming its key
        self.counts = {"attempted": 0, "kept": 0, "frames": 0, "steps": 0, "wall": 0.0, "cpu": 0.0}
        self.dataset_metrics: dict[str, float] = {}

    def predict_step(self, batch: list[int], batch_idx: int) -> list[Episode]:
        kept = []
        for seed in batch:
            wall, cpu = time.perf_counter(), time.process_time()
            episode = collect_episode(self.env, int(seed), self.options)
            self.counts["wall"] += time.perf_counter() - wall
            self.counts["cpu"] += time.process_time() - cpu
            self.counts["attempted"] += 1
            self.counts["steps"] += len(episode)
            if episode.success:
                kept.append(episode)
                self.counts["kept"] += 1
                self.counts["frames"] += len(episode)
        return kept

    def on_predict_end(self) -> None:
        attempted = max(self.counts["attempted"], 1)
        wall, cpu = max(self.counts["wall"], 1e-9), max(self.counts["cpu"], 1e-9)
        self.dataset_metrics = {"dataset/expert_success": self.counts["kept"] / attempted,
                                "dataset/frames": float(self.counts["frames"]),
                                "perf/demos_per_min": 60.0 * self.counts["attempted"] / wall,
                                "perf/demos_per_cpu_min": 60.0 * self.counts["attempted"] / cpu,
                                "perf/sim_steps_per_s": self.counts["steps"] / wall}
        self.env.close()

    def write_dataset(self, episodes: list[Episode], directory: str) -> str:
        return write_demos(episodes, directory, env_tasks=list(self.env_config.get("tasks") or []))
