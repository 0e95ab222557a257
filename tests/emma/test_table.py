"""scripts/emma_table.py: the last value of each arm's measures in each run, mean ± sd over the runs."""
import importlib.util
import os

from torch.utils.tensorboard import SummaryWriter

from tests.helpers import ROOT


def load_script():
    spec = importlib.util.spec_from_file_location("emma_table", os.path.join(ROOT, "scripts", "emma_table.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def write_run(root, values: dict[str, dict[str, float]]) -> str:
    for arm, scalars in values.items():
        writer = SummaryWriter(os.path.join(root, "tensorboard", arm))
        for tag, value in scalars.items():
            writer.add_scalar(tag, -1.0, 0)  # an earlier value: the table takes the last one
            writer.add_scalar(tag, value, 10)
        writer.close()
    return str(root)


def test_the_table_averages_the_last_values_over_runs(tmp_path):
    table_script = load_script()
    first = write_run(tmp_path / "a", {"real_only": {"held_out_objects/success": 0.0,
                                                     "offline/demo/action_mse": 0.2}})
    second = write_run(tmp_path / "b", {"real_only": {"held_out_objects/success": 0.5,
                                                      "offline/demo/action_mse": 0.4},
                                        "oracle": {"held_out_objects/success": 1.0}})
    table = table_script.collect([first, second])
    assert [r["held_out_objects/success"] for r in table["real_only"]] == [0.0, 0.5]
    assert len(table["oracle"]) == 1 and table["main"] == []
    lines = table_script.rows(table, lambda split: f"offline/{split}/action_mse", 2)
    assert lines[2] == "| real only | 0.30 ± 0.14 | – | – | – | – |"
    success = table_script.rows(table, lambda split: f"{split}/success", 2)
    assert "| real + oracle | – | – | 1.00 ± 0.00 | – | – |" in success


def test_the_blind_predictor_scores_the_spread_of_the_actions(tmp_path):
    """With one-step chunks on its own demonstrations, the mean action's error is the actions' variance (normalised
    by the folder's q01/q99, averaged over the dimensions)."""
    import numpy as np

    from posttrain.envs.demos import read_demos
    from tests.vla_fixtures import write_demos

    folder = write_demos(tmp_path / "demos", episodes=2)
    demos = read_demos(folder)
    q01, q99 = (np.array(demos.stats["action"][k]) for k in ("q01", "q99"))
    actions = np.concatenate([e.action for e in demos.episodes])
    span = q99 - q01
    scaled = np.where(span > 1e-6, np.clip(2 * (actions - q01) / np.maximum(span, 1e-6) - 1, -1, 1), 0.0)
    expected = scaled.var(axis=0).mean()
    assert expected > 0
    assert abs(load_script().blind_error(folder, folder, chunk=1, stride=1) - expected) < 1e-5
