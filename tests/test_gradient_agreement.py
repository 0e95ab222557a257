"""scripts/gradient_agreement.py (the gradient cosines of docs/methods/nft.md) runs from a composed config."""
import dataclasses
import importlib.util
import math
import os

import torch

SCRIPT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "scripts", "gradient_agreement.py")


def load_script():
    spec = importlib.util.spec_from_file_location("gradient_agreement", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_gradient_agreement_gives_the_cosines_of_each_stratum(tmp_path, monkeypatch):
    script = load_script()
    real_rollout = script.collect_rollout

    def graded_by_position(*args, **kwargs):
        # a 1-epoch tiny warm-up answers nothing right, so every group would be all wrong: grade answer j of each
        # group of 8 right when j < its prompt's index mod 8 + 1, giving the strata 1/8 ... 8/8
        rollout = real_rollout(*args, **kwargs)
        groups, k = rollout.grouped(rollout.rewards).shape
        rewards = (torch.arange(k)[None, :] < (torch.arange(groups)[:, None] % k + 1)).float().flatten()
        return dataclasses.replace(rollout, rewards=rewards)

    monkeypatch.setattr(script, "collect_rollout", graded_by_position)
    overrides = ["debug=tiny", "stages.warmup.trainer.max_epochs=1", "~callbacks.progress_bar",
                 f"paths.output_dir={tmp_path}", f"paths.cache_dir={tmp_path}/cache", "method.num_samples=8"]
    summary, cosines = script.agreement(seed=0, prompts=64, overrides=overrides)
    assert summary.startswith("seed 0: 7/8 mixed groups")  # the group graded 8/8 is not mixed
    assert len(cosines) == 3
    for values in cosines.values():
        assert set(values) == {"RFT-NFT", "NFT-GRPO", "RFT-GRPO"}
        assert all(-1.0 <= v <= 1.0 and not math.isnan(v) for v in values.values())
    low = next(values for stratum, values in cosines.items() if stratum.startswith("r̂ <= 2/8"))
    assert low["RFT-NFT"] > 0.5  # at low r̂ the RFT and NFT weights nearly agree (1 − r̂ vs 1)
