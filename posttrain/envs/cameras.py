"""Pinhole projection of simulator points into a rendered image, from the camera MuJoCo itself rendered with.

After `mujoco.Renderer.update_scene`, `renderer.scene.camera[0]` is the OpenGL camera of that frame: its position,
forward and up axes (world frame) and its frustum at the near plane (`frustum_bottom/top/center` and
`frustum_width`, 0 meaning "half the height times the aspect ratio", as MuJoCo's renderer reads it). A world point
p maps to the near plane at (x, y)·near / z, with x, y, z its coordinates along right, up and forward, and from there
linearly to pixels: u grows to the right, v downwards, (0, 0) is the top-left corner of the top-left pixel — the
convention of absolute pixel boxes in Qwen2.5-VL.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Camera:
    position: np.ndarray  # (3,)
    forward: np.ndarray  # (3,) unit
    up: np.ndarray  # (3,) unit
    near: float
    bottom: float
    top: float
    center: float  # horizontal centre of the frustum at the near plane
    half_width: float  # horizontal half-extent at the near plane
    width: int  # image size in pixels
    height: int

    @classmethod
    def from_scene(cls, scene, width: int, height: int) -> Camera:
        """The camera the last `update_scene` set. The scene holds two eyes half MuJoCo's inter-pupillary distance
        to each side of the camera; a mono render draws from their midpoint."""
        gl = scene.camera[0]
        position = (np.array(gl.pos, dtype=np.float64) + np.array(scene.camera[1].pos, dtype=np.float64)) / 2
        bottom, top = float(gl.frustum_bottom), float(gl.frustum_top)
        half = float(gl.frustum_width) or 0.5 * (width / height) * (top - bottom)
        return cls(position, np.array(gl.forward, dtype=np.float64),
                   np.array(gl.up, dtype=np.float64), float(gl.frustum_near), bottom, top,
                   float(gl.frustum_center), half, width, height)

    def project(self, points: np.ndarray) -> np.ndarray:
        """World points (N, 3) -> pixel coordinates (N, 2) as (u, v); points behind the camera come out NaN."""
        points = np.atleast_2d(np.asarray(points, dtype=np.float64))
        right = np.cross(self.forward, self.up)
        offset = points - self.position  # (N, 3)
        x, y, z = offset @ right, offset @ self.up, offset @ self.forward  # (N,) each
        z = np.where(z > 1e-9, z, np.nan)
        xn, yn = x * self.near / z, y * self.near / z
        u = (xn - (self.center - self.half_width)) / (2 * self.half_width) * self.width
        v = (self.top - yn) / (self.top - self.bottom) * self.height
        return np.stack([u, v], axis=-1)  # (N, 2)


def box_corners(center: np.ndarray, rotation: np.ndarray, half_sizes: np.ndarray) -> np.ndarray:
    """The 8 corners (8, 3) of an oriented box: `center` (3,), `rotation` (3, 3) local -> world, `half_sizes` (3,)."""
    signs = np.array([[sx, sy, sz] for sx in (-1, 1) for sy in (-1, 1) for sz in (-1, 1)], dtype=np.float64)
    return center + (signs * half_sizes) @ rotation.T  # (8, 3)


def pixel_box(pixels: np.ndarray, width: int, height: int) -> list[float]:
    """The axis-aligned box [x1, y1, x2, y2] around projected points (N, 2), clipped to the image."""
    x1, y1 = np.nanmin(pixels, axis=0)
    x2, y2 = np.nanmax(pixels, axis=0)
    return [float(np.clip(x1, 0, width)), float(np.clip(y1, 0, height)), float(np.clip(x2, 0, width)),
            float(np.clip(y2, 0, height))]
