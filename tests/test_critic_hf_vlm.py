"""The README's LLaVA-Critic-R1 command on a real checkpoint directory (model=hf_vlm) and jsonl critic data: a tiny
Qwen2.5-VL saved to disk stands in for Qwen2.5-VL-3B, with a coin-flip reward so its first groups are mixed."""
import os

from posttrain.models import save
from posttrain.pipeline import train
from tests.helpers import compose_config
from tests.test_configs import assert_every_parameter_changed, start_network
from tests.test_readme import ELSEWHERE, arguments, normalized, readme_commands, write_jsonl
from tests.vlm import shape_image, tiny_qwen_vl

COLOURS = {"red": (220, 20, 20), "blue": (20, 20, 220)}
SIZE = ["debug=tiny", "trainer.max_epochs=1", "method.evaluator.max_new_tokens=12",
        "method.generation.max_new_tokens=12", "reward._target_=tests.helpers.CoinFlipVerifier", "~reward.alpha",
        "method.truncated_is_wrong=false"]


def critic_rows(count: int, offset: int = 0) -> list[dict]:
    rows = []
    for i in range(count):
        colour, other = sorted(COLOURS)[(i + offset) % 2], sorted(COLOURS)[(i + offset + 1) % 2]
        right, wrong = f"<think>{colour}</think>\\boxed{{{colour}}}", f"<think>{other}</think>\\boxed{{{other}}}"
        first = (i // 2) % 2 == 0
        rows.append({"image": f"img/{colour}.png", "question": "What colour is the shape?",
                     "response_1": right if first else wrong, "response_2": wrong if first else right,
                     "preferred": 1 if first else 2})
    return rows


def readme_critic_command() -> str:
    command = next(c for c in readme_commands() if "experiment=llava_critic_r1" in c and "model=hf_vlm" in c)
    assert normalized(command) in ELSEWHERE  # tests/test_readme.py leaves it to this file
    return command


def test_readme_critic_command_on_a_saved_vlm_and_jsonl(tmp_path, monkeypatch):
    model, processor = tiny_qwen_vl()
    save(model, processor, str(tmp_path / "vlm"))
    os.makedirs(tmp_path / "critic" / "img")
    for name, colour in COLOURS.items():
        shape_image(64, 64, colour).save(tmp_path / "critic" / "img" / f"{name}.png")
    write_jsonl(tmp_path / "critic" / "train.jsonl", critic_rows(8))
    write_jsonl(tmp_path / "critic" / "val.jsonl", critic_rows(4, offset=1))
    monkeypatch.chdir(tmp_path)
    args = [f"model.name_or_path={tmp_path / 'vlm'}" if a.startswith("model.name_or_path=") else a
            for a in arguments(readme_critic_command())]
    as_written = compose_config(args, tmp_path / "composed")  # every line read: the tiny run's 240 / 64 are the shapes'
    assert as_written.data.train_size is None and as_written.data.eval_size is None
    assert as_written.stages.critic_sft.data.train_size is None
    cfg = compose_config([*args, *SIZE], tmp_path / "run")
    result = train(cfg)
    assert set(result["stages"]) == {"main", "critic_sft"}
    for key, stage in result["stages"].items():
        assert stage.trainer.global_step == 2, key
    assert_every_parameter_changed(result["module"], start_network(cfg, result, "main"), None, set())
    for row in result["rows"]:  # both arms scored on the 4 held-out pairs in both orders
        assert {"val/critic_accuracy", "val/critic_format", "val/position_bias"} <= set(row)
        assert row["val/critic_accuracy"] in {k / 8 for k in range(9)}
