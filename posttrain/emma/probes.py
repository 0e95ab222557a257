"""Quality probes of generated frames and the failure filter (spec §2.1 "filter failures by depth re-estimation
consistency and by cross-view consistency checks"; §5 "depth consistency, cross-view consistency, attribute accuracy").

One small CNN per view, trained on the render pool (real renders), reads a view's RGB image and the proprioceptive
state and predicts (a) the view's depth map (normalised as the generator's conditioning), (b) the object's world
position and (c) the object's colour. On an edited frame:

    depth_error   = mean |deptĥ(generated view) − depth(source geometry)|          per view, averaged
    cross_view    = ‖ô_scene − ô_wrist‖ (metres)   the two views' object-position estimates must agree
    attribute_acc = 1[colour̂ = the requested colour], averaged over views

Reconstructed choices: the probes see the state because the wrist camera moves with the gripper (its image alone
does not place the object in the world); the filter's thresholds are relative to the probes' own error on held-out
real renders (`calibrate`): an episode is dropped when its mean depth error or cross-view distance exceeds
`tolerance` times the real value, or its attribute accuracy falls below `min_attribute_accuracy`.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from posttrain.emma.generator import normalise_depth
from posttrain.envs.appearance import ATTRIBUTES
from posttrain.envs.metaworld import VIEWS

COLOURS = len(ATTRIBUTES["object_color"])


class ViewProbe(nn.Module):
    """(N, 3, H, W) in [-1, 1] + (N, D) state -> depth (N, H, W), object xyz (N, 3), colour logits (N, C)."""

    def __init__(self, state_dim: int, width: int = 16):
        super().__init__()
        self.encoder = nn.Sequential(nn.Conv2d(3, width, 3, padding=1), nn.GELU(),
                                     nn.Conv2d(width, width, 3, padding=1), nn.GELU())
        self.depth = nn.Conv2d(width, 1, 1)
        self.heads = nn.Sequential(nn.Linear(width * 16 + state_dim, 64), nn.GELU(), nn.Linear(64, 3 + COLOURS))
        self.pool = nn.AdaptiveAvgPool2d(4)

    def forward(self, image: torch.Tensor, state: torch.Tensor):
        features = self.encoder(image)  # (N, W, H, W)
        out = self.heads(torch.cat([self.pool(features).flatten(1), state], 1))  # (N, 3 + C)
        return self.depth(features)[:, 0], out[:, :3], out[:, 3:]


def view_inputs(images: np.ndarray) -> torch.Tensor:
    return torch.as_tensor(images).permute(0, 3, 1, 2).float() / 127.5 - 1  # (N, 3, H, W)


def train_probes(pool: dict[str, np.ndarray], steps: int = 200, batch_size: int = 32, lr: float = 2e-3,
                 seed: int = 0) -> dict[str, ViewProbe]:
    """One probe per view fitted on the pool: depth L1 + object-position MSE + colour cross-entropy (with gradients
    on, also when called from a no-grad or inference-mode context such as `trainer.predict`)."""
    with torch.inference_mode(False), torch.enable_grad():
        return fit_probes(pool, steps, batch_size, lr, seed)


def fit_probes(pool: dict[str, np.ndarray], steps: int, batch_size: int, lr: float, seed: int) -> dict[str, ViewProbe]:
    generator = torch.Generator().manual_seed(seed)
    colour = torch.as_tensor(pool["tokens"][:, list(ATTRIBUTES).index("object_color")])
    state, target = torch.as_tensor(pool["state"]).float(), torch.as_tensor(pool["object"]).float()
    probes = {}
    for view in VIEWS:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            probe = ViewProbe(state.shape[1])
        images = view_inputs(pool[view])
        depth = normalise_depth(torch.as_tensor(pool[f"{view}_depth"]).float())
        optimizer = torch.optim.AdamW(probe.parameters(), lr=lr)
        for _ in range(steps):
            rows = torch.randint(len(images), (min(batch_size, len(images)),), generator=generator)
            d, xyz, logits = probe(images[rows], state[rows])
            loss = ((d - depth[rows]).abs().mean() + (xyz - target[rows]).pow(2).sum(-1).mean() * 10
                    + nn.functional.cross_entropy(logits, colour[rows]))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        probes[view] = probe.eval().requires_grad_(False)
    return probes


@torch.no_grad()
def quality(probes: dict[str, ViewProbe], frames: dict[str, np.ndarray], depth: dict[str, np.ndarray],
            state: np.ndarray, colour: int | np.ndarray) -> dict[str, float]:
    """The three probe measures of T frames of one edit: per view (T, H, W, 3) images and (T, H, W) source depth,
    (T, D) states, the requested object colour's index (or (T,) indices)."""
    state_t = torch.as_tensor(state).float()
    colours = torch.as_tensor(np.broadcast_to(np.asarray(colour), (len(state_t),)).copy())
    errors, positions, hits = [], [], []
    for view in VIEWS:
        d, xyz, logits = probes[view](view_inputs(frames[view]), state_t)
        errors.append((d - normalise_depth(torch.as_tensor(depth[view]).float())).abs().mean())
        positions.append(xyz)
        hits.append((logits.argmax(-1) == colours).float().mean())
    return {"depth_error": float(torch.stack(errors).mean()),
            "cross_view": float((positions[0] - positions[1]).norm(dim=-1).mean()),
            "attribute_accuracy": float(torch.stack(hits).mean())}


def calibrate(probes: dict[str, ViewProbe], pool: dict[str, np.ndarray], rows: np.ndarray) -> dict[str, float]:
    """The probes' measures on real renders (`rows` of the pool, ideally not trained on): the reference values."""
    colour = pool["tokens"][rows, list(ATTRIBUTES).index("object_color")]
    return quality(probes, {v: pool[v][rows] for v in VIEWS}, {v: pool[f"{v}_depth"][rows] for v in VIEWS},
                   pool["state"][rows], colour)


def calibration_rows(episode: np.ndarray, fraction: float = 0.2) -> np.ndarray:
    """The pool rows of its last `fraction` of episodes (at least one), kept out of the probes' training to
    calibrate the filter; a one-episode pool has none. (N,) episode index per row -> row indices."""
    episodes = int(episode.max()) + 1
    first = max(1, episodes - max(1, round(fraction * episodes)))
    return np.flatnonzero(episode >= first)


def passes(measures: dict[str, float], reference: dict[str, float], tolerance: float = 2.0,
           min_attribute_accuracy: float = 0.5) -> bool:
    """The failure filter: within `tolerance` times the real renders' depth error and cross-view distance, and at
    least `min_attribute_accuracy` of the frames showing the requested colour."""
    return (measures["depth_error"] <= tolerance * reference["depth_error"]
            and measures["cross_view"] <= tolerance * reference["cross_view"]
            and measures["attribute_accuracy"] >= min_attribute_accuracy)
