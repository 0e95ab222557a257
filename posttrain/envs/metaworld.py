"""Meta-World pick-and-place tasks (MuJoCo) with two rendered views, an instruction and image-space ground truth.

One env holds the configured Meta-World tasks (`pick-place-v3`: a puck to a marker, on the table or in the air;
`push-v3`: a puck pushed to a marker on the table; `shelf-place-v3`: a block onto a shelf). Every `reset(seed)`
draws, from the seed, a task and an object colour among the split's combinations, an instruction among the split's
paraphrases, and the object and goal positions (Meta-World's own randomisation, seeded). The object is recoloured
(its material dropped, `geom_rgba` set), so colour x task combinations can be held out.

Observations: `scene`, a free camera over the table (upright, objects large at 64-96 px), and `wrist`, the camera
on the gripper (`gripperPOV`), both (H, W, 3) uint8 from the same state, rendered with shadows and reflections off
(the shadow map dominates MuJoCo's render time at these sizes) by one `mujoco.Renderer` per view that lives as long
as the env; `state`, float32 (4,) = gripper xyz and finger opening (Meta-World's first four observation entries);
`instruction`, the text. Actions are Meta-World's: Box(-1, 1, (4,)) = end-effector Δxyz and grip effort.

`info["success"]` is the task's own criterion (e.g. object within 7 cm of the goal for pick-place); after a step,
`info` also carries the task's progress signals of `PROGRESS` (Meta-World's own: `near_object`, the gripper within
3 cm of the object; `grasp_success`, the object held and lifted; `obj_to_target`, its distance to the goal, metres);
`info["projections"][view]` gives, in pixels of that view (u right, v down, absolute, Qwen2.5-VL convention):
`object` and `goal` centres, `object_box` [x1, y1, x2, y2] (the projected corners of the object geom's bounding
box) and `gripper` (the tool centre point). `expert_action()` is Meta-World's scripted policy for the task.

Appearance and geometry (optional, for visual-transfer experiments; the defaults keep everything above unchanged):
`appearance=` a set name of `posttrain.envs.appearance.APPEARANCE_SETS` (one appearance drawn per reset, after the
layout, so a seed gives the same layout whatever the appearance) or a mapping of attributes (one fixed appearance)
sets object, table and background colours and textures and the lighting; the instruction then names the
appearance's object colour, `info["color"]` is that colour and `info["appearance"]` the attributes. `reset(options=
{"appearance": ...})` overrides it for one episode. `geometry=True` adds, per view, `<view>_depth` (H, W) float32
(metres from the camera) and `<view>_segmentation` (H, W) uint8 classes of SEGMENTATION_CLASSES (background, table,
robot, object, goal), rendered by the same renderers from the same scene update as the image.

Rendering runs headless through EGL: MUJOCO_GL defaults to `egl` here (set before mujoco is first imported);
`MUJOCO_GL=osmesa` (apt package libosmesa6) is the software fallback.
"""
from __future__ import annotations

import atexit
import os
import warnings
import weakref

os.environ.setdefault("MUJOCO_GL", "egl")

from dataclasses import dataclass  # noqa: E402

import gymnasium as gym  # noqa: E402
import mujoco  # noqa: E402
import numpy as np  # noqa: E402
from gymnasium import spaces  # noqa: E402
from metaworld import policies  # noqa: E402
from metaworld.env_dict import ALL_V3_ENVIRONMENTS  # noqa: E402
from metaworld.sawyer_xyz_env import SawyerXYZEnv  # noqa: E402

from posttrain.envs.appearance import Appearance, apply_appearance, check_set, sample_appearance  # noqa: E402
from posttrain.envs.appearance import to_appearance as parse_appearance  # noqa: E402
from posttrain.envs.cameras import Camera, box_corners, pixel_box  # noqa: E402
from posttrain.envs.splits import SPLITS, split_seeds  # noqa: E402, F401  (split_seeds: re-exported)
from posttrain.utils.config import ConfigError, check, check_choice, with_defaults  # noqa: E402

GL_HELP = ("MuJoCo could not create an OpenGL context for rendering (MUJOCO_GL={gl!r}). Headless machines need "
           "MUJOCO_GL=egl with the apt packages libegl1 libegl-mesa0 libgl1-mesa-dri, or MUJOCO_GL=osmesa with "
           "libosmesa6; glfw needs a display. Underlying error: {err}")


class RenderError(RuntimeError):
    """No OpenGL context: the message says which MUJOCO_GL values and apt packages make rendering work."""


@dataclass(frozen=True)
class TaskSpec:
    policy: type  # Meta-World's scripted expert
    noun: str  # what the object is called in instructions and QA
    train_phrases: tuple[str, ...]  # instruction templates ({color}, {noun}) of the training split
    held_out_phrases: tuple[str, ...]  # paraphrases seen only in the `test_paraphrase` split


TASKS = {
    "pick-place-v3": TaskSpec(
        policies.SawyerPickPlaceV3Policy, "puck",
        ("pick up the {color} {noun} and place it at the goal", "put the {color} {noun} on the target marker",
         "grasp the {color} {noun} and move it to the marker"),
        ("lift the {color} {noun} over to where the marker is", "carry the {color} {noun} to the goal spot")),
    "push-v3": TaskSpec(
        policies.SawyerPushV3Policy, "puck",
        ("push the {color} {noun} to the goal", "slide the {color} {noun} to the target marker",
         "shove the {color} {noun} along the table to the marker"),
        ("nudge the {color} {noun} over to where the marker is", "move the {color} {noun} to the goal by pushing")),
    "shelf-place-v3": TaskSpec(
        policies.SawyerShelfPlaceV3Policy, "block",
        ("place the {color} {noun} on the shelf", "put the {color} {noun} onto the shelf",
         "pick up the {color} {noun} and set it on the shelf"),
        ("lift the {color} {noun} up onto the shelf", "store the {color} {noun} on the shelf")),
}
COLORS = {"red": (0.85, 0.1, 0.1, 1.0), "yellow": (0.95, 0.85, 0.1, 1.0), "purple": (0.55, 0.15, 0.85, 1.0),
          "orange": (1.0, 0.5, 0.05, 1.0)}
VIEWS = ("scene", "wrist")
PROGRESS = ("near_object", "grasp_success", "obj_to_target")  # Meta-World's info keys passed on by `step`
SCENE_CAMERA = {"lookat": (0.0, 0.72, 0.08), "distance": 0.8, "azimuth": 135.0, "elevation": -45.0}
WRIST_CAMERA = "gripperPOV"
OBJECT_GEOM = "objGeom"  # every task here names its manipulated object so
SEGMENTATION_CLASSES = ("background", "table", "robot", "object", "goal")
# Top-level bodies -> class; any other (floor "world", "RetainingWall") is background. The shelf of shelf-place is
# the goal's receptacle, so it counts as goal; the fingertip sites belong to the robot, the goal marker site to goal.
ROOT_CLASSES = {"tablelink": "table", "base": "robot", "mocap": "robot", "obj": "object", "shelf": "goal"}
GOAL_SITE = "goal"
# Meta-World's bounds of its first four observation entries (hand xyz, finger opening), which it clips to.
STATE_SPACE = spaces.Box(np.append(SawyerXYZEnv._HAND_SPACE.low, -1.0).astype(np.float32),
                         np.append(SawyerXYZEnv._HAND_SPACE.high, 1.0).astype(np.float32), dtype=np.float32)


def instruction_text(template: str, task: str, color: str) -> str:
    return template.format(color=color, noun=TASKS[task].noun)


LIVE: weakref.WeakSet = weakref.WeakSet()  # simulations not yet closed


def close_all() -> None:
    """Renderers left open at exit are closed before the interpreter tears EGL down (else EGL prints errors):
    registered again after each renderer is made, since exit handlers run last-registered first and mujoco
    registers EGL's teardown when it makes its first GL context."""
    for sim in list(LIVE):
        sim.close()


class Simulation:
    """One Meta-World task's MuJoCo model and data, its expert and one renderer per view (created once)."""

    def __init__(self, task: str, image_size: int, scene_camera: dict, wrist_camera: str, where: str = "env"):
        env = ALL_V3_ENVIRONMENTS[task]()
        cameras = [env.model.camera(i).name for i in range(env.model.ncam)]
        check(wrist_camera in cameras, f"{where}.wrist_camera", f"no camera {wrist_camera!r} in {task}: {cameras}")
        # What Meta-World's benchmark constructors do for a multi-task (goal-observable) env with fresh layouts:
        # layouts drawn from the env's seeded generator, the goal in the observation (its experts read it there).
        env._freeze_rand_vec, env.seeded_rand_vec, env._set_task_called = False, True, True
        env._partially_observable = False
        del env.sawyer_observation_space  # a cached property computed for the partially observable default
        env.max_path_length = 10**9  # the wrapper truncates; Meta-World raises once past its own limit
        self.env, self.policy, self.size = env, TASKS[task].policy(), image_size
        self.object_geom = env.model.geom(OBJECT_GEOM).id
        self.cameras = {"scene": free_camera(scene_camera), "wrist": wrist_camera}
        self.renderers: dict[str, mujoco.Renderer] = {}
        self.obs: np.ndarray | None = None  # Meta-World's (39,) observation, what the expert reads
        self.appearance: Appearance | None = None  # what the model and renderers show, once one was applied
        self.classes: tuple[np.ndarray, np.ndarray] | None = None  # per geom, per site: class id (built once)
        LIVE.add(self)

    def renderer(self, view: str) -> mujoco.Renderer:
        if view not in self.renderers:
            try:
                renderer = mujoco.Renderer(self.env.model, self.size, self.size)
            except Exception as err:  # mujoco raises assorted types when GL is missing
                raise RenderError(GL_HELP.format(gl=os.environ.get("MUJOCO_GL"), err=err)) from err
            atexit.unregister(close_all)
            atexit.register(close_all)
            renderer.scene.flags[mujoco.mjtRndFlag.mjRND_SHADOW] = 0
            renderer.scene.flags[mujoco.mjtRndFlag.mjRND_REFLECTION] = 0
            self.renderers[view] = renderer
        return self.renderers[view]

    def render(self, view: str, segmentation: bool = False) -> tuple[np.ndarray, Camera]:
        """The view's image (H, W, 3) uint8 — or, with `segmentation`, its geom-id mask (H, W) int32, -1 where no
        geom — and the camera it was rendered with."""
        renderer = self.renderer(view)
        renderer.update_scene(self.env.data, camera=self.cameras[view])
        camera = Camera.from_scene(renderer.scene, self.size, self.size)
        if not segmentation:
            return renderer.render().copy(), camera
        renderer.enable_segmentation_rendering()
        try:
            ids, types = np.moveaxis(renderer.render(), -1, 0)  # (H, W) each: object id, object type
        finally:
            renderer.disable_segmentation_rendering()
        return np.where(types == mujoco.mjtObj.mjOBJ_GEOM, ids, -1).astype(np.int32), camera

    def set_appearance(self, appearance: Appearance) -> None:
        """Apply `appearance` to the model and the renderers made so far (later ones read it at creation);
        textures already showing are not re-uploaded."""
        apply_appearance(self.env.model, appearance, self.renderers.values(), self.env.data, previous=self.appearance)
        self.appearance = appearance

    def render_views(self, view: str, geometry: bool) -> tuple[dict[str, np.ndarray], Camera]:
        """The view's image and, with `geometry`, its depth (H, W) float32 metres and class map (H, W) uint8, all
        from one scene update of the view's renderer."""
        renderer = self.renderer(view)
        renderer.update_scene(self.env.data, camera=self.cameras[view])
        camera = Camera.from_scene(renderer.scene, self.size, self.size)
        out = {"rgb": renderer.render().copy()}
        if geometry:
            renderer.enable_depth_rendering()
            try:
                out["depth"] = renderer.render().astype(np.float32)
            finally:
                renderer.disable_depth_rendering()
            renderer.enable_segmentation_rendering()
            try:
                ids, types = np.moveaxis(renderer.render(), -1, 0)
            finally:
                renderer.disable_segmentation_rendering()
            out["segmentation"] = self.class_map(ids, types)
        return out, camera

    def class_map(self, ids: np.ndarray, types: np.ndarray) -> np.ndarray:
        """MuJoCo's (object id, object type) per pixel -> SEGMENTATION_CLASSES ids (H, W) uint8."""
        if self.classes is None:
            self.classes = segmentation_lookup(self.env.model)
        geom_class, site_class = self.classes
        out = np.zeros(ids.shape, dtype=np.uint8)  # background where nothing or anything else was drawn
        geoms, sites = types == mujoco.mjtObj.mjOBJ_GEOM, types == mujoco.mjtObj.mjOBJ_SITE
        out[geoms] = geom_class[ids[geoms]]
        out[sites] = site_class[ids[sites]]
        return out

    def get_state(self) -> dict[str, np.ndarray]:
        """What the images depend on: joint positions and velocities, mocap pose and the site positions Meta-World
        writes directly (the goal marker), copied."""
        data = self.env.data
        return {"qpos": data.qpos.copy(), "qvel": data.qvel.copy(), "mocap_pos": data.mocap_pos.copy(),
                "mocap_quat": data.mocap_quat.copy(), "site_xpos": data.site_xpos.copy()}

    def set_state(self, state: dict[str, np.ndarray]) -> None:
        """Put the simulation back in a `get_state` state (for re-rendering; the expert's cached observation is
        not updated)."""
        data = self.env.data
        data.qpos[:], data.qvel[:] = state["qpos"], state["qvel"]
        data.mocap_pos[:], data.mocap_quat[:] = state["mocap_pos"], state["mocap_quat"]
        mujoco.mj_forward(self.env.model, data)
        data.site_xpos[:] = state["site_xpos"]  # after forward, which recomputes them from the model

    def points(self) -> dict[str, np.ndarray]:
        """World positions of what is projected: object centre, object box corners, goal, tool centre point."""
        data, model, geom = self.env.data, self.env.model, self.object_geom
        aabb = model.geom_aabb[geom]  # centre (3,) and half sizes (3,) in the geom's frame
        rotation = data.geom_xmat[geom].reshape(3, 3)
        centre = data.geom_xpos[geom] + rotation @ aabb[:3]
        return {"object": centre, "object_corners": box_corners(centre, rotation, aabb[3:]),
                "goal": np.array(self.env._target_pos, dtype=np.float64), "gripper": np.array(self.env.tcp_center)}

    def close(self) -> None:
        for renderer in self.renderers.values():
            renderer.close()
        self.renderers.clear()
        self.env.close()
        LIVE.discard(self)


def segmentation_lookup(model: mujoco.MjModel) -> tuple[np.ndarray, np.ndarray]:
    """Class id of every geom and every site, from the top-level body it hangs from (ROOT_CLASSES)."""
    index = {name: i for i, name in enumerate(SEGMENTATION_CLASSES)}

    def root_class(body: int) -> int:
        while model.body_parentid[body] != 0:
            body = model.body_parentid[body]
        return index[ROOT_CLASSES.get(model.body(body).name, "background")]

    geoms = np.array([root_class(model.geom_bodyid[g]) for g in range(model.ngeom)], dtype=np.uint8)
    sites = np.array([index["goal"] if model.site(s).name == GOAL_SITE else root_class(model.site_bodyid[s])
                      for s in range(model.nsite)], dtype=np.uint8)
    return geoms, sites


def free_camera(settings: dict) -> mujoco.MjvCamera:
    camera = mujoco.MjvCamera()
    camera.type = mujoco.mjtCamera.mjCAMERA_FREE
    camera.lookat[:] = settings["lookat"]
    camera.distance, camera.azimuth, camera.elevation = (settings["distance"], settings["azimuth"],
                                                         settings["elevation"])
    return camera


def projections(points: dict[str, np.ndarray], camera: Camera) -> dict[str, list[float]]:
    """The simulator points in this view's pixels: centres as [u, v], the object box as [x1, y1, x2, y2]."""
    uv = {name: camera.project(points[name])[0].tolist() for name in ("object", "goal", "gripper")}
    uv["object_box"] = pixel_box(camera.project(points["object_corners"]), camera.width, camera.height)
    return uv


class MetaWorldEnv(gym.Env):
    """Args:
        tasks: Meta-World task names (keys of `TASKS`).
        colors: object colours (keys of `COLORS`).
        held_out: "task:color" combinations seen only in the `test_combos` split.
        split: train | val (held-out layouts) | test_combos | test_paraphrase (held-out instructions).
        image_size: H = W of both views.
        max_steps: truncation.
        terminate_on_success: end the episode at the first success (closed-loop evaluation's rule).
        scene_camera: the free camera's lookat, distance, azimuth, elevation.
        wrist_camera: a camera of the Meta-World model mounted on the gripper.
        render_mode: rgb_array (`render()` is the scene view), what `gymnasium.make` passes.
        appearance: None (the look above: object coloured by `colors`), a set name of APPEARANCE_SETS (drawn per
            reset) or a mapping of appearance attributes (fixed).
        geometry: also observe each view's depth and segmentation (`<view>_depth`, `<view>_segmentation`).
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": 80}  # 12.5 ms of simulated time per step

    def __init__(self, tasks=("pick-place-v3", "push-v3", "shelf-place-v3"), colors=tuple(COLORS),
                 held_out=("pick-place-v3:purple", "push-v3:orange", "shelf-place-v3:yellow"), split: str = "train",
                 image_size: int = 64, max_steps: int = 150, terminate_on_success: bool = True,
                 scene_camera: dict | None = None, wrist_camera: str = WRIST_CAMERA, render_mode: str = "rgb_array",
                 where: str = "env", appearance: str | dict | None = None, geometry: bool = False):
        self.tasks, self.colors = list(tasks), list(colors)
        check(bool(self.tasks), f"{where}.tasks", "must name at least one Meta-World task")
        for i, task in enumerate(self.tasks):
            check(task in TASKS, f"{where}.tasks[{i}]", f"unknown task {task!r}; available: {sorted(TASKS)}")
        for i, color in enumerate(self.colors):
            check(color in COLORS, f"{where}.colors[{i}]", f"unknown colour {color!r}; available: {sorted(COLORS)}")
        check_choice(split, SPLITS, f"{where}.split")
        check(16 <= image_size <= 480, f"{where}.image_size",
              f"must be in [16, 480] (MuJoCo's offscreen buffer), got {image_size}")
        check(render_mode in (None, "rgb_array"), f"{where}.render_mode", f"must be rgb_array, got {render_mode!r}")
        check(max_steps >= 1, f"{where}.max_steps", f"must be >= 1, got {max_steps}")
        self.held_out = [parse_combo(c, f"{where}.held_out[{i}]") for i, c in enumerate(held_out or ())]
        self.combos = self.split_combos(split)
        check(bool(self.combos), f"{where}.held_out",
              f"split {split!r} has no task:colour combination left (held out: {list(held_out or ())})")
        self.split, self.image_size, self.max_steps = split, image_size, max_steps
        self.terminate_on_success, self.where = terminate_on_success, where
        self.scene_camera = with_defaults(scene_camera, SCENE_CAMERA, f"{where}.scene_camera")
        self.wrist_camera = wrist_camera
        self.appearance_set, self.fixed_appearance = self.parse_appearance_option(appearance, f"{where}.appearance")
        self.appearance: Appearance | None = None  # this episode's, when appearance control is on
        self.geometry = bool(geometry)
        image = spaces.Box(0, 255, (image_size, image_size, 3), np.uint8)
        observation = {"scene": image, "wrist": image, "state": STATE_SPACE,
                       "instruction": spaces.Text(200, charset="abcdefghijklmnopqrstuvwxyz -'")}
        if self.geometry:
            for view in VIEWS:
                observation[f"{view}_depth"] = spaces.Box(0.0, np.inf, (image_size, image_size), np.float32)
                observation[f"{view}_segmentation"] = spaces.Box(0, len(SEGMENTATION_CLASSES) - 1,
                                                                 (image_size, image_size), np.uint8)
        self.observation_space = spaces.Dict(observation)
        self.action_space = spaces.Box(-1.0, 1.0, (4,), np.float32)
        self.render_mode = "rgb_array"
        self.sims: dict[str, Simulation] = {}
        self.task, self.color, self.instruction, self.steps = self.combos[0][0], self.combos[0][1], "", 0
        self.last_obs: dict | None = None

    @staticmethod
    def parse_appearance_option(value, where: str) -> tuple[str | None, Appearance | None]:
        """(set name, None) | (None, fixed appearance) | (None, None) for no appearance control."""
        if value is None or isinstance(value, str):
            if value is not None:
                check_set(value, where)
            return value, None
        return None, parse_appearance(value, where)

    def split_combos(self, split: str) -> list[tuple[str, str]]:
        every = [(t, c) for t in self.tasks for c in self.colors]
        if split == "test_combos":
            return [combo for combo in every if combo in self.held_out]
        return [combo for combo in every if combo not in self.held_out]

    def phrases(self, task: str) -> tuple[str, ...]:
        spec = TASKS[task]
        return spec.held_out_phrases if self.split == "test_paraphrase" else spec.train_phrases

    def sim(self, task: str | None = None) -> Simulation:
        task = task or self.task
        if task not in self.sims:
            self.sims[task] = Simulation(task, self.image_size, self.scene_camera, self.wrist_camera, self.where)
        return self.sims[task]

    # ---- gymnasium API ---------------------------------------------------------------------------------------------
    def reset(self, *, seed: int | None = None, options: dict | None = None):
        """`options` may fix `task` and/or `color` (else drawn among the split's combinations), and `appearance` (a
        set name, an Appearance or a mapping of attributes) for this episode."""
        super().reset(seed=seed)
        options = dict(options or {})
        combos = [c for c in self.combos if c[0] == options.get("task", c[0]) and c[1] == options.get("color", c[1])]
        check(bool(combos), "reset.options", f"{options} is no combination of split {self.split!r}: {self.combos}")
        self.task, self.color = combos[int(self.np_random.integers(len(combos)))]
        phrases = self.phrases(self.task)
        template = phrases[int(self.np_random.integers(len(phrases)))]
        sim = self.sim()
        sim.env.seed(int(self.np_random.integers(2**31 - 1)))  # the layout: Meta-World's seeded randomisation
        sim.obs, _ = sim.env.reset()
        for name, position in sim.env._target_site_config:  # as Meta-World's step does: reset leaves them stale
            sim.env._set_pos_site(name, position)
        self.appearance = self.episode_appearance(options.get("appearance"))
        if self.appearance is None:
            model = sim.env.model
            model.geom_matid[sim.object_geom] = -1  # a material's colour would override geom_rgba
            model.geom_rgba[sim.object_geom] = COLORS[self.color]
        else:  # drawn after the layout: a seed's layout does not depend on the appearance
            sim.set_appearance(self.appearance)
            self.color = self.appearance.object_color
        self.instruction = instruction_text(template, self.task, self.color)
        self.steps = 0
        obs, info = self.observe(success=False)
        return obs, info

    def episode_appearance(self, override) -> Appearance | None:
        set_name, fixed = self.appearance_set, self.fixed_appearance
        if override is not None:
            set_name, fixed = self.parse_appearance_option(override, "reset.options.appearance")
        if set_name is not None:
            return sample_appearance(set_name, self.np_random, f"{self.where}.appearance")
        return fixed

    def step(self, action):
        action = np.asarray(action, dtype=np.float32)
        assert action.shape == (4,), f"action must have shape (4,), got {action.shape}"
        sim = self.sim()
        sim.obs, reward, _, _, mw_info = sim.env.step(np.clip(action, -1.0, 1.0))
        self.steps += 1
        success = bool(mw_info["success"])
        terminated = self.terminate_on_success and success
        truncated = not terminated and self.steps >= self.max_steps
        obs, info = self.observe(success)
        info.update({k: float(mw_info[k]) for k in PROGRESS if k in mw_info})
        return obs, float(reward), terminated, truncated, info

    def render(self) -> np.ndarray:
        return self.sim().render("scene")[0]

    def close(self) -> None:
        for sim in self.sims.values():
            sim.close()
        self.sims.clear()

    # ---- what an agent and the data read ---------------------------------------------------------------------------
    def observe(self, success: bool) -> tuple[dict, dict]:
        sim = self.sim()
        points, obs, uv = sim.points(), {}, {}
        for view in VIEWS:
            rendered, camera = sim.render_views(view, self.geometry)
            obs[view] = rendered["rgb"]
            if self.geometry:
                obs[f"{view}_depth"], obs[f"{view}_segmentation"] = rendered["depth"], rendered["segmentation"]
            uv[view] = projections(points, camera)
        obs["state"] = sim.obs[:4].astype(np.float32)
        obs["instruction"] = self.instruction
        self.last_obs = obs
        info = {"success": success, "task": self.task, "color": self.color, "noun": TASKS[self.task].noun,
                "projections": uv, "step": self.steps}
        if self.appearance is not None:
            info["appearance"] = self.appearance.as_dict()
        return obs, info

    def expert_action(self, obs: dict | None = None) -> np.ndarray:
        """Meta-World's scripted policy at the current state (it reads the simulator's own observation, so `obs` is
        accepted for a uniform signature and not needed)."""
        sim = self.sim()
        with warnings.catch_warnings():  # the experts' gains exceed 1 by design; the action is clipped here
            warnings.simplefilter("ignore", UserWarning)
            action = sim.policy.get_action(sim.obs)
        return np.clip(action, -1.0, 1.0).astype(np.float32)

    def segmentation(self, view: str) -> np.ndarray:
        """Which geom each pixel of `view` shows (H, W) int32, -1 for none (a test and data-checking aid)."""
        return self.sim().render(view, segmentation=True)[0]

    def object_geom(self) -> int:
        return self.sim().object_geom

    def sim_state(self) -> dict[str, np.ndarray]:
        """The current task's simulator state (`Simulation.get_state`), enough to re-render this frame."""
        return self.sim().get_state()


def parse_combo(text: str, where: str) -> tuple[str, str]:
    """'task:colour' -> (task, colour); a combination of a task the env does not run simply never comes up."""
    task, sep, color = str(text).rpartition(":")
    if not sep or task not in TASKS or color not in COLORS:
        raise ConfigError(f"{where}: {text!r} must be 'task:colour' with a task of {sorted(TASKS)} and a colour of "
                          f"{sorted(COLORS)}")
    return task, color
