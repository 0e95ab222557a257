"""SePPO: semi-policy preference optimization of a diffusion model from winning images only (Zhang et al., 2024).

Per update k: draw a reference θ_ref from the checkpoint pool {θ_0, ..., θ_{k−1}} (`reference`: uniform, latest
or initial), sample x^r from it for the batch's prompts by DDIM with no gradient, decide per row with the
anchor-based adaptive flipper whether x^r is a loser (sign +1) or a likely winner (−1; `flip`: sign, indicator,
none) from how the current and the reference UNet denoise the winning image x^w, and step on L_SePPO. An update
is an optimizer step (Lightning's `global_step`: with gradient accumulation its micro-batches share one reference);
every `pool_every` updates the current UNet joins the pool. The pool (CPU copies of the weights that train: the
UNet's, or with `model.lora` its adapter's) is in the Lightning checkpoint, so a killed run resumes with the same
pool and reference draws. With LoRA the reference is the same UNet through a second, frozen adapter
(`DiffusionModel.frozen_reference`), not a copy of the UNet.

The arms of the paper's comparison are settings of this module: SPIN-Diffusion-like (reference: latest, flip:
none), DITTO-like (reference: initial, flip: none), SePPO without AAF (uniform, none), with the indicator.
"""
from __future__ import annotations

import torch

from lightning_modules.base import PostTrainModule
from lightning_modules.diffusion_sft import condition
from posttrain.losses.diffusion import FLIPS, aaf_sign, denoising_error, seppo_loss
from posttrain.utils.config import check, check_choice

REFERENCES = ("uniform", "latest", "initial")


class SePPOModule(PostTrainModule):
    """Args:
        beta: β of L_SePPO (> 0); the error differences are scaled by β T (ω = 1), T the model's diffusion steps.
        reference: how θ_ref is drawn from the pool: uniform (SePPO), latest (θ_{k−1}), initial (θ_0).
        flip: sign (AAF), indicator (1(e^w_ref > e^w_θ): the reference term dropped instead of flipped), none (+1).
        pool_every: updates between checkpoints added to the pool (the paper: 30).
        sample_steps: DDIM steps of the reference samples; None = the model's `sample_steps`.
        diagnostics_every: every this many updates (0: never) also sample the current model from the reference
            sample's noise and record whether the AAF decision matches the hidden reward's comparison
            r(x^r) > r(x^θ) (`reward` needed; diagnostics only, never in the loss).
        reward: the hidden image reward (`score(images) -> (B,)`), for the diagnostics.
        seed: seeds the reference draws and the samples' noise per update, so a resumed run draws the same.
    """

    def __init__(self, model, tokenizer, beta: float = 1.0, reference: str = "uniform", flip: str = "sign",
                 pool_every: int = 30, sample_steps: int | None = None, diagnostics_every: int = 0, reward=None,
                 seed: int = 0, optimizer=None, scheduler=None, evaluator=None):
        super().__init__(model, tokenizer, optimizer, scheduler, evaluator)
        check(beta > 0, "method.beta", f"must be > 0, got {beta}")
        check_choice(reference, REFERENCES, "method.reference")
        check_choice(flip, FLIPS, "method.flip")
        check(pool_every >= 1, "method.pool_every", f"must be >= 1, got {pool_every}")
        check(sample_steps is None or sample_steps > 0, "method.sample_steps", f"must be > 0 or null, got "
              f"{sample_steps}")
        check(diagnostics_every >= 0, "method.diagnostics_every", f"must be >= 0, got {diagnostics_every}")
        check(diagnostics_every == 0 or reward is not None, "method.reward", "the AAF diagnostics need a reward")
        self.save_hyperparameters(ignore=["model", "tokenizer", "evaluator", "reward"])
        self.beta, self.reference_rule, self.flip, self.pool_every = beta, reference, flip, pool_every
        self.sample_steps, self.diagnostics_every = sample_steps, diagnostics_every
        self.reward, self.seed = reward, seed
        self.add_frozen("reference", model.frozen_reference(), rebuildable=True)  # loaded from the pool per update
        self.pool: list[dict[str, torch.Tensor]] = []  # θ_0, θ_k, θ_2k, ... (trained weights on the CPU)
        self.loaded = -1  # the pool entry now in `self.reference`
        self.diagnostics = {"rows": 0.0, "flips": 0.0, "agreements": 0.0, "reference_better": 0.0}

    # ---- the checkpoint pool ----------------------------------------------------------------------------------
    def on_train_batch_start(self, batch, batch_idx) -> None:
        # θ_k joins before the first batch of update k (k = 0, pool_every, 2 pool_every, ...): the weights are then
        # exactly those after k optimizer steps, also in a run resumed from a checkpoint saved right after step k
        while len(self.pool) <= self.global_step // self.pool_every:
            self.pool.append(self.model.trained_weights())

    def draw_reference(self, update: int) -> int:
        """The pool index of update `update`'s reference, from a generator seeded by (seed, update)."""
        if self.reference_rule == "initial":
            return 0
        if self.reference_rule == "latest":
            return len(self.pool) - 1
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + update)
        return int(torch.randint(len(self.pool), (1,), generator=generator))

    def is_current(self, index: int, update: int) -> bool:
        """Whether pool entry `index` is the current weights at update `update` (the latest entry, appended just
        before it): a reference that is the model itself, whose AAF verdicts are ties and say nothing."""
        return index == len(self.pool) - 1 and update == (len(self.pool) - 1) * self.pool_every

    def load_reference(self, index: int) -> None:
        if index != self.loaded:
            self.model.load_reference(self.reference, self.pool[index])
            self.loaded = index

    # ---- training ---------------------------------------------------------------------------------------------
    def training_step(self, batch, batch_idx):
        model, cond, update = self.model, condition(batch), self.global_step
        index = self.draw_reference(update)
        self.load_reference(index)
        anchor = model.to_latents(batch["pixels"])  # (B, C, h, w) x^w
        rows = anchor.shape[0]
        seed = self.batch_seed(update, batch_idx)
        generator = self.seeded(seed, anchor.device)  # every draw of the batch: a resumed run repeats them
        reference_sample = model.sample(cond, generator=generator, steps=self.sample_steps,
                                        unet=self.reference)  # (B, 3, H, W) x^r, no gradient
        timesteps = torch.randint(0, model.num_timesteps, (rows,), generator=generator,
                                  device=anchor.device).repeat(2)  # (2B,) t shared by x^w and x^r
        noise = torch.randn((2 * rows, *anchor.shape[1:]), generator=generator,
                            device=anchor.device)  # (2B, C, h, w) ε^w then ε^r
        x0 = torch.cat([anchor, model.to_latents(reference_sample)])  # (2B, C, h, w) x^w then x^r
        x_t = model.add_noise(x0, noise, timesteps)
        target = model.target(x0, noise, timesteps)  # (2B, C, h, w) ε, v or x_0
        inputs = {k: v.repeat(2, *[1] * (v.dim() - 1)) for k, v in model.unet_inputs(cond).items()}
        errors = denoising_error(model.predict(x_t, timesteps, inputs), target)  # (2B,)
        with torch.no_grad():
            ref_errors = denoising_error(model.predict(x_t, timesteps, inputs, unet=self.reference), target)
        sign = aaf_sign(errors[:rows], ref_errors[:rows], self.flip)  # (B,)
        loss, metrics = seppo_loss(errors[:rows], ref_errors[:rows], errors[rows:], ref_errors[rows:], sign,
                                   beta=self.beta, num_timesteps=model.num_timesteps)
        # what the AAF concludes, whatever `flip` does with it: the reference fits the anchor at least as well
        reference_better = ~(ref_errors[:rows] - errors[:rows].detach() > 0)  # (B,)
        metrics.update({"reference_index": float(index), "pool_size": float(len(self.pool)),
                        "aaf_reference_better": reference_better.float().mean()})
        if self.diagnostics_every and update % self.diagnostics_every == 0 and not self.is_current(index, update):
            metrics["sign_agreement"] = self.agreement(cond, reference_sample, reference_better, seed)
        self.log_metrics("train", {"loss": loss, **metrics}, batch_size=rows)
        return loss

    def batch_seed(self, update: int, batch_idx: int) -> int:
        """The seed of a training batch's draws, one per (update, micro-batch of the update): the micro-batches of
        an accumulated update draw apart (7919 and 104729 are primes, so seeds repeat only after 104729 updates);
        micro-batch 0 keeps the seeds the results table of docs/methods/seppo.md was measured with. Each process
        adds its rank, so data-parallel processes do not draw the same x^r for rows of the same prompt."""
        accumulate = self.trainer.accumulate_grad_batches if self._trainer is not None else 1
        rank = self.global_rank if self._trainer is not None else 0
        return self.seed * 1_000_003 + 7919 * (update + 1) + 104_729 * (batch_idx % accumulate) + 15_485_863 * rank

    @staticmethod
    def seeded(seed: int, device) -> torch.Generator:
        return torch.Generator(device=device).manual_seed(seed)

    @torch.no_grad()
    def agreement(self, cond: dict, reference_sample: torch.Tensor, reference_better: torch.Tensor,
                  seed: int) -> float:
        """Fraction of rows where the AAF's verdict equals the hidden reward's r(x^r) > r(x^θ), x^θ sampled by the
        current model from the same noise as x^r (`seed`: the batch's); accumulated for the evaluation rows."""
        generator = self.seeded(seed, reference_sample.device)  # x^r's starting noise
        current = self.model.sample(cond, generator=generator, steps=self.sample_steps)  # (B, 3, H, W)
        truth = self.reward.score(reference_sample) > self.reward.score(current)  # (B,)
        agree = (truth == reference_better).float()
        stats = self.diagnostics
        stats["rows"] += len(agree)
        stats["agreements"] += float(agree.sum())
        stats["flips"] += float(reference_better.float().sum())
        stats["reference_better"] += float(truth.float().sum())
        return float(agree.mean())

    # ---- bookkeeping ------------------------------------------------------------------------------------------
    def progress_info(self) -> dict:
        """The AAF diagnostics so far: the verdict "reference at least as good" (a flip under flip=sign), its
        agreement with the hidden reward, and how often the reward prefers the reference sample."""
        stats = self.diagnostics
        if not stats["rows"]:
            return {}
        return {"aaf/flip_fraction": stats["flips"] / stats["rows"],
                "aaf/sign_agreement": stats["agreements"] / stats["rows"],
                "aaf/reference_wins": stats["reference_better"] / stats["rows"]}

    def extra_state(self) -> dict:
        return {"pool": self.pool, "diagnostics": dict(self.diagnostics)}

    def load_extra_state(self, state: dict) -> None:
        self.pool = list(state.get("pool", []))
        self.diagnostics.update(state.get("diagnostics", {}))
        self.loaded = -1
