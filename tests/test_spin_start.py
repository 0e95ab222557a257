"""The start model of experiment=spin lands in a narrow range whatever the seed: its warm-up trains to its plateau
on the validation split (early stopping), not for a fixed number of steps that lands differently per seed or CPU."""
import statistics

import pytest

from posttrain.pipeline import train
from tests.helpers import compose_config

SEEDS = (0, 1)
# Half-widths of the range the two seeds' starts must share, on the reported (test) split; the spread measured
# over seeds 0-2 (docs/methods/spin.md) is well inside them.
MAX_SPREAD = {"test/valid": 0.05, "test/kl": 0.10, "test/tv": 0.05}


@pytest.mark.slow
def test_the_warm_up_start_is_stable_across_seeds(tmp_path):
    starts = []
    for seed in SEEDS:
        cfg = compose_config(["experiment=spin", f"seed={seed}", "stages.main=null", "stages.control=null",
                              "logger=none"], tmp_path / str(seed))
        result = train(cfg)
        (start,) = [row for row in result["rows"] if row["run"] == "sft (start)"]
        starts.append(start)
    for metric, spread in MAX_SPREAD.items():
        values = [start[metric] for start in starts]
        assert max(values) - min(values) <= 2 * spread, (metric, values)
    assert statistics.mean(s["test/valid"] for s in starts) > 0.8  # a trained start: most samples are valid
