"""Every `python train.py` command of README.md runs as written.

Each command is split into arguments by bash itself, its `/models/...` directories are replaced by tiny checkpoints
built here (a Qwen2 causal LM over a byte-level BPE tokenizer trained here, a Qwen2.5-VL), it runs in a folder that
holds the jsonl files and images it names (with the README's field names), and a fixed list of size-only overrides
is appended (`debug=tiny`, one epoch, short generations); then it is composed and trained in-process.
"""
from __future__ import annotations

import json
import os
import re
import subprocess

import pytest
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

from datamodules.jsonl import DataError
from posttrain.models import save
from posttrain.models.forward import label_logprobs
from posttrain.pipeline import train
from posttrain.processors import SFTCollator, make_processor
from posttrain.utils.config import ConfigError
from tests.helpers import ROOT, compose_config
from tests.test_configs import DIFFUSION, assert_every_parameter_changed, start_network
from tests.vlm import shape_image, tiny_qwen_vl

README = os.path.join(ROOT, "README.md")
COMMAND = "python train.py"

# Commands run elsewhere: a placeholder, a resume, two processes (slow), and 8 GPUs (composed here, not run).
MULTI_GPU = {
    "python train.py experiment=grpo trainer=ddp trainer.devices=8 ...": "lightning.pytorch.strategies.DDPStrategy",
    "python train.py experiment=grpo trainer=fsdp trainer.devices=8 ...":
        "lightning.pytorch.strategies.ModelParallelStrategy",
}
ELSEWHERE = {
    "python train.py experiment=<name>": "tests/test_configs.py runs every experiment",
    "python train.py experiment=spin ckpt_path=logs/spin/runs/<date_time>/checkpoints/main/last.ckpt":
        "tests/lightning_modules/test_resume.py resumes a killed SPIN run from its last.ckpt",
    "python train.py experiment=grpo trainer=ddp trainer.accelerator=cpu trainer.devices=2":
        "tests/lightning_modules/test_ddp_online.py (two processes)",
    **{command: "needs 8 GPUs; test_multi_gpu_commands_compose" for command in MULTI_GPU},
    "python train.py experiment=llava_critic_r1 model=hf_vlm model.name_or_path=/models/Qwen2.5-VL-3B-Instruct "
    "data=critic_jsonl data.task.train_path=critic/train.jsonl 'data.task.eval_paths={val: critic/val.jsonl}' "
    "stages.warmup=null stages.policy_grpo=null method.optimizer.lr=1e-6 method.generation.max_new_tokens=512":
        "tests/test_critic_hf_vlm.py runs it on a tiny saved Qwen2.5-VL with a coin-flip reward",
}

# The README's model directories -> the checkpoint built here that stands in for each.
MODELS = {"/models/Qwen2.5-0.5B": "base", "/models/Qwen2.5-0.5B-Instruct": "instruct",
          "/models/Qwen2.5-VL-3B-Instruct": "vlm"}

# Size-only overrides appended to every command: 8 examples in batches of 4, two steps, short generations (for the
# experiments that generate text), and each experiment's own.
SIZE = ["debug=tiny", "trainer.max_epochs=1"]
TEXT_SIZE = ["method.evaluator.max_new_tokens=12"]
IMAGE_EXPERIMENTS = {"seppo", "diffusion_dpo"}  # diffusion models: their evaluators sample images, not text
SIZE_BY_EXPERIMENT = {
    "seppo": [*DIFFUSION, "method.sample_steps=2"],
    "spin": ["method.num_iterations=1", "method.epochs_per_iteration=1", "method.generation.max_new_tokens=12"],
    "grpo": ["method.generation.max_new_tokens=16"],
    "gflowvlm": ["method.generation.max_new_tokens=12", "env.max_steps=2", "method.num_samples=2",
                 "method.ppo.epochs=1", "method.evaluator.num_samples=2", "method.evaluator.diversity_tasks=1",
                 "data.eval_size=2"],
}
SIZE_OF_STAGES = {"warmup": ["stages.warmup.trainer.max_epochs=1"]}  # for the stages a command keeps


def readme_commands() -> list[str]:
    """The `python train.py ...` commands of README.md, each from `python train.py` to the end of its line: in
    fenced blocks (continuation lines joined) and in inline code."""
    with open(README, encoding="utf-8") as handle:
        text = handle.read()
    fence = r"^```[a-z]*\n(.*?)^```"
    commands = []
    for block in re.findall(fence, text, flags=re.DOTALL | re.MULTILINE):
        for line in block.replace("\\\n", " ").splitlines():
            if COMMAND in line:
                commands.append(line[line.index(COMMAND):])
    outside = re.sub(fence, "", text, flags=re.DOTALL | re.MULTILINE)
    return commands + re.findall(rf"`({re.escape(COMMAND)}[^`]*)`", outside)


def normalized(command: str) -> str:
    """How ELSEWHERE names a command: spaces collapsed, a trailing comment dropped."""
    return re.sub(r"\s+#\s.*$", "", re.sub(r"\s+", " ", command)).strip()


def arguments(command: str) -> list[str]:
    """The arguments bash passes to `python train.py` for this command line (quotes, $'...' and all)."""
    rest = command[len(COMMAND):]
    script = f"set -f; printf '%s\\0' {rest}"
    words = subprocess.run(["bash", "-c", script], check=True, capture_output=True, text=True).stdout
    return words.split("\0")[:-1]


def run_here() -> list[str]:
    return [c for c in readme_commands() if normalized(c) not in ELSEWHERE]


def value(args: list[str], key: str) -> str | None:
    found = [a.split("=", 1)[1] for a in args if a.startswith(f"{key}=")]
    return found[-1] if found else None


def test_every_train_command_of_the_readme_is_run_by_a_test():
    commands = readme_commands()
    with open(README, encoding="utf-8") as handle:
        assert len(commands) == handle.read().count(COMMAND), "a command the parser did not find"
    stale = set(ELSEWHERE) - {normalized(c) for c in commands}
    assert not stale, f"ELSEWHERE names commands the README no longer has: {stale}"
    assert len(run_here()) >= 7  # the default SPIN run, and SFT, SPIN, GRPO, DPO, VLM SFT and VLM GRPO on real data
    assert {value(arguments(c), "experiment") for c in run_here()} >= {"sft", "spin", "grpo", "dpo"}


@pytest.mark.parametrize("command", sorted(MULTI_GPU))
def test_multi_gpu_commands_compose(command, tmp_path):
    args = [a for a in normalized(command)[len(COMMAND):].split() if a != "..."]
    cfg = compose_config(args, tmp_path)
    assert cfg.trainer.devices == 8 and cfg.trainer.strategy._target_ == MULTI_GPU[command]


# ---------------------------------------------------------------------------------------------------------------
# What a user has: checkpoints and jsonl files with their own field names.


def problems(count: int, offset: int = 0) -> list[dict]:
    """Small additions in three styles: SFT pairs, GSM8K-like worked answers, preference pairs."""
    rows = []
    for i in range(count):
        a, b = (3 * i + offset) % 5, (7 * i + 2 * offset) % 5
        rows.append({"question": f"What is {a} plus {b}?", "solution": f"{a} plus {b} is {a + b}",
                     "answer": f"{a} + {b} = {a + b}. #### {a + b}", "wrong": f"{a} plus {b} is {a + b + 1}"})
    return rows


def write_jsonl(path, rows: list) -> None:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w", encoding="utf-8") as handle:
        handle.writelines((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows)


COLOURS = {"red": (220, 20, 20), "blue": (20, 20, 220)}


def image_rows(count: int, offset: int = 0) -> list[dict]:
    names = sorted(COLOURS)
    return [{"img": f"{names[(i + offset) % 2]}_{(i + offset) % 3}.png", "question": "What colour is the shape?",
             "answer": names[(i + offset) % 2]} for i in range(count)]


def write_images(folder) -> None:
    boxes = [(0.2, 0.2, 0.8, 0.8), (0.1, 0.4, 0.5, 0.9), (0.5, 0.1, 0.9, 0.6)]
    for name, colour in COLOURS.items():
        for k, box in enumerate(boxes):
            shape_image(64, 64, colour, box).save(os.path.join(folder, f"{name}_{k}.png"))


def write_data(folder) -> None:
    train, held_out = problems(16), problems(8, offset=1)
    for name, rows in (("train", train), ("val", held_out)):
        write_jsonl(os.path.join(folder, f"{name}.jsonl"),
                    [{"question": r["question"], "solution": r["solution"]} for r in rows])
    for name, rows in (("gsm8k_train", train), ("gsm8k_test", held_out)):
        write_jsonl(os.path.join(folder, f"{name}.jsonl"), [{"question": r["question"], "answer": r["answer"]}
                                                             for r in rows])
    for name, rows in (("pairs", train), ("pairs_val", held_out)):
        write_jsonl(os.path.join(folder, f"{name}.jsonl"),
                    [{"instruction": r["question"], "good": r["solution"], "bad": r["wrong"]} for r in rows])
    os.makedirs(os.path.join(folder, "images"))
    write_images(os.path.join(folder, "images"))
    write_jsonl(os.path.join(folder, "images", "train.jsonl"), image_rows(16))
    write_jsonl(os.path.join(folder, "images", "val.jsonl"), image_rows(4, offset=1))


def bpe_tokenizer(texts: list[str]) -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer trained on `texts` (GPT-2 / Qwen style: no bos, eos ends a response)."""
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=["<|endoftext|>", "<|pad|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tokenizer.train_from_iterator(texts, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, eos_token="<|endoftext|>", pad_token="<|pad|>")


def tiny_qwen2(tokenizer) -> Qwen2ForCausalLM:
    torch.manual_seed(0)
    return Qwen2ForCausalLM(Qwen2Config(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
        num_key_value_heads=1, max_position_embeddings=256, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id, bos_token_id=None, tie_word_embeddings=False))


def fine_tune(model, tokenizer_or_processor, examples: list[dict], steps: int) -> None:
    """A few full-batch SFT steps, so the checkpoint answers its task part of the time, as an instruct model would:
    an online method's groups of sampled answers are then mixed, and it gets a gradient."""
    batch = SFTCollator(make_processor(tokenizer_or_processor, 128, "{prompt}"))(
        [{**e, "index": i} for i, e in enumerate(examples)])
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    torch.manual_seed(0)
    for _ in range(steps):
        logps, mask = label_logprobs(model, batch["input_ids"], batch["attention_mask"], batch["labels"],
                                     image_inputs=batch.get("image_inputs"))
        loss = -logps.sum() / mask.sum()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """{"data": the folder the commands run in, and each stand-in checkpoint's directory by its MODELS name}."""
    root = tmp_path_factory.mktemp("readme")
    write_data(root / "data")
    rows = problems(16)
    tokenizer = bpe_tokenizer([r[k] for r in rows for k in ("question", "solution", "answer", "wrong")])
    save(tiny_qwen2(tokenizer), tokenizer, str(root / "base"))
    instruct = tiny_qwen2(tokenizer)
    fine_tune(instruct, tokenizer, [{"prompt": r["question"], "response": r["answer"]} for r in rows[:8]], steps=35)
    save(instruct, tokenizer, str(root / "instruct"))
    vlm, processor = tiny_qwen_vl()
    images = [{"image": shape_image(64, 64, COLOURS[r["answer"]]), "prompt": r["question"], "response": r["answer"]}
              for r in image_rows(8)]
    fine_tune(vlm, processor, images, steps=10)
    save(vlm, processor, str(root / "vlm"))
    return {"data": root / "data", **{name: root / name for name in MODELS.values()}}


def overrides(command: str, workspace) -> list[str]:
    """The command's arguments with the stand-in checkpoints, then the size-only overrides."""
    args = []
    for arg in arguments(command):
        if arg.startswith("model.name_or_path="):
            arg = f"model.name_or_path={workspace[MODELS[value([arg], 'model.name_or_path')]]}"
        args.append(arg)
    stages = compose_config(args, "unused-output-dir").stages  # which stages the command keeps
    kept = [s for s in SIZE_OF_STAGES if stages.get(s) is not None]
    experiment = value(args, "experiment")
    text = [] if experiment in IMAGE_EXPERIMENTS else TEXT_SIZE
    return [*args, *SIZE, *text, *SIZE_BY_EXPERIMENT.get(experiment, []),
            *(o for s in kept for o in SIZE_OF_STAGES[s])]


def held_out_splits(args: list[str]) -> set[str]:
    """The held-out splits a command names: the keys of data.task.eval_paths, `val` for data.val_path."""
    paths = value(args, "data.task.eval_paths")
    splits = set(re.findall(r"(\w+):", paths)) if paths else set()
    return splits | ({"val"} if value(args, "data.val_path") else set())


def rows_of(result: dict, key: str) -> list[dict]:
    """The results rows of one stage: labelled with its name, alone or followed by `(start)`, `epoch e`, ..."""
    name = result["stages"][key].planned.stage.name
    return [row for row in result["rows"] if row["run"] == name or row["run"].startswith(f"{name} ")]


def command_id(command: str) -> str:
    args = arguments(command)
    return "-".join(filter(None, (value(args, "experiment"), value(args, "model"), value(args, "data"))))


@pytest.mark.parametrize("command", run_here(), ids=command_id)
def test_readme_command_runs_as_written(command, workspace, tmp_path, monkeypatch):
    monkeypatch.chdir(workspace["data"])
    cfg = compose_config(overrides(command, workspace), tmp_path)
    result = train(cfg)
    assert set(result["stages"]) == {k for k, v in cfg.stages.items() if v is not None}
    for key, stage in result["stages"].items():
        assert stage.trainer.global_step > 0, f"{key}: no training step"
        assert rows_of(result, key), f"{key}: no results row"
    with open(tmp_path / "results.json", encoding="utf-8") as handle:
        assert json.load(handle)["rows"] == json.loads(json.dumps(result["rows"]))
    main = result["stages"]["main"]
    assert_every_parameter_changed(main.module, start_network(cfg, result, "main"), None, set())
    evaluated = set().union(*rows_of(result, "main"))
    for split in held_out_splits(arguments(command)):
        assert any(k.startswith(f"{split}/") for k in evaluated), f"no {split}/ metrics in {sorted(evaluated)}"


# ---------------------------------------------------------------------------------------------------------------
# Bad input to the README's vision-language SFT command stops the run with the file and line, or the model key.


def in_chain(error: BaseException, kind: type) -> BaseException | None:
    """The first error of `kind` in the chain of causes (Hydra's instantiate wraps the error raised where the
    problem was found, naming the config key too)."""
    while error is not None and not isinstance(error, kind):
        error = error.__cause__
    return error


def vlm_sft_command() -> str:
    return next(c for c in run_here() if "model=hf_vlm" in c and "experiment=sft" in c)


def truncated_png(path) -> None:
    shape_image(32, 32, (1, 2, 3)).save(path)
    with open(path, "rb") as handle:
        data = handle.read()
    with open(path, "wb") as handle:
        handle.write(data[:60])


@pytest.mark.parametrize("defect, message", [
    ("missing_key", "missing key 'img'"),
    ("missing_file", "image 'absent.png' does not exist"),
    ("undecodable", "cannot decode image"),
])
def test_bad_image_data_names_file_and_line(defect, message, workspace, tmp_path, monkeypatch):
    folder = tmp_path / "data"
    os.makedirs(folder / "images")
    write_images(folder / "images")
    rows = image_rows(6)
    if defect == "missing_key":
        del rows[2]["img"]
    elif defect == "missing_file":
        rows[2]["img"] = "absent.png"
    else:
        truncated_png(folder / "images" / "broken.png")
        rows[2]["img"] = "broken.png"
    write_jsonl(folder / "images" / "train.jsonl", rows)
    write_jsonl(folder / "images" / "val.jsonl", image_rows(2))
    monkeypatch.chdir(folder)
    cfg = compose_config(overrides(vlm_sft_command(), workspace), tmp_path / "run")
    with pytest.raises(Exception, match=rf"images/train.jsonl:3: .*{re.escape(message)}") as err:
        train(cfg)
    assert str(in_chain(err.value, DataError)).startswith("images/train.jsonl:3: ")


def test_a_vlm_checkpoint_without_an_image_processor_is_named(workspace, tmp_path, monkeypatch):
    model, processor = tiny_qwen_vl()
    save(model, processor.tokenizer, str(tmp_path / "text_only"))
    monkeypatch.chdir(workspace["data"])
    args = [a if not a.startswith("model.name_or_path=") else f"model.name_or_path={tmp_path / 'text_only'}"
            for a in overrides(vlm_sft_command(), workspace)]
    with pytest.raises(Exception) as err:
        train(compose_config(args, tmp_path / "run"))
    expected = f"model.name_or_path: {tmp_path / 'text_only'} has no image processor"
    assert str(in_chain(err.value, ConfigError)).startswith(expected)


def test_install_commands_use_the_constraints_and_ci_installs_as_the_readme_does():
    with open(README, encoding="utf-8") as handle:
        first_blocks = re.findall(r"```bash\n(.*?)\n```", handle.read(), re.S)[:2]
    with open(os.path.join(ROOT, ".ci", "run"), encoding="utf-8") as handle:
        ci = handle.read()
    with open(os.path.join(ROOT, "constraints.txt"), encoding="utf-8") as handle:
        pins = dict(line.split("==") for line in handle.read().split("\n") if line and not line.startswith("#"))
    assert all("pip install --no-build-isolation -c constraints.txt -e" in block for block in first_blocks)
    assert 'pip install --quiet --no-build-isolation -c constraints.txt -e ".[test]"' in ci
    assert f"torch=={pins['torch']}" in first_blocks[0] and f"torch=={pins['torch']}" in ci
