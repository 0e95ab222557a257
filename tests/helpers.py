"""Shared test helpers: compose the real Hydra config the way train.py does."""
from __future__ import annotations

import os

from hydra import compose, initialize_config_dir
from lightning.pytorch import Callback
from omegaconf import DictConfig, open_dict

from posttrain.pipeline import register_resolvers

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONF = os.path.join(ROOT, "conf")
SHARED = os.path.join(os.path.dirname(ROOT), "shared")


def compose_config(overrides: list[str], output_dir, config_name: str = "train") -> DictConfig:
    """The composed config of `python train.py <overrides>` (`config_name="eval"`: of eval.py), writing under
    `output_dir` (and caching under `output_dir`/cache unless the overrides name a paths.cache_dir), no progress
    bar."""
    register_resolvers()
    cache = [] if any(o.startswith("paths.cache_dir=") for o in overrides) else [f"paths.cache_dir={output_dir}/cache"]
    overrides = [*overrides, f"paths.output_dir={output_dir}", *cache, "name=test", "~callbacks.progress_bar"]
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        cfg = compose(config_name=config_name, overrides=overrides)
    with open_dict(cfg):
        cfg.trainer.enable_progress_bar = False
    return cfg


def experiments() -> list[str]:
    return sorted(f[:-5] for f in os.listdir(os.path.join(CONF, "experiment")) if f.endswith(".yaml"))



class Killed(RuntimeError):
    pass


class KillAtStep(Callback):
    """Stops training abruptly at a global step, as a crash would; checkpoints written before it stay."""

    def __init__(self, step: int):
        self.step = step

    def on_train_batch_start(self, trainer, *args, **kwargs):
        if trainer.global_step >= self.step:
            raise Killed(f"killed at step {self.step}")


class CoinFlipVerifier:
    """A test reward (`reward._target_=tests.helpers.CoinFlipVerifier`) that calls about half of all completions
    correct (by a hash of the text), so an untrained model's groups are mixed and online methods get a gradient (a
    real verifier scores it 0 everywhere)."""

    answer_is_completion = True

    def __call__(self, example: dict, completion: str):
        import zlib

        from posttrain.rewards import Verdict

        return Verdict(correct=zlib.crc32(completion.encode()) % 2 == 0, parsed=True)


def assert_same_parameters(resumed, reference) -> None:
    """Every parameter of the module `resumed` equals the one of the same name in `reference` (atol 1e-6): how a
    resumed run is checked against the uninterrupted one."""
    import torch

    final = dict(reference.named_parameters())
    for name, param in resumed.named_parameters():
        torch.testing.assert_close(param, final[name], rtol=0, atol=1e-6, msg=name)
