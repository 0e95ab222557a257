"""Training of EMMA's generative transfer model (the DreamTransfer role, `posttrain.emma.generator`) on the render
pool (`datamodules.emma.RenderPoolData`): every step noises both views of each frame at a random t ~ U{0..T-1}
(`DDPMScheduler.add_noise`) and regresses the U-Net's prediction, conditioned on the frame's geometry and appearance
tokens, onto ε or v (`posttrain.losses.emma.transfer_loss`). No held-out evaluation here: the generator is judged by
the quality probes of the stage that applies it (lightning_modules/emma_data.py); its row in the results table is
the mean loss of the last 20 steps."""
from __future__ import annotations

import torch
from torch import nn

from lightning_modules.base import PostTrainModule
from posttrain.losses.emma import transfer_loss


class NoEvaluation(nn.Module):
    """The evaluator of a stage without held-out splits: nothing to set up, score or report."""

    def setup(self, splits, tokenizer, is_correct=None) -> None:
        pass

    def compute(self) -> dict:
        return {}


class TransferModule(PostTrainModule):
    """Args: model: a `TransferModel` (model=transfer_tiny); seed: each step's noise and timesteps are a function
    of (seed, step), so a resumed run draws the same."""

    def __init__(self, model, tokenizer=None, seed: int = 0, optimizer=None, scheduler=None, evaluator=None):
        super().__init__(model, tokenizer, optimizer, scheduler, evaluator or NoEvaluation())
        self.save_hyperparameters(ignore=["model", "tokenizer", "evaluator"])
        self.seed = seed
        self.recent: list[float] = []  # the last steps' losses: the stage's row in the results table

    def training_step(self, batch, batch_idx):
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.global_step)
        x0 = batch["pixels"]  # (B, 3V, H, W)
        noise = torch.randn(x0.shape, generator=generator).to(x0.device)
        timesteps = torch.randint(0, self.model.num_timesteps, (x0.shape[0],), generator=generator).to(x0.device)
        x_t = self.model.noise_scheduler.add_noise(x0, noise, timesteps)
        predicted = self.model(x_t, timesteps, batch["geometry"], batch["tokens"])
        loss, metrics = transfer_loss(predicted, self.model.target(x0, noise, timesteps))
        self.log_metrics("train", {"loss": loss, **metrics}, batch_size=x0.shape[0])
        self.recent = (self.recent + [float(loss.detach())])[-20:]
        return loss

    def extra_state(self) -> dict:
        return {"recent": list(self.recent)}  # a resumed run's row averages the same 20 steps

    def load_extra_state(self, state: dict) -> None:
        self.recent = [float(v) for v in state.get("recent", [])]

    def on_fit_end(self) -> None:
        super().on_fit_end()
        if self.recent:  # no held-out split: the row reports the denoising loss at the end of training
            self.eval_history.append({"epoch": self.current_epoch, "step": self.global_step,
                                      "train/transfer_mse_last20": sum(self.recent) / len(self.recent)})
