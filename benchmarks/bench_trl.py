"""posttrain side by side with TRL: the same tiny model, data and settings trained by both, one process each.

    pip install trl          # optional: only this benchmark uses it
    python benchmarks/bench_trl.py [--pairs spin-dpo,grpo-grpo] [--prompts 256] [--batch 32] [--threads 2]

Pairs (posttrain vs the TRL trainer a user would pick instead):
- spin-dpo:  one SPIN iteration (sample one response per prompt, then one epoch of the SPIN loss on (real, generated)
             pairs with the frozen opponent as reference) vs the same iteration assembled from TRL: `model.generate`
             for the responses, then `DPOTrainer` for one epoch on the same pairs (sigmoid loss, same β, optimizer,
             learning rate and batch).
- grpo-grpo: GRPO on the built-in arithmetic prompts (K samples per prompt, T = 1, no KL term, one update per rollout,
             every group kept) vs TRL's `GRPOTrainer` with the same K, completion length, batch and steps.
- distillspec-gkd: DistillSpec on-policy (the draft samples each batch's responses at T = 1, then forward KL to the
             target over them) vs TRL's `GKDTrainer` with λ = 1 (always on-policy) and β = 0 (forward KL): the same
             draft and target checkpoints, batch, completion length, learning rate and steps.

Each run happens in a fresh process from the same saved checkpoint. Tokens/s counts the prompt and response tokens
of every sequence trained on, divided by the wall time of the training loop (the sampling included, as both
methods sample inside their loop); peak memory is the process's peak resident set on the CPU (imports included) or
`torch.cuda.max_memory_allocated` on a GPU. Prints a table and writes benchmarks/results/bench_trl.json.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

PAIRS = {"spin-dpo": ("posttrain SPIN", "TRL DPOTrainer"), "grpo-grpo": ("posttrain GRPO", "TRL GRPOTrainer"),
         "distillspec-gkd": ("posttrain DistillSpec", "TRL GKDTrainer")}


def prepare(directory: str, args) -> None:
    """The shared start: a seeded tiny Llama and its tokenizer, saved where both frameworks load it from, and a
    draft with a quarter of its width and one layer (the distillation pair's student; the Llama is its target)."""
    from posttrain.models import save, tiny_llama

    model, tokenizer = tiny_llama(hidden_size=args.hidden, num_layers=args.layers, num_heads=4,
                                  intermediate_size=2 * args.hidden, seed=0)
    save(model, tokenizer, directory)
    draft, tokenizer = tiny_llama(hidden_size=args.hidden // 4, num_layers=1, num_heads=2,
                                  intermediate_size=args.hidden // 2, seed=1)
    save(draft, tokenizer, draft_dir(directory))


def draft_dir(directory: str) -> str:
    return os.path.join(directory, "draft")


def arithmetic(args) -> tuple[list[dict], object]:
    """The training examples both frameworks see, and the processor that formats their prompts."""
    from datamodules.tasks import ArithmeticTask
    from posttrain.models import from_pretrained
    from posttrain.processors import TextProcessor

    _, tokenizer = from_pretrained(args.model_dir)
    task = ArithmeticTask(digits=[1, 2], train_size=args.prompts, val_size=0, test_ood_size=0, seed=args.seed)
    return task.examples("train"), TextProcessor(tokenizer, max_length=64)


def posttrain_overrides(args) -> list[str]:
    return ["model=hf", f"model.name_or_path={args.model_dir}", f"data.train_size={args.prompts}",
            f"data.task.train_size={args.prompts}", f"data.batch_size={args.batch}", "trainer.limit_val_batches=0",
            "trainer.num_sanity_val_steps=0", "callbacks=none", "logger=csv", "stages.main.save_dir=null",
            f"method.optimizer.lr={args.lr}", "+callbacks.timer._target_=lightning.pytorch.callbacks.Timer"]


def run_posttrain(method: str, overrides: list[str], out: str):
    """`python train.py method=<method> <overrides>` in-process; returns the module and its training seconds."""
    from hydra import compose, initialize_config_dir
    from lightning.pytorch.callbacks import Timer

    from posttrain.pipeline import register_resolvers, train

    register_resolvers()
    with initialize_config_dir(config_dir=os.path.join(ROOT, "conf"), version_base="1.3"):
        cfg = compose(config_name="train", overrides=[f"name={method}", f"method={method}", f"paths.log_dir={out}",
                                                      f"paths.output_dir={out}", *overrides])
    result = train(cfg)
    timer = next(c for c in result["trainer"].callbacks if isinstance(c, Timer))
    return result, timer.time_elapsed("train")


def spin_posttrain(args, out: str) -> dict:
    result, seconds = run_posttrain("spin", [
        *posttrain_overrides(args), "data=arithmetic_spin", "method.num_iterations=1", "method.epochs_per_iteration=1",
        f"method.beta={args.beta}", f"method.generation.max_new_tokens={args.new_tokens}"], out)
    module = result["module"]
    encoder = module.trainer.datamodule.processor
    examples = module.trainer.datamodule.splits["train"]
    tokens = sum(2 * len(encoder.prompt(e["prompt"])) + len(encoder.response(e["response"])) + len(generated)
                 for e, generated in zip(examples, module.synthetic))
    return {"seconds": seconds, "tokens": tokens, "sequences": 2 * len(examples),
            "steps": result["trainer"].global_step}


def spin_trl(args, out: str) -> dict:
    """One SPIN iteration from TRL's parts: sample the opponent's responses, then DPO on (real, generated)."""
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, TrainerCallback
    from trl import DPOConfig, DPOTrainer

    examples, encoder = arithmetic(args)
    model = AutoModelForCausalLM.from_pretrained(args.model_dir)
    reference = AutoModelForCausalLM.from_pretrained(args.model_dir)
    tokenizer = encoder.tokenizer
    prompts = [tokenizer.decode(encoder.prompt(e["prompt"]), skip_special_tokens=True) for e in examples]

    start = time.perf_counter()
    tokenizer.padding_side = "left"
    generated = []
    with torch.no_grad():
        for i in range(0, len(prompts), 256):
            batch = tokenizer(prompts[i : i + 256], return_tensors="pt", padding=True)
            out_ids = model.generate(**batch, do_sample=True, temperature=1.0, top_k=0,
                                     max_new_tokens=args.new_tokens, pad_token_id=tokenizer.pad_token_id)
            generated += tokenizer.batch_decode(out_ids[:, batch["input_ids"].shape[1]:], skip_special_tokens=True)
    sampling = time.perf_counter() - start

    data = Dataset.from_dict({"prompt": prompts, "chosen": [e["response"] for e in examples], "rejected": generated})
    config = DPOConfig(output_dir=out, per_device_train_batch_size=args.batch, num_train_epochs=1,
                       learning_rate=args.lr, optim="rmsprop", lr_scheduler_type="linear",
                       warmup_steps=max(1, round(0.1 * len(prompts) / args.batch)),  # method.scheduler: 10% warm-up
                       beta=args.beta, loss_type=["sigmoid"], max_length=64, report_to=[], save_strategy="no",
                       logging_steps=10, disable_tqdm=True, use_cpu=not torch.cuda.is_available(),
                       dataloader_num_workers=0, seed=args.seed)
    timer = LoopTimer.make(TrainerCallback)
    trainer = DPOTrainer(model=model, ref_model=reference, args=config, train_dataset=data,
                         processing_class=tokenizer, callbacks=[timer])
    trainer.train()
    train_data = trainer.train_dataset
    tokens = sum(2 * len(p) + len(c) + len(r) for p, c, r in zip(train_data["prompt_ids"], train_data["chosen_ids"],
                                                                   train_data["rejected_ids"])) \
        if "prompt_ids" in train_data.column_names else \
        sum(len(c) + len(r) for c, r in zip(train_data["chosen_input_ids"], train_data["rejected_input_ids"]))
    return {"seconds": sampling + timer.seconds, "tokens": tokens, "sequences": 2 * len(prompts),
            "steps": trainer.state.global_step}


def grpo_posttrain(args, out: str) -> dict:
    steps = args.prompts // args.batch
    result, seconds = run_posttrain("grpo", [
        *posttrain_overrides(args), "data=prompts", f"method.num_samples={args.group}", "method.kl_coef=0.0",
        "method.filter_groups=false", "method.max_generation_batches=1", "trainer.gradient_clip_val=null",
        f"trainer.max_steps={steps}",
        "trainer.max_epochs=1", f"method.generation.max_new_tokens={args.new_tokens}",
        f"method.prompts_per_minibatch={args.batch}"], out)
    return {"seconds": seconds, "tokens": result["module"].num_tokens, "sequences": steps * args.batch * args.group,
            "steps": result["trainer"].global_step}


def grpo_trl(args, out: str) -> dict:
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    from posttrain.rewards import ArithmeticVerifier

    examples, encoder = arithmetic(args)
    tokenizer = encoder.tokenizer
    prompts = [tokenizer.decode(encoder.prompt(e["prompt"]), skip_special_tokens=True) for e in examples]
    verifier = ArithmeticVerifier()
    counted = {"tokens": 0}

    def correct(prompts, completions, completion_ids, answer, **_):
        counted["tokens"] += sum(len(tokenizer(p).input_ids) + len(c) for p, c in zip(prompts, completion_ids))
        return [verifier({"answer": a}, c).reward for a, c in zip(answer, completions)]

    steps = args.prompts // args.batch
    config = GRPOConfig(output_dir=out, per_device_train_batch_size=args.batch * args.group, num_generations=args.group,
                        max_completion_length=args.new_tokens, temperature=1.0, top_k=0, beta=0.0, num_iterations=1,
                        loss_type="grpo", scale_rewards="group", learning_rate=args.lr, max_steps=steps,
                        report_to=[], save_strategy="no", logging_steps=10, disable_tqdm=True,
                        use_cpu=not torch.cuda.is_available(), dataloader_num_workers=0, seed=args.seed)
    timer = LoopTimer.make(TrainerCallback)
    trainer = GRPOTrainer(model=AutoModelForCausalLM.from_pretrained(args.model_dir), reward_funcs=correct,
                          args=config, train_dataset=Dataset.from_dict({"prompt": prompts,
                                                                        "answer": [e["answer"] for e in examples]}),
                          processing_class=tokenizer, callbacks=[timer])
    trainer.train()
    return {"seconds": timer.seconds, "tokens": counted["tokens"], "sequences": steps * args.batch * args.group,
            "steps": trainer.state.global_step}


def distillspec_posttrain(args, out: str) -> dict:
    from lightning_modules.distillspec import DistillSpecModule

    counted = {"tokens": 0}
    distill_loss = DistillSpecModule.distill_loss

    def counting(self, batch, *rest, **kwargs):  # the attended tokens of each batch trained on, as for GKD
        counted["tokens"] += int(batch["attention_mask"].sum())
        return distill_loss(self, batch, *rest, **kwargs)

    DistillSpecModule.distill_loss = counting
    steps = args.prompts // args.batch
    result, seconds = run_posttrain("distillspec", [
        *posttrain_overrides(args), f"model.name_or_path={draft_dir(args.model_dir)}", "data=arithmetic_spin",
        "+stage@stages.teacher=cached", "stages.teacher.cache=false", "+stages.teacher.trainer.max_epochs=0",
        "+model@stages.teacher.model=hf", f"stages.teacher.model.name_or_path={args.model_dir}",
        "+method@stages.teacher.method=sft", "+stages.main.inputs.teacher=teacher",
        "method.divergence=forward_kl", "method.fixed_fraction=0.0", "method.student_fraction=1.0",
        "method.evaluate_at_start=false", f"method.generation.max_new_tokens={args.new_tokens}",
        f"trainer.max_steps={steps}", "trainer.max_epochs=1"], out)
    return {"seconds": seconds, "tokens": counted["tokens"], "sequences": steps * args.batch,
            "steps": result["trainer"].global_step}


def distillspec_trl(args, out: str) -> dict:
    """TRL's GKD trainer, always on-policy (λ = 1) with forward KL (β = 0), on the prompts as chat messages whose
    template writes them exactly as posttrain's prompts."""
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, TrainerCallback
    from trl.experimental.gkd import GKDConfig, GKDTrainer

    examples, encoder = arithmetic(args)
    tokenizer = encoder.tokenizer
    tokenizer.chat_template = ("{% for m in messages %}{{ m['content'] }}{% endfor %}"
                               "{% if not add_generation_prompt %}{{ eos_token }}{% endif %}")
    prompts = [tokenizer.decode(encoder.prompt(e["prompt"]), skip_special_tokens=True) for e in examples]
    messages = [[{"role": "user", "content": p}, {"role": "assistant", "content": e["response"]}]
                for p, e in zip(prompts, examples)]
    steps = args.prompts // args.batch
    config = GKDConfig(output_dir=out, per_device_train_batch_size=args.batch, max_steps=steps, lmbda=1.0, beta=0.0,
                       temperature=1.0, max_new_tokens=args.new_tokens, seq_kd=False, learning_rate=args.lr,
                       max_length=64, report_to=[], save_strategy="no", logging_steps=10, disable_tqdm=True,
                       use_cpu=not torch.cuda.is_available(), dataloader_num_workers=0, seed=args.seed)
    timer = LoopTimer.make(TrainerCallback)
    counter = TokenCounter.make(TrainerCallback)
    trainer = GKDTrainer(model=AutoModelForCausalLM.from_pretrained(draft_dir(args.model_dir)),
                         teacher_model=AutoModelForCausalLM.from_pretrained(args.model_dir), args=config,
                         train_dataset=Dataset.from_dict({"messages": messages}), processing_class=tokenizer,
                         callbacks=[timer, counter])
    counter.watch(trainer)
    trainer.train()
    return {"seconds": timer.seconds, "tokens": counter.tokens, "sequences": steps * args.batch,
            "steps": trainer.state.global_step}


class TokenCounter:
    """Counts the attended tokens of every batch `GKDTrainer.compute_loss` trains on (after its on-policy sampling)."""

    @staticmethod
    def make(base):
        class Counter(base):
            tokens = 0

            def watch(self, trainer):
                compute_loss = trainer.compute_loss

                def counted(model, inputs, *args, **kwargs):
                    self.tokens += int(inputs["attention_mask"].sum())
                    return compute_loss(model, inputs, *args, **kwargs)

                trainer.compute_loss = counted

        return Counter()


class LoopTimer:
    """A `transformers` callback timing `Trainer.train`'s loop from its first to its last step."""

    @staticmethod
    def make(base):
        class Timer(base):
            seconds = 0.0

            def on_train_begin(self, *_, **__):
                self.start = time.perf_counter()

            def on_train_end(self, *_, **__):
                self.seconds = time.perf_counter() - self.start

        return Timer()


RUNS = {"posttrain SPIN": spin_posttrain, "TRL DPOTrainer": spin_trl,
        "posttrain GRPO": grpo_posttrain, "TRL GRPOTrainer": grpo_trl,
        "posttrain DistillSpec": distillspec_posttrain, "TRL GKDTrainer": distillspec_trl}


def child(args) -> None:
    """One run in this process; prints its figures as the last line of JSON."""
    import torch

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    with tempfile.TemporaryDirectory() as out:
        figures = RUNS[args.run](args, out)
    peak = torch.cuda.max_memory_allocated() if torch.cuda.is_available() else \
        resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB
    print(json.dumps({**figures, "peak_bytes": peak}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", default=",".join(PAIRS))
    parser.add_argument("--prompts", type=int, default=256)
    parser.add_argument("--batch", type=int, default=32, help="prompts per optimizer step")
    parser.add_argument("--group", type=int, default=4, help="GRPO samples per prompt")
    parser.add_argument("--new-tokens", type=int, default=8)
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--lr", type=float, default=1e-5)
    parser.add_argument("--beta", type=float, default=0.1)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--run", help=argparse.SUPPRESS)
    parser.add_argument("--model-dir", help=argparse.SUPPRESS)
    parser.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results", "bench_trl.json"))
    args = parser.parse_args()
    if args.run:
        return child(args)
    try:
        import trl
    except ImportError:
        sys.exit("bench_trl.py compares against TRL: pip install trl")

    rows = []
    with tempfile.TemporaryDirectory() as model_dir:
        prepare(model_dir, args)
        for pair in args.pairs.split(","):
            if pair not in PAIRS:
                sys.exit(f"--pairs: unknown pair {pair!r}; choose from {', '.join(PAIRS)}")
            for name in PAIRS[pair]:
                proc = subprocess.run([sys.executable, os.path.abspath(__file__), *sys.argv[1:], "--run", name,
                                       "--model-dir", model_dir], capture_output=True, text=True, cwd=ROOT)
                if proc.returncode != 0:
                    sys.exit(f"{name} failed:\n{proc.stderr[-4000:]}")
                figures = json.loads(proc.stdout.strip().splitlines()[-1])
                rows.append({"pair": pair, "run": name, **figures,
                             "tokens_per_s": figures["tokens"] / figures["seconds"] if figures["tokens"] else None,
                             "sequences_per_s": figures["sequences"] / figures["seconds"]})

    from posttrain.utils.machine import machine_info

    header = (f"{'pair':15}  {'run':21}  {'steps':>5}  {'seconds':>8}  {'tokens/s':>9}  {'seqs/s':>7}  "
              f"{'peak MiB':>9}")
    print(header)
    for r in rows:
        tps = f"{r['tokens_per_s']:9.0f}" if r["tokens_per_s"] else f"{'-':>9}"
        print(f"{r['pair']:15}  {r['run']:21}  {r['steps']:5d}  {r['seconds']:8.2f}  {tps}  "
              f"{r['sequences_per_s']:7.1f}  {r['peak_bytes'] / 2**20:9.0f}")
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as handle:
        json.dump({"settings": {k: v for k, v in vars(args).items() if k not in ("run", "model_dir", "out")},
                   "trl": trl.__version__, "machine": machine_info(), "rows": rows}, handle, indent=1)


if __name__ == "__main__":
    main()
