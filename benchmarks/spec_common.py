"""Shared by the speculative-decoding programs: find the models of `experiment=distillspec`, held-out prompts, and
interleaved timing (target-only and speculative decoding alternate in one process; medians of the repeats)."""
from __future__ import annotations

import glob
import os
import statistics
import time

import torch

from posttrain.generation.sampling import _accepts
from posttrain.models.builders import from_pretrained
from posttrain.processors import TextProcessor, left_pad

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def latest(pattern: str) -> str | None:
    """The most recently written directory matching `pattern` under the repo (None if there is none)."""
    hits = [p for p in glob.glob(os.path.join(ROOT, pattern)) if os.path.isdir(p)]
    return max(hits, key=os.path.getmtime) if hits else None


def add_model_arguments(parser) -> None:
    parser.add_argument("--target", default=None, help="default: the newest logs/cache/teacher-*")
    parser.add_argument("--draft", default=None, help="undistilled draft; default: the newest logs/cache/warmup-*")
    parser.add_argument("--distilled", default=None, help="default: the newest logs/distillspec/runs/*/model")


def load_models(args):
    paths = {"target": args.target or latest("logs/cache/teacher-*"),
             "undistilled": args.draft or latest("logs/cache/warmup-*"),
             "distilled": args.distilled or latest("logs/distillspec/runs/*/model")}
    missing = [k for k, v in paths.items() if v is None]
    if missing:
        raise SystemExit(f"no saved model for {missing}: run `python train.py experiment=distillspec` first")
    models, tokenizer = {}, None
    for name, path in paths.items():
        models[name], tokenizer = from_pretrained(path)
        models[name].eval()
    return models, tokenizer, paths


def held_out(tokenizer, count: int, seed: int = 0):
    """The first `count` validation problems of `experiment=distillspec`'s task, with their encoded prompts.

    The task is built from the experiment's own config, so the programs evaluate the split the models were
    validated on (and never the training problems) whatever `data.task` the experiment sets."""
    from hydra import compose, initialize_config_dir
    from hydra.utils import instantiate

    from posttrain.pipeline import register_resolvers

    register_resolvers()
    with initialize_config_dir(config_dir=os.path.join(ROOT, "conf"), version_base="1.3"):
        cfg = compose(config_name="train", overrides=["experiment=distillspec", f"seed={seed}"])
    task = instantiate(cfg.data.task)
    examples = task.examples("val")[:count]
    encoder = TextProcessor(tokenizer, max_length=cfg.data.max_length)
    return task, examples, encoder, [encoder.prompt(e["prompt"]) for e in examples]


def batches(prompts, pad_id: int, size: int):
    return [left_pad(prompts[i : i + size], pad_id) for i in range(0, len(prompts), size)]


def interleaved(fns: dict, repeats: int) -> dict:
    """Median wall-clock seconds of each fn, the fns called in turn within every repeat (after one warm-up round)."""
    times = {name: [] for name in fns}
    for r in range(repeats + 1):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            if r:
                times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def forward_cost_ratio(draft, target, ids: torch.Tensor, repeats: int = 50) -> float:
    """c: one draft forward of one new token over a cached prompt, over the same for the target."""
    def one_step(model):
        arg = "cache" if _accepts(model, "cache") else "past_key_values"
        with torch.no_grad():
            cache = model(input_ids=ids, use_cache=True)[arg]
        nxt = ids[:, -1:]

        def step():
            with torch.no_grad():
                model(input_ids=nxt, use_cache=True, **{arg: cache})
            cache.crop(-1)  # back to the prompt, so every repeat sees the same cache length
        return step
    t = interleaved({"draft": one_step(draft), "target": one_step(target)}, repeats)
    return t["draft"] / t["target"]
