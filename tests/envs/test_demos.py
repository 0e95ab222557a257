"""Expert demonstrations: collected, written as parquet + meta, read back exactly; malformed folders and mismatched
model sizes are errors naming file:row or the key; the dataset stage writes a cached folder."""
import json
import os

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from posttrain.envs import make_env
from posttrain.envs.demos import (
    COLUMNS,
    DATA_FILE,
    INFO_FILE,
    STATS_FILE,
    DemoDataError,
    action_chunk,
    collect_demos,
    normalize,
    read_demos,
    unnormalize,
    write_demos,
)
from posttrain.pipeline import train
from posttrain.utils.config import ConfigError
from tests.helpers import compose_config


@pytest.fixture(scope="module")
def episodes():
    env = make_env({"id": "metaworld", "tasks": ["push-v3"], "image_size": 32})
    try:
        kept, counts = collect_demos(env, [0, 1])
    finally:
        env.close()
    assert counts == {"attempted": 2, "kept": 2, "frames": sum(len(e) for e in kept)}
    return kept


def test_round_trip_and_meta(episodes, tmp_path):
    directory = write_demos(episodes, str(tmp_path / "demos"))
    table = pq.read_table(os.path.join(directory, DATA_FILE))
    assert tuple(table.column_names) == COLUMNS and table.num_rows == sum(len(e) for e in episodes)
    assert table.column("observation.images.scene")[0].as_py()[:8] == b"\x89PNG\r\n\x1a\n"
    demos = read_demos(directory)
    assert len(demos.episodes) == 2
    for wrote, read in zip(episodes, demos.episodes):
        for key in ("scene", "wrist", "state", "action"):
            np.testing.assert_array_equal(getattr(wrote, key), getattr(read, key))
        assert (read.instruction, read.env_task, read.color, read.seed) == (wrote.instruction, wrote.env_task,
                                                                            wrote.color, wrote.seed)
        assert read.projections == json.loads(json.dumps(wrote.projections))
    info = demos.info
    assert (info["state_dim"], info["action_dim"], info["image_size"], info["env_tasks"]) == (4, 4, [32, 32],
                                                                                            ["push-v3"])
    assert info["frames"] == table.num_rows and info["episodes"] == 2 and info["only_successful"]
    actions = np.concatenate([e.action for e in episodes])
    np.testing.assert_allclose(demos.stats["action"]["mean"], actions.mean(0), rtol=1e-6)
    np.testing.assert_allclose(demos.stats["action"]["q99"], np.quantile(actions, 0.99, axis=0), rtol=1e-6)
    assert all(lo <= hi for lo, hi in zip(demos.stats["observation.state"]["q01"],
                                          demos.stats["observation.state"]["q99"]))
    first = episodes[0]
    assert first.action[-1].shape == (4,) and np.all(np.abs(actions) <= 1.0)
    assert first.instruction and all(len(e) == len(e.state) == len(e.scene) for e in episodes)


def rewrite(directory: str, row: int, column: str, value) -> None:
    path = os.path.join(directory, DATA_FILE)
    data = pq.read_table(path).to_pydict()
    data[column][row] = value
    pq.write_table(pa.Table.from_pydict(data, schema=pq.read_schema(path)), path)


def test_malformed_rows_name_file_and_row(episodes, tmp_path):
    directory = write_demos(episodes, str(tmp_path / "d"))
    rewrite(directory, 3, "action", [0.0, 1.0])
    with pytest.raises(DemoDataError, match=r"episodes\.parquet:row 3: action has 2 values, .*action_dim = 4"):
        read_demos(directory)
    directory = write_demos(episodes, str(tmp_path / "e"))
    rewrite(directory, 5, "observation.images.wrist", b"not a png")
    with pytest.raises(DemoDataError, match=r"episodes\.parquet:row 5: cannot decode the PNG"):
        read_demos(directory)
    directory = write_demos(episodes, str(tmp_path / "f"))
    rewrite(directory, 2, "frame_index", 7)
    with pytest.raises(DemoDataError, match=r"episodes\.parquet:row 2: expected episode 0 frame 2"):
        read_demos(directory)
    os.remove(os.path.join(directory, STATS_FILE))
    with pytest.raises(DemoDataError, match=r"stats\.json: no such file"):
        read_demos(directory)


def test_model_sizes_must_match_and_failed_episodes_are_refused(episodes, tmp_path):
    demos = read_demos(write_demos(episodes, str(tmp_path / "d")))
    demos.check_dims(action_dim=4, state_dim=4)
    with pytest.raises(ConfigError, match=r"model\.action_head\.action_dim: is 7, but the demonstrations in .* 4"):
        demos.check_dims(action_dim=7, where="model.action_head")
    failed = episodes[0].__class__(**{**episodes[0].__dict__, "success": False})
    with pytest.raises(ConfigError, match=r"demos\[1\]: a failed episode"):
        write_demos([episodes[1], failed], str(tmp_path / "x"))
    info_path = os.path.join(tmp_path, "d", INFO_FILE)
    with open(info_path) as handle:
        info = json.load(handle)
    with open(info_path, "w") as handle:
        json.dump({**info, "episodes": 3}, handle)
    with pytest.raises(DemoDataError, match="2 episodes, meta/info.json says 3"):
        read_demos(str(tmp_path / "d"))


def test_the_demonstration_stage_writes_a_cached_folder(tmp_path):
    overrides = ["+env=metaworld_pick_place", "env.tasks=[push-v3]", "env.image_size=32",
                 "+stage@stages.demos=metaworld_demos", "stages.main=null", "stages.demos.data.count=2",
                 "stages.demos.data.batch_size=1", "logger=none"]
    result = train(compose_config(overrides, tmp_path))
    demos = result["stages"]["demos"]
    assert demos.output.startswith(str(tmp_path / "cache" / "demos-")) and os.path.isdir(demos.output)
    assert len(read_demos(demos.output).episodes) == 2
    assert demos.rows[0]["dataset/examples"] == 2 and demos.rows[0]["dataset/expert_success"] == 1.0
    row = demos.rows[0]  # the cost: steps/s = demos/min / 60 x the mean episode length, over the same wall time
    steps_per_episode = row["perf/sim_steps_per_s"] * 60 / row["perf/demos_per_min"]
    assert steps_per_episode == pytest.approx(row["dataset/frames"] / 2)
    assert row["perf/demos_per_cpu_min"] > 0
    again = train(compose_config([*overrides, f"paths.cache_dir={tmp_path / 'cache'}"], tmp_path / "again"))
    assert again["stages"]["demos"].module is None and again["stages"]["demos"].output == demos.output


def test_action_chunks_pad_with_the_last_action_and_mask_it():
    actions = np.arange(8, dtype=np.float32).reshape(4, 2)
    chunk, mask = action_chunk(actions, 2, 4)
    np.testing.assert_array_equal(chunk, [[4, 5], [6, 7], [6, 7], [6, 7]])
    np.testing.assert_array_equal(mask, [True, True, False, False])
    chunk, mask = action_chunk(actions, 0, 2)
    np.testing.assert_array_equal(chunk, actions[:2])
    assert mask.all()


def test_normalisation_maps_q01_q99_to_unit_range_and_back():
    stats = {"q01": [0.0, -2.0, 1.0], "q99": [4.0, 2.0, 1.0]}
    values = np.array([[0.0, -2.0, 1.0], [2.0, 1.0, 1.0], [8.0, 0.0, 3.0]], np.float32)
    normed = normalize(values, stats)
    np.testing.assert_allclose(normed, [[-1, -1, 0], [0, 0.5, 0], [1, 0, 1]])  # clipped; constant dim shifted
    np.testing.assert_allclose(unnormalize(normed[:2], stats), values[:2])


def test_frames_index_every_frame(episodes, tmp_path):
    demos = read_demos(write_demos(episodes, str(tmp_path / "d")))
    frames = demos.frames()
    assert len(frames) == demos.info["frames"] and frames[0] == (0, 0) and frames[-1] == (1, len(episodes[1]) - 1)
