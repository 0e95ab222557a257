"""Pieces every VLA training module shares (InternVLA-M1's and EMMA's): checking a robot datamodule against the
model, the planner / action-expert learning rates, handing the closed-loop evaluator's simulators back."""
from __future__ import annotations

from posttrain.utils.config import check


def check_robot_data(data, model) -> None:
    """Stops with the key to fix when the demonstrations do not fit the model (action/state size, chunk, views)."""
    data.check_model(model.action_dim, model.state_dim)
    check(data.chunk == model.chunk, "data.chunk", f"{data.chunk} differs from model.chunk={model.chunk}")
    check(len(data.views) == model.views, "data.views", f"{len(data.views)} views, the model has {model.views}")


def planner_parameter_groups(model, params: list, vlm_lr: float, action_lr: float) -> list[dict]:
    """The planner (VLM) at `vlm_lr`, everything else trainable (querying transformer, action expert) at
    `action_lr`."""
    planner = {id(p) for p in model.planner.parameters()}
    return [{"params": [p for p in params if id(p) in planner], "lr": vlm_lr},
            {"params": [p for p in params if id(p) not in planner], "lr": action_lr}]


def close_evaluator(evaluator) -> None:
    """Hands the evaluator's simulators back to the process's idle pool (`ClosedLoopEvaluator.close`), where the
    next arm's evaluator finds them; Meta-World closes what is left at exit, before the GL context goes."""
    close = getattr(evaluator, "close", None)
    if close is not None:
        close()
