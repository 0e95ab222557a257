"""Diffusion data: the procedural blobs' winners and pairs; jsonl and parquet images and pairs with errors naming
file:line (file:row for parquet)."""
import io
import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from PIL import Image

from datamodules.diffusion import DiffusionDataModule, DiffusionJsonlTask
from datamodules.jsonl import DataError
from datamodules.tasks.blobs import BlobsTask
from posttrain.diffusion import DiffusionProcessor
from posttrain.rewards.images import BrightCentredReward
from posttrain.utils.config import ConfigError

REWARD = BrightCentredReward()
PROCESSOR = DiffusionProcessor(8, classes=["cat", "dog"])


def test_bright_centred_reward_prefers_bright_centred_large():
    dark = -torch.ones(1, 3, 16, 16)
    centred, corner, small = dark.clone(), dark.clone(), dark.clone()
    centred[..., 4:12, 4:12] = 1
    corner[..., 0:8, 0:8] = 1
    small[..., 6:10, 6:10] = 1
    scores = REWARD.score(torch.cat([dark, centred, corner, small, -dark]))
    assert scores[0] == 0 and scores[4] == pytest.approx(1.0)
    assert scores[1] > scores[2] and scores[1] > scores[3] > 0


def test_blob_winners_are_the_top_share_of_each_class():
    task = BlobsTask(REWARD, image_size=16, train_size=300, val_size=60, test_size=60, winner_share=0.3)
    images = task.images("train")
    for shape in ("circle", "square", "diamond"):
        rewards = sorted((e["reward"], e["winner"]) for e in images if e["prompt"] == shape)
        flags = [w for _, w in rewards]
        assert flags == sorted(flags)  # every winner above every other image of its class
        assert abs(sum(flags) / len(flags) - 0.3) < 0.05
    winners = BlobsTask(REWARD, image_size=16, train_size=300, view="winners").examples("train")
    assert all(e["winner"] for e in winners) and len(winners) == sum(e["winner"] for e in images)
    assert {e["source"] for e in task.examples("val")}.isdisjoint({e["source"] for e in task.examples("test")})
    assert all(e["winner"] for e in task.examples("val"))  # held-out splits are winners, whatever the view


def test_blob_pairs_share_a_class_and_the_chosen_has_the_higher_reward():
    task = BlobsTask(REWARD, image_size=16, train_size=200, view="pairs")
    pairs = task.examples("train")
    assert len(pairs) >= 95
    to_tensor = lambda im: torch.from_numpy(np.array(im)).permute(2, 0, 1)[None].float() / 127.5 - 1  # noqa: E731
    for pair in pairs[:20]:
        assert REWARD.score(to_tensor(pair["chosen"])) >= REWARD.score(to_tensor(pair["rejected"]))
        assert pair["source"].count("blobs:train") == 2


def write_images(folder, sizes):
    for name, size in sizes.items():
        Image.fromarray(np.full((size, size, 3), hash(name) % 255, dtype=np.uint8)).save(folder / name)


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def batches(task, resize=False):
    data = DiffusionDataModule(PROCESSOR, task, batch_size=2, eval_batch_size=2, resize=resize)
    data.setup()
    return next(iter(data.train_dataloader()))


def test_jsonl_winners_load_into_pixel_batches(tmp_path):
    write_images(tmp_path, {"a.png": 8, "b.png": 8, "c.png": 8})
    path = write_jsonl(tmp_path / "w.jsonl", [{"prompt": "cat", "image": "a.png"}, {"prompt": "dog", "image": "b.png"},
                                             {"prompt": "cat", "image": "c.png"}])
    task = DiffusionJsonlTask(path, val_fraction=0.34)
    assert len(task.examples("train")) == 2 and task.eval_splits == ("val",)
    batch = batches(task)
    assert batch["pixels"].shape == (2, 3, 8, 8) and batch["pixels"].min() >= -1 and batch["pixels"].max() <= 1
    assert sorted(batch["class_labels"].tolist()) == [0, 1]


def test_jsonl_pairs_load(tmp_path):
    write_images(tmp_path, {"a.png": 8, "b.png": 8})
    path = write_jsonl(tmp_path / "p.jsonl", [{"prompt": "cat", "chosen": "a.png", "rejected": "b.png"}] * 2)
    batch = batches(DiffusionJsonlTask(path, kind="pairs", val_fraction=0))
    assert batch["chosen_pixels"].shape == batch["rejected_pixels"].shape == (2, 3, 8, 8)
    assert not torch.equal(batch["chosen_pixels"], batch["rejected_pixels"])


def test_missing_image_names_file_and_line(tmp_path):
    write_images(tmp_path, {"a.png": 8})
    rows = [{"prompt": "cat", "image": "a.png"},
            {"prompt": "cat", "image": "no.png"}]
    path = write_jsonl(tmp_path / "w.jsonl", rows)
    with pytest.raises(DataError, match=r"w\.jsonl:2: image 'no\.png' does not exist"):
        DiffusionJsonlTask(path)


def test_undecodable_image_names_file_and_line(tmp_path):
    write_images(tmp_path, {"a.png": 8})
    (tmp_path / "bad.png").write_bytes(b"not a png")
    rows = [{"prompt": "cat", "image": "bad.png"},
            {"prompt": "dog", "image": "a.png"}]
    path = write_jsonl(tmp_path / "w.jsonl", rows)
    with pytest.raises(DataError, match=r"w\.jsonl:1: cannot decode image"):
        batches(DiffusionJsonlTask(path, val_fraction=0))


def test_pair_of_identical_images_names_file_and_line(tmp_path):
    write_images(tmp_path, {"a.png": 8, "b.png": 8})
    (tmp_path / "copy.png").write_bytes((tmp_path / "a.png").read_bytes())
    rows = [{"prompt": "cat", "chosen": "a.png", "rejected": "b.png"},
            {"prompt": "cat", "chosen": "a.png", "rejected": "copy.png"}]
    with pytest.raises(DataError, match=r"p\.jsonl:2: chosen and rejected are the same image"):
        DiffusionJsonlTask(write_jsonl(tmp_path / "p.jsonl", rows), kind="pairs")
    rows[1]["rejected"] = "a.png"
    with pytest.raises(DataError, match=r"q\.jsonl:2: chosen and rejected are the same image"):
        DiffusionJsonlTask(write_jsonl(tmp_path / "q.jsonl", rows), kind="pairs")


def test_wrong_size_is_an_error_unless_resizing(tmp_path):
    write_images(tmp_path, {"a.png": 8, "big.png": 12})
    rows = [{"prompt": "cat", "image": "a.png"},
            {"prompt": "dog", "image": "big.png"}]
    path = write_jsonl(tmp_path / "w.jsonl", rows)
    with pytest.raises(DataError, match=r"w\.jsonl:2: image is 12x12, the model's images are 8x8"):
        batches(DiffusionJsonlTask(path, val_fraction=0))
    assert batches(DiffusionJsonlTask(path, val_fraction=0), resize=True)["pixels"].shape == (2, 3, 8, 8)


def test_prompt_outside_the_models_classes_names_file_and_line(tmp_path):
    write_images(tmp_path, {"a.png": 8})
    rows = [{"prompt": "cat", "image": "a.png"},
            {"prompt": "owl", "image": "a.png"}]
    path = write_jsonl(tmp_path / "w.jsonl", rows)
    with pytest.raises(DataError, match=r"w\.jsonl:2: prompt 'owl' is not one of the model's classes"):
        batches(DiffusionJsonlTask(path, val_fraction=0))


# ---- parquet: images as bytes, {bytes, path} structs (Hugging Face datasets' Image feature) or paths ----------
def png(size: int, value: int) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.full((size, size, 3), value, dtype=np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def write_parquet(path, columns: dict, types: dict | None = None) -> str:
    types = types or {}
    table = pa.table({k: pa.array(v, type=types.get(k)) for k, v in columns.items()})
    pq.write_table(table, path)
    return str(path)


STRUCT = pa.struct([("bytes", pa.binary()), ("path", pa.string())])


def test_parquet_winners_from_bytes_structs_and_paths(tmp_path):
    write_images(tmp_path, {"c.png": 8})
    images = [{"bytes": png(8, 10), "path": "a.png"}, {"bytes": None, "path": "c.png"}, {"bytes": png(8, 200),
                                                                                         "path": None}]
    path = write_parquet(tmp_path / "w.parquet", {"caption": ["cat", "dog", "cat"], "jpg": images},
                         {"jpg": STRUCT})
    task = DiffusionJsonlTask(path, prompt_key="caption", image_key="jpg", val_fraction=0)
    examples = task.examples("train")
    assert [e["source"] for e in examples] == [f"{path}:row {i}" for i in range(3)]
    assert np.asarray(examples[0]["image"])[0, 0].tolist() == [10, 10, 10]
    assert np.asarray(examples[2]["image"])[0, 0].tolist() == [200, 200, 200]
    assert examples[1]["image"].size == (8, 8)  # decoded from the path, relative to the file's folder
    raw = write_parquet(tmp_path / "raw.parquet", {"prompt": ["cat", "dog"], "image": [png(8, 1), png(8, 2)]})
    batch = batches(DiffusionJsonlTask(raw, val_fraction=0))
    assert batch["pixels"].shape == (2, 3, 8, 8) and sorted(batch["class_labels"].tolist()) == [0, 1]


def test_parquet_pairs_load(tmp_path):
    path = write_parquet(tmp_path / "p.parquet", {"prompt": ["cat", "dog"], "chosen": [png(8, 1), png(8, 2)],
                                                  "rejected": [png(8, 3), png(8, 4)]})
    batch = batches(DiffusionJsonlTask(path, kind="pairs", val_fraction=0))
    assert batch["chosen_pixels"].shape == batch["rejected_pixels"].shape == (2, 3, 8, 8)
    assert not torch.equal(batch["chosen_pixels"], batch["rejected_pixels"])


def test_parquet_missing_images_name_file_and_row(tmp_path):
    path = write_parquet(tmp_path / "w.parquet", {"prompt": ["cat", "dog"], "image": [png(8, 1), None]})
    with pytest.raises(DataError, match=r"w\.parquet:row 1: image 'image' is missing \(null\)"):
        DiffusionJsonlTask(path)
    path = write_parquet(tmp_path / "s.parquet", {"prompt": ["cat", "dog"], "image": [
        {"bytes": png(8, 1), "path": None}, {"bytes": None, "path": "gone.png"}]}, {"image": STRUCT})
    with pytest.raises(DataError, match=r"s\.parquet:row 1: image 'gone\.png' does not exist"):
        DiffusionJsonlTask(path)
    path = write_parquet(tmp_path / "c.parquet", {"prompt": ["cat"], "picture": [png(8, 1)]})
    with pytest.raises(DataError, match=r"c\.parquet: missing column 'image'"):
        DiffusionJsonlTask(path)


def test_parquet_undecodable_image_names_file_and_row(tmp_path):
    path = write_parquet(tmp_path / "w.parquet", {"prompt": ["cat", "dog"], "image": [png(8, 1), b"not a png"]})
    with pytest.raises(DataError, match=r"w\.parquet:row 1: cannot decode image"):
        DiffusionJsonlTask(path, val_fraction=0).examples("train")[1]
    bad = tmp_path / "bad.parquet"
    bad.write_bytes(b"not parquet either")
    with pytest.raises(DataError, match=r"bad\.parquet: cannot read parquet"):
        DiffusionJsonlTask(str(bad))


def test_parquet_pair_of_identical_images_names_file_and_row(tmp_path):
    write_images(tmp_path, {"a.png": 8})
    same = (tmp_path / "a.png").read_bytes()
    path = write_parquet(tmp_path / "p.parquet", {"prompt": ["cat", "cat"], "chosen": [png(8, 1), same],
                                                  "rejected": [png(8, 2), same]})
    with pytest.raises(DataError, match=r"p\.parquet:row 1: chosen and rejected are the same image"):
        DiffusionJsonlTask(path, kind="pairs")
    mixed = write_parquet(tmp_path / "m.parquet", {"prompt": ["cat"], "chosen": [same], "rejected": ["a.png"]})
    with pytest.raises(DataError, match=r"m\.parquet:row 0: chosen and rejected are the same image"):
        DiffusionJsonlTask(mixed, kind="pairs")


def test_parquet_wrong_size_is_an_error_unless_resizing(tmp_path):
    path = write_parquet(tmp_path / "w.parquet", {"prompt": ["cat", "dog"], "image": [png(8, 1), png(12, 2)]})
    with pytest.raises(DataError, match=r"w\.parquet:row 1: image is 12x12, the model's images are 8x8"):
        batches(DiffusionJsonlTask(path, val_fraction=0))
    assert batches(DiffusionJsonlTask(path, val_fraction=0), resize=True)["pixels"].shape == (2, 3, 8, 8)


@pytest.mark.parametrize("key", ["train_size", "val_size", "test_size"])
def test_blobs_split_size_error_names_its_key(key):
    sizes = {"train_size": 300, "val_size": 60, "test_size": 60, key: 1}
    with pytest.raises(ConfigError, match=f"data.task.{key}"):
        BlobsTask(REWARD, image_size=16, **sizes)
