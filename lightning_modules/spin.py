"""SPIN: self-play fine-tuning (Chen et al., ICML 2024).

Iteration t = epoch // epochs_per_iteration. At the start of each iteration the current model is frozen as the
opponent θ_t, which answers every training prompt once (the synthetic data of the iteration) and is the reference of
the loss for the whole iteration; the trainable model continues from θ_t. The iteration index, the opponent's
weights and the synthetic data are in the checkpoint, so a killed run resumes inside its iteration.
"""
from __future__ import annotations

import torch
import torch.distributed as dist
from lightning.pytorch.utilities import rank_zero_info

from lightning_modules.base import PostTrainModule, frozen_copy
from posttrain.generation import generate
from posttrain.losses.spin import LOSS_TYPES, spin_loss
from posttrain.models import sharding
from posttrain.models.forward import IGNORE_INDEX, sequence_logprobs
from posttrain.processors import left_pad, pack
from posttrain.utils.config import check, check_choice, with_defaults

GENERATION_DEFAULTS = {"temperature": 1.0, "top_k": 0, "top_p": 1.0, "max_new_tokens": 16, "batch_size": 256}


class SPINModule(PostTrainModule):
    """Args:
        beta: λ of the paper (`beta` in the official code), > 0.
        loss_type: "sigmoid" (the paper's logistic ℓ) or "hinge".
        num_iterations: T; the run is num_iterations * epochs_per_iteration epochs (trainer.max_epochs is set so).
        epochs_per_iteration: passes over the SFT prompts per iteration.
        generation: {temperature, top_k, top_p, max_new_tokens, batch_size} of the opponent's sampling.
        mix_previous_iteration: also train on the previous iteration's synthetic responses, as the official runs do
            from iteration 1 on (each prompt then contributes two pairs).
        seed: seeds the opponent's sampling, per iteration and process, so a resumed run draws the same data.
        reduction: "sum" of response-token log-probs (the paper and its code) or "mean" (an ablation; retune beta).
    """

    shardable = True  # one policy forward per batch on every process; the opponent (generating) is replicated

    def __init__(self, model, tokenizer, beta: float = 0.1, loss_type: str = "sigmoid", num_iterations: int = 2,
                 epochs_per_iteration: int = 1, generation: dict | None = None, mix_previous_iteration: bool = False,
                 seed: int = 0, reduction: str = "sum", optimizer=None, scheduler=None, evaluator=None):
        super().__init__(model, tokenizer, optimizer, scheduler, evaluator)
        check(beta > 0, "method.beta", f"must be > 0, got {beta}")
        check_choice(loss_type, LOSS_TYPES, "method.loss_type")
        check_choice(reduction, ("sum", "mean"), "method.reduction")
        check(num_iterations >= 1, "method.num_iterations", f"must be >= 1, got {num_iterations}")
        check(epochs_per_iteration >= 1, "method.epochs_per_iteration", f"must be >= 1, got {epochs_per_iteration}")
        self.generation_cfg = with_defaults(generation, GENERATION_DEFAULTS, "method.generation")
        check(self.generation_cfg["temperature"] >= 0, "method.generation.temperature", "must be >= 0")
        self.save_hyperparameters(ignore=["model", "tokenizer", "evaluator"])
        self.beta, self.loss_type, self.mix_previous_iteration = beta, loss_type, mix_previous_iteration
        self.reduction = reduction
        self.num_iterations, self.epochs_per_iteration, self.seed = num_iterations, epochs_per_iteration, seed
        self.opponent = self.add_frozen("opponent", frozen_copy(model))  # θ_t changes every iteration: checkpointed
        self.iteration = -1  # no iteration started yet
        self.synthetic: list[list[int]] = []  # train index -> the opponent's response tokens, this iteration
        self.previous_synthetic: list[list[int]] = []

    # ---- outer loop -----------------------------------------------------------------------------------------
    def setup(self, stage: str) -> None:
        """SPIN decides its own length: num_iterations * epochs_per_iteration epochs, whatever trainer.max_epochs
        says (set before the optimizer's schedule reads the run's length)."""
        super().setup(stage)
        epochs = self.num_iterations * self.epochs_per_iteration
        if stage == "fit" and self.trainer.max_epochs != epochs:
            rank_zero_info(f"SPIN runs method.num_iterations * method.epochs_per_iteration = {epochs} epochs "
                           f"(trainer.max_epochs={self.trainer.max_epochs} is not used)")
            self.trainer.fit_loop.max_epochs = epochs

    def on_train_epoch_start(self) -> None:
        iteration = self.current_epoch // self.epochs_per_iteration
        if iteration != self.iteration:
            self.start_iteration(iteration)

    def start_iteration(self, iteration: int) -> None:
        """θ_t := the current model; y'_i ~ p_θt(·|x_i) for every training prompt; fresh optimizer state."""
        self.opponent.load_state_dict(sharding.full_state_dict(self.model))  # FSDP: gathered from every process
        self.previous_synthetic = self.synthetic
        self.synthetic = self.opponent_responses(iteration)
        self.iteration = iteration
        for optimizer in self.trainer.optimizers:  # each iteration is a fresh run from θ_t in the paper's pipeline
            optimizer.state.clear()

    @torch.no_grad()
    def opponent_responses(self, iteration: int) -> list[list[int]]:
        """Samples one response per training prompt, the prompts sharded over processes and gathered back."""
        examples = self.trainer.datamodule.splits["train"]
        encoder = self.trainer.datamodule.processor
        rank, world = self.global_rank, self.trainer.world_size
        mine = examples[rank::world]
        generator = torch.Generator(device=self.device).manual_seed(
            (self.seed * 1_000_003 + 7919 * (iteration + 1) + 104729 * rank) % 2**63)
        cfg = self.generation_cfg
        responses: dict[int, list[int]] = {}
        for start in range(0, len(mine), cfg["batch_size"]):
            chunk = mine[start : start + cfg["batch_size"]]
            prompts = left_pad([encoder.prompt(e["prompt"]) for e in chunk], encoder.pad_id)
            out = generate(self.opponent, prompts["prompt_input_ids"].to(self.device),
                           prompts["prompt_attention_mask"].to(self.device),
                           max_new_tokens=cfg["max_new_tokens"], temperature=cfg["temperature"], top_k=cfg["top_k"],
                           top_p=cfg["top_p"], eos_token_id=encoder.eos_id, pad_token_id=encoder.pad_id,
                           generator=generator)
            responses.update({e["index"]: r for e, r in zip(chunk, out.token_lists())})
        if world > 1:
            gathered = [None] * world
            dist.all_gather_object(gathered, responses)
            responses = {k: v for part in gathered for k, v in part.items()}
        return [responses[i] for i in range(len(examples))]

    # ---- training ---------------------------------------------------------------------------------------------
    def training_step(self, batch, batch_idx):
        prompts, real = self.split_batch(batch)
        indices = batch["index"].tolist()
        generated = [self.synthetic[i] for i in indices]
        if self.mix_previous_iteration and self.previous_synthetic:
            prompts, real = prompts * 2, real * 2
            generated = generated + [self.previous_synthetic[i] for i in indices]
        pairs = len(prompts)
        encoder = self.trainer.datamodule.processor
        packed = pack(prompts + prompts, real + generated, encoder.pad_id, encoder.max_length)
        packed = {k: v.to(self.device) for k, v in packed.items()}
        policy = sequence_logprobs(self.model, packed)  # (2P,) real rows first, then generated
        with torch.no_grad():
            opponent = sequence_logprobs(self.opponent, packed)  # (2P,)
        if self.reduction == "mean":
            lengths = (packed["labels"][:, 1:] != IGNORE_INDEX).sum(-1).clamp(min=1)  # (2P,)
            policy, opponent = policy / lengths, opponent / lengths
        loss, metrics = spin_loss(policy[:pairs], policy[pairs:], opponent[:pairs], opponent[pairs:],
                                  beta=self.beta, loss_type=self.loss_type)
        identical = sum(g == r for g, r in zip(generated, real)) / pairs
        self.log_metrics("train", {"loss": loss, **metrics, "identical_pairs": identical,
                                   "logps/real": policy[:pairs].detach().mean(),
                                   "logps/generated": policy[pairs:].detach().mean(),
                                   "iteration": float(self.iteration)}, batch_size=pairs)
        return loss

    @staticmethod
    def split_batch(batch) -> tuple[list[list[int]], list[list[int]]]:
        """Prompt tokens and ground-truth response tokens of each row of an SFT batch."""
        prompts, responses = [], []
        for ids, mask, plen in zip(batch["input_ids"].tolist(), batch["attention_mask"].sum(-1).tolist(),
                                   batch["prompt_lengths"].tolist()):
            prompts.append(ids[:plen])
            responses.append(ids[plen:mask])
        return prompts, responses

    def schedule_period(self) -> int:
        return max(1, int(self.trainer.estimated_stepping_batches) // self.num_iterations)

    # ---- bookkeeping --------------------------------------------------------------------------------------------
    def progress_info(self) -> dict:
        return {"iteration": self.iteration + 1}  # iterations completed when this evaluation ran at its end

    def extra_state(self) -> dict:
        return {"iteration": self.iteration, "synthetic": self.synthetic, "previous_synthetic": self.previous_synthetic}

    def load_extra_state(self, state: dict) -> None:
        self.iteration = state.get("iteration", -1)
        self.synthetic = state.get("synthetic", [])
        self.previous_synthetic = state.get("previous_synthetic", [])
