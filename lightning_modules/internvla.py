"""InternVLA-M1 spatially guided action post-training (docs/methods/internvla_m1.md).

Every step: the robot batch's prompts (instruction ⊕ spatial prompt) through the planner, the querying transformer
over its selected hidden states (their gradient decayed) and the view features, the DiT's ε-loss on R noisings of
each action chunk; with co-training, the grounding batch's next-token loss on the planner; one optimiser step on
L = L_act + w · L_vlm, the planner and the action modules at their own learning rates.
"""
from __future__ import annotations

import copy
import time

import torch

from lightning_modules.base import PostTrainModule
from lightning_modules.vla_steps import check_robot_data, close_evaluator, planner_parameter_groups
from posttrain.losses.internvla import action_diffusion_loss, cotraining_loss, projection_space_similarity
from posttrain.losses.sft import sft_loss
from posttrain.models.forward import label_logprobs
from posttrain.utils.config import check


class InternVLAModule(PostTrainModule):
    """Args:
        model: a `VLAModel` (model=vla_tiny).
        planner: a grounding-trained VLM (a stage-1 output) that replaces the model's planner; None keeps it.
        vlm_weight: w of L_vlm (0.1 in the paper); 0 without co-training (then the data must not co-train).
        vlm_lr, action_lr: learning rates of the planner and of every other module (the released 1e-5 and 1e-4).
        pss_every: every that many steps, the projection-space similarity of the last `pss_window` per-step
            gradients of L_vlm and L_act on the planner's last layer (`train/pss`; extra backward passes); 0: off.
        seed: seeds each step's noise, timesteps and dropout by the step (a resumed run draws the same).
    """

    def __init__(self, model, tokenizer, planner=None, vlm_weight: float = 0.1, vlm_lr: float = 1e-5,
                 action_lr: float = 1e-4, pss_every: int = 0, pss_window: int = 4, seed: int = 0, optimizer=None,
                 scheduler=None, evaluator=None):
        if planner is not None:  # the stage's input may be shared with other arms: train a copy
            hidden = model.planner.config.get_text_config().hidden_size
            check(planner.config.get_text_config().hidden_size == hidden, "method.planner",
                  f"the grounding VLM's hidden size differs from the VLA planner's ({hidden})")
            model.planner = copy.deepcopy(planner).to(next(model.parameters()).dtype)
        check(vlm_weight >= 0, "method.vlm_weight", f"must be >= 0, got {vlm_weight}")
        check(vlm_lr > 0 and action_lr > 0, "method.vlm_lr", f"learning rates must be > 0 ({vlm_lr}, {action_lr})")
        check(pss_every >= 0 and pss_window >= 2, "method.pss_every", "pss_every >= 0 and pss_window >= 2")
        super().__init__(model, tokenizer, optimizer, scheduler, evaluator)
        self.save_hyperparameters(ignore=["model", "tokenizer", "evaluator", "planner"])
        self.vlm_weight, self.vlm_lr, self.action_lr, self.seed = vlm_weight, vlm_lr, action_lr, seed
        self.pss_every, self.pss_window = pss_every, pss_window
        self.pss_grads: dict[str, list[torch.Tensor]] = {"vlm": [], "action": []}
        # training throughput since this process started fitting: robot frames, wall and CPU seconds of the steps
        self.throughput = {"frames": 0, "wall": 0.0, "cpu": 0.0}
        self.step_clock = (0.0, 0.0)

    # ---- setup ------------------------------------------------------------------------------------------------
    def setup(self, stage: str) -> None:
        super().setup(stage)
        data, model = self.trainer.datamodule, self.model
        data.setup(stage)
        check_robot_data(data, model)
        check(data.cotrain == (self.vlm_weight > 0), "method.vlm_weight",
              f"{self.vlm_weight} with data.cotrain={data.cotrain}: co-training needs both (or neither)")
        if stage == "fit":
            model.set_statistics(data.statistics)
        if hasattr(self.evaluator, "encode"):  # closed-loop episodes see observations as the training frames are
            self.evaluator.encode = data.encode_observations

    def teardown(self, stage: str) -> None:
        close_evaluator(self.evaluator)

    def parameter_groups(self) -> list[dict]:
        return planner_parameter_groups(self.model, self.trainable_parameters(), self.vlm_lr, self.action_lr)

    # ---- training -----------------------------------------------------------------------------------------------
    def on_train_batch_start(self, batch, batch_idx) -> None:
        torch.manual_seed(self.seed * 1_000_003 + self.global_step)  # dropout and noise: a function of the step
        self.step_clock = (time.perf_counter(), time.process_time())

    def on_train_batch_end(self, outputs, batch, batch_idx) -> None:
        wall, cpu = self.step_clock
        self.throughput["frames"] += int(batch["robot"]["actions"].shape[0])
        self.throughput["wall"] += time.perf_counter() - wall
        self.throughput["cpu"] += time.process_time() - cpu

    def progress_info(self) -> dict:
        """Training throughput so far, in every evaluation row: robot frames per wall second and per CPU second of
        this process (the load-independent measure on a shared machine); steps only, evaluations excluded."""
        seen = self.throughput
        if seen["frames"] == 0:
            return {}
        return {"perf/train_frames_per_s": seen["frames"] / max(seen["wall"], 1e-9),
                "perf/train_frames_per_cpu_s": seen["frames"] / max(seen["cpu"], 1e-9)}

    def action_loss(self, robot: dict) -> tuple[torch.Tensor, dict]:
        return action_diffusion_loss(*self.model.training_prediction(robot))

    def vlm_loss(self, grounding: dict) -> torch.Tensor:
        logps, mask = label_logprobs(self.model.planner, grounding["input_ids"], grounding["attention_mask"],
                                     grounding["labels"], image_inputs=grounding.get("image_inputs"))  # (B, T-1)
        return sft_loss(logps, mask)[0]

    def training_step(self, batch, batch_idx):
        action, metrics = self.action_loss(batch["robot"])
        vlm = self.vlm_loss(batch["grounding"]) if self.vlm_weight > 0 else None
        if self.pss_every > 0 and vlm is not None:
            self.record_pss_gradients(action, vlm)
        loss, parts = cotraining_loss(action, vlm, self.vlm_weight)
        self.log_metrics("train", {"loss": loss, **parts, **metrics}, batch_size=batch["robot"]["actions"].shape[0])
        return loss

    # ---- projection-space similarity ------------------------------------------------------------------------------
    def pss_parameters(self) -> list[torch.nn.Parameter]:
        """The shared VLM parameters PSS is measured on: the planner's last decoder layer."""
        layers = self.model.planner.base_model.language_model.layers
        return [p for p in layers[-1].parameters() if p.requires_grad]

    def record_pss_gradients(self, action: torch.Tensor, vlm: torch.Tensor) -> None:
        """Keeps this step's flattened ∇L_vlm and ∇L_act on `pss_parameters` (the decayed action gradient, as it
        reaches the VLM); every `pss_every` steps logs their PSS over the last `pss_window` steps."""
        params = self.pss_parameters()
        for name, loss in (("vlm", vlm), ("action", action)):
            grads = torch.autograd.grad(loss, params, retain_graph=True, allow_unused=True)
            flat = torch.cat([(g if g is not None else torch.zeros_like(p)).flatten().float()
                              for g, p in zip(grads, params)])
            self.pss_grads[name] = (self.pss_grads[name] + [flat.detach().cpu()])[-self.pss_window:]
        if (self.global_step + 1) % self.pss_every == 0 and len(self.pss_grads["vlm"]) >= 2:
            pss = projection_space_similarity(torch.stack(self.pss_grads["vlm"], 1),
                                              torch.stack(self.pss_grads["action"], 1))
            self.log("train/pss", float(pss))
