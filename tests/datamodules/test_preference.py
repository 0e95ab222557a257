import json

import pytest

from datamodules.jsonl import DataError
from datamodules.preference import PreferenceDataModule
from datamodules.tasks import ArithmeticPairTask
from posttrain.models import build_char_tokenizer
from posttrain.utils.config import ConfigError


@pytest.fixture(scope="module")
def tokenizer():
    return build_char_tokenizer()


def write(path, rows):
    path.write_text("\n".join(rows) + "\n")
    return str(path)


def test_from_a_task_one_validation_loader_per_held_out_split(tokenizer):
    task = ArithmeticPairTask(train_size=40, val_size=10, test_ood_size=6, seed=0)
    data = PreferenceDataModule(tokenizer, task=task, batch_size=8, eval_batch_size=4, train_size=20)
    data.setup("fit")
    assert data.eval_splits == ("val", "test_ood")
    assert len(data.splits["train"]) == 20
    loaders = data.val_dataloader()
    assert [len(loader.dataset) for loader in loaders] == [10, 6]
    batch = next(iter(data.train_dataloader()))
    assert batch["chosen_input_ids"].shape[0] == 8 and len(batch["examples"]) == 8
    first = batch["examples"][0]
    ids = batch["chosen_input_ids"][0, : batch["chosen_attention_mask"][0].sum()].tolist()
    assert tokenizer.decode(ids, skip_special_tokens=True) == first["prompt"] + first["chosen"]


def test_from_jsonl(tokenizer, tmp_path):
    rows = [json.dumps({"q": f"{i}+1=", "good": str(i + 1), "bad": str(i)}) for i in range(6)]
    train = write(tmp_path / "train.jsonl", rows)
    data = PreferenceDataModule(tokenizer, train_path=train, val_path=train, prompt_key="q", chosen_key="good",
                                rejected_key="bad", batch_size=4)
    data.setup("fit")
    assert data.eval_splits == ("val",) and data.splits["val"][2]["chosen"] == "3"
    assert len(data.val_dataloader()) == 1
    alone = PreferenceDataModule(tokenizer, train_path=train, prompt_key="q", chosen_key="good", rejected_key="bad")
    alone.setup("fit")
    assert alone.eval_splits == () and alone.val_dataloader() == []


def test_malformed_jsonl_names_file_and_line(tokenizer, tmp_path):
    path = write(tmp_path / "pairs.jsonl", ['{"prompt": "1+1=", "chosen": "2", "rejected": "3"}', '{"prompt": "x"}'])
    data = PreferenceDataModule(tokenizer, train_path=path)
    with pytest.raises(DataError, match=f"^{path}:2: missing key 'chosen'"):
        data.setup("fit")


def test_exactly_one_source(tokenizer, tmp_path):
    with pytest.raises(ConfigError, match="data.train_path"):
        PreferenceDataModule(tokenizer)
    with pytest.raises(ConfigError, match="data.train_path"):
        PreferenceDataModule(tokenizer, train_path="x.jsonl", task=ArithmeticPairTask(train_size=4, val_size=2,
                                                                                     test_ood_size=2))


@pytest.mark.parametrize("key", ["train_size", "eval_size"])
@pytest.mark.parametrize("size", [0, -1])
def test_sizes_must_be_positive_or_null(tokenizer, key, size):
    task = ArithmeticPairTask(train_size=4, val_size=2, test_ood_size=2)
    with pytest.raises(ConfigError, match=rf"data\.{key}"):
        PreferenceDataModule(tokenizer, task=task, **{key: size})
