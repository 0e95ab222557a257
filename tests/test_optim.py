"""Optimizers and schedules by `_target_`: the module passes the parameters; bad keys and values name the key."""
import functools

import pytest
import torch

from posttrain.optim import build_optimizer, build_scheduler, schedule_factor, warmup_schedule
from posttrain.utils.config import ConfigError


def params():
    return [torch.nn.Parameter(torch.ones(3))]


def test_optimizer_from_a_target_mapping_or_a_hydra_partial():
    spec = {"_target_": "torch.optim.SGD", "_partial_": True, "lr": 0.5, "momentum": 0.9}
    optimizer = build_optimizer(params(), spec)
    assert isinstance(optimizer, torch.optim.SGD) and optimizer.defaults["momentum"] == 0.9
    partial = functools.partial(torch.optim.RMSprop, lr=0.01)
    assert isinstance(build_optimizer(params(), partial), torch.optim.RMSprop)
    from hydra.utils import instantiate

    from posttrain.optim import plain_spec

    hydra_partial = instantiate(spec)  # what a method receives from its config
    assert isinstance(build_optimizer(params(), hydra_partial), torch.optim.SGD)
    assert plain_spec(hydra_partial) == {"_target_": "torch.optim.sgd.SGD", "lr": 0.5, "momentum": 0.9}
    assert isinstance(build_optimizer(params(), plain_spec(hydra_partial)), torch.optim.SGD)
    default = build_optimizer(params())
    assert isinstance(default, torch.optim.AdamW) and default.defaults["lr"] == 1e-4


@pytest.mark.parametrize("spec, key", [
    ({"_target_": "torch.optim.AdamW", "lrr": 1e-3}, r"method\.optimizer\.lrr: unknown key"),
    ({"_target_": "torch.optim.AdamW", "lr": -1.0}, r"method\.optimizer\.lr: must be > 0"),
    ({"_target_": "torch.optim.AdamW", "weight_decay": -0.1}, r"method\.optimizer\.weight_decay"),
    ({"_target_": "torch.optim.Adagradd", "lr": 1e-3}, r"method\.optimizer\._target_: cannot import"),
    ({"name": "adamw"}, r"method\.optimizer: must be a mapping with a _target_"),
])
def test_bad_optimizer_names_the_key(spec, key):
    with pytest.raises(ConfigError, match="^" + key):
        build_optimizer(params(), spec)


def test_scheduler_gets_the_period_when_it_takes_one():
    optimizer = build_optimizer(params(), {"_target_": "torch.optim.SGD", "lr": 1.0})
    scheduler = build_scheduler(optimizer, 10, {"_target_": "posttrain.optim.warmup_schedule", "decay": "linear",
                                                "warmup_ratio": 0.2})
    assert isinstance(scheduler, torch.optim.lr_scheduler.LambdaLR)
    rates = []
    for _ in range(10):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    # 2 warm-up steps (1/2, 2/2), then linear from 1 down over the 8 remaining steps
    assert rates == pytest.approx([0.5, 1.0, 1.0, 0.875, 0.75, 0.625, 0.5, 0.375, 0.25, 0.125])
    torch_scheduler = build_scheduler(optimizer, 10, {"_target_": "torch.optim.lr_scheduler.ConstantLR",
                                                      "factor": 0.5})
    assert isinstance(torch_scheduler, torch.optim.lr_scheduler.ConstantLR)


def test_bad_scheduler_names_the_key():
    optimizer = build_optimizer(params(), {"_target_": "torch.optim.SGD", "lr": 1.0})
    with pytest.raises(ConfigError, match=r"^method\.scheduler\.decay: must be one of"):
        warmup_schedule(optimizer, 10, decay="step")
    with pytest.raises(ConfigError, match=r"^method\.scheduler\.name: unknown key"):
        build_scheduler(optimizer, 10, {"_target_": "posttrain.optim.warmup_schedule", "name": "cosine"})
    with pytest.raises(ConfigError, match=r"^method\.scheduler\.period: is set by the method"):
        build_scheduler(optimizer, 10, {"_target_": "posttrain.optim.warmup_schedule", "period": 3})


def test_schedule_restarts_every_period():
    assert schedule_factor(0, 4, "cosine") == schedule_factor(4, 4, "cosine") == 1.0
    assert schedule_factor(2, 4, "cosine") == pytest.approx(0.5)
