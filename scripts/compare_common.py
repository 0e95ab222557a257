"""What the comparison scripts share: one configured `train.py` run, mean ± standard error over seeds, the JSON."""
from __future__ import annotations

import json
import os
import statistics
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from hydra import compose, initialize_config_dir  # noqa: E402
from omegaconf import open_dict  # noqa: E402

from posttrain.pipeline import register_resolvers, train  # noqa: E402
from posttrain.utils.machine import machine_info  # noqa: E402


def run_experiment(experiment: str, name: str, seed: int, out: str, overrides: list[str],
                   callbacks: dict | None = None) -> dict:
    """`python train.py experiment=<experiment> seed=<seed> <overrides>` with CSV logs under `out`, no progress bar
    and no saved model; the run is labelled `name` in its rows. Returns `posttrain.pipeline.train`'s result and the
    composed config (`cfg`)."""
    register_resolvers()
    with initialize_config_dir(config_dir=os.path.join(ROOT, "conf"), version_base="1.3"):
        cfg = compose(config_name="train", overrides=[
            f"experiment={experiment}", f"seed={seed}", "logger=csv", "~callbacks.progress_bar",
            "stages.main.save_dir=null", f"paths.log_dir={out}", f"paths.output_dir={out}/{name}-seed{seed}",
            *overrides])
    with open_dict(cfg):
        cfg.name = name
        cfg.trainer.enable_progress_bar = False
        for key, callback in (callbacks or {}).items():
            cfg.callbacks[key] = callback
    return {**train(cfg), "cfg": cfg}


def mean_and_error(values: list[float]) -> str:
    """`mean ± sd/sqrt(n)` over seeds (the value alone for one seed, empty for none)."""
    if not values:
        return ""
    if len(values) == 1:
        return f"{values[0]:.3f}"
    return f"{statistics.mean(values):.3f} ± {statistics.stdev(values) / len(values) ** 0.5:.3f}"


def write_results(out: str, results: dict[str, dict[int, dict]], **settings) -> None:
    """out/results.json: the settings and, per run and seed, its recorded values."""
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "results.json"), "w") as handle:
        json.dump({**settings, "machine": machine_info(), "results": {m: {str(s): r for s, r in by_seed.items()} for m,
                                           by_seed in results.items()}},
                  handle, indent=1)


def print_rows(header: list[str], lines: list[list[str]]) -> None:
    """A left-aligned text table."""
    widths = [max(len(h), *(len(line[i]) for line in lines)) for i, h in enumerate(header)]
    print("\n" + "  ".join(h.ljust(w) for h, w in zip(header, widths)))
    for line in lines:
        print("  ".join(c.ljust(w) for c, w in zip(line, widths)))
    print(flush=True)
