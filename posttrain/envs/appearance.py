"""Programmable appearance of the Meta-World scene: object colour and texture, table and background colour and
texture, and lighting, set through MuJoCo's model arrays without touching geometry or physics.

An `Appearance` is a tuple of attribute *names* (the vocabularies in `ATTRIBUTES`), so it doubles as the attribute
tokens a generator or a probe is conditioned on. `APPEARANCE_SETS` names which values each attribute may take:

    demo                 the single appearance every demonstration is recorded with (the paper's premise)
    in_domain            the values a random-appearance pool and in-domain evaluation draw from (demo's included)
    held_out_objects     unseen object colours and textures, everything else in-domain
    held_out_background  unseen table and background colours and textures, everything else in-domain
    held_out_lighting    unseen light directions and intensities, everything else in-domain
    held_out_all         every attribute unseen

Held-out values never appear in `in_domain`, so a policy trained on in-domain renders has not seen them.

How each attribute reaches the renderer (what MuJoCo reads on the next frame, ../shared/STACK.md):
- colours and patterns are written into texture images (`model.tex_data`) and re-uploaded to every renderer's
  OpenGL context with `mjr_uploadTexture` (the context holds its own copy); the materials' and geoms' rgba are set
  to white so the texture alone decides the colour. The material -> texture binding is copied into the context when
  it is made and cannot change afterwards, so each surface keeps the texture slot it was compiled with:
  table = `T_table`, floor = `T_floor`, walls = `T_wallmetal`, sky = the skybox, object = the task's wood texture
  (`T_block_wood`; in shelf-place-v3 `T_shelf_wood`, which the shelf also uses: the shelf is detached from it and
  given a plain colour of its own so that object textures never repaint it);
- lights: `light_dir` of the key light (light 0; data's `light_xdir` is refreshed by `mj_camlight`),
  `light_diffuse` of all lights and the headlight's diffuse and ambient, scaled by the intensity.
The robot and the goal marker keep their look (editing the gripper can hide the contact cues a policy needs).

Every value is written from the appearance alone (absolute, never relative to what was there), so applying an
appearance gives the same pixels whatever was applied before.
"""
from __future__ import annotations

import functools
import os

os.environ.setdefault("MUJOCO_GL", "egl")  # before mujoco is first imported: it picks its GL backend then

from dataclasses import asdict, dataclass, fields  # noqa: E402

import mujoco  # noqa: E402
import numpy as np  # noqa: E402

from posttrain.utils.config import ConfigError, check  # noqa: E402

COLOR_VALUES = {  # rgb in [0, 1]
    "red": (0.85, 0.10, 0.10), "yellow": (0.95, 0.85, 0.10), "purple": (0.55, 0.15, 0.85),
    "orange": (1.00, 0.50, 0.05), "green": (0.15, 0.70, 0.20), "blue": (0.10, 0.25, 0.90),
    "cyan": (0.10, 0.85, 0.85), "pink": (1.00, 0.45, 0.70), "white": (0.92, 0.92, 0.92), "black": (0.08, 0.08, 0.08),
    "tan": (0.78, 0.62, 0.42), "grey": (0.50, 0.50, 0.50), "slate": (0.25, 0.30, 0.40), "cream": (0.95, 0.90, 0.75),
    "brown": (0.45, 0.28, 0.15), "olive": (0.45, 0.50, 0.15), "navy": (0.08, 0.10, 0.35), "maroon": (0.45, 0.05, 0.10),
    "teal": (0.05, 0.45, 0.45), "lavender": (0.70, 0.60, 0.90),
}
TEXTURES = ("plain", "stripes", "checker", "dots", "noise", "wood")
LIGHT_DIRECTIONS = {  # the key light's direction (world frame, pointing from the light towards the scene)
    "overhead": (0.0, 0.0, -1.0), "left": (0.7, 0.0, -0.7), "right": (-0.7, 0.0, -0.7),
    "front": (0.0, 0.7, -0.7), "back": (0.0, -0.7, -0.7), "low_left": (0.95, 0.0, -0.3),
}
LIGHT_INTENSITIES = {"dim": 0.45, "normal": 1.0, "bright": 1.4, "harsh": 1.9}

ATTRIBUTES = {
    "object_color": tuple(COLOR_VALUES), "object_texture": TEXTURES,
    "table_color": tuple(COLOR_VALUES), "table_texture": TEXTURES,
    "background_color": tuple(COLOR_VALUES), "background_texture": TEXTURES,
    "light_direction": tuple(LIGHT_DIRECTIONS), "light_intensity": tuple(LIGHT_INTENSITIES),
}


@dataclass(frozen=True)
class Appearance:
    object_color: str = "red"
    object_texture: str = "plain"
    table_color: str = "tan"
    table_texture: str = "wood"
    background_color: str = "grey"
    background_texture: str = "plain"
    light_direction: str = "overhead"
    light_intensity: str = "normal"

    def __post_init__(self):
        for name, value in self.as_dict().items():
            check(value in ATTRIBUTES[name], f"appearance.{name}",
                  f"unknown value {value!r}; available: {list(ATTRIBUTES[name])}")

    def as_dict(self) -> dict[str, str]:
        return asdict(self)

    def tokens(self) -> tuple[str, ...]:
        """The attribute values in `ATTRIBUTES` order: what a generator or probe is conditioned on."""
        return tuple(getattr(self, name) for name in ATTRIBUTES)

    def describe(self) -> str:
        """A short text prompt for the appearance."""
        return (f"a {self.object_color} {self.object_texture} object on a {self.table_color} {self.table_texture} "
                f"table, {self.background_color} {self.background_texture} background, {self.light_intensity} light "
                f"from {self.light_direction.replace('_', ' ')}")


def attribute_index(name: str, value: str) -> int:
    """The value's index in its attribute vocabulary (a class label for attribute probes, a token id)."""
    return ATTRIBUTES[name].index(value)


DEMO = Appearance()
IN_DOMAIN = {
    "object_color": ("red", "yellow", "purple", "orange", "green", "blue"),
    "object_texture": ("plain", "stripes"),
    "table_color": ("tan", "grey", "cream", "brown", "slate"),
    "table_texture": ("wood", "plain", "stripes"),
    "background_color": ("grey", "white", "slate", "olive", "tan"),
    "background_texture": ("plain", "noise", "stripes"),
    "light_direction": ("overhead", "left", "right"),
    "light_intensity": ("normal", "bright"),
}
HELD_OUT = {
    "object_color": ("cyan", "pink", "white", "teal"),
    "object_texture": ("checker", "dots"),
    "table_color": ("navy", "maroon", "teal", "lavender"),
    "table_texture": ("checker", "dots", "noise"),
    "background_color": ("black", "navy", "maroon", "lavender"),
    "background_texture": ("checker", "dots", "wood"),
    "light_direction": ("front", "back", "low_left"),
    "light_intensity": ("dim", "harsh"),
}
OBJECT_KEYS = ("object_color", "object_texture")
BACKGROUND_KEYS = ("table_color", "table_texture", "background_color", "background_texture")
LIGHT_KEYS = ("light_direction", "light_intensity")


def held_out(keys: tuple[str, ...]) -> dict[str, tuple[str, ...]]:
    return {name: HELD_OUT[name] if name in keys else IN_DOMAIN[name] for name in ATTRIBUTES}


APPEARANCE_SETS: dict[str, dict[str, tuple[str, ...]]] = {
    "demo": {name: (value,) for name, value in DEMO.as_dict().items()},
    "in_domain": dict(IN_DOMAIN),
    "held_out_objects": held_out(OBJECT_KEYS),
    "held_out_background": held_out(BACKGROUND_KEYS),
    "held_out_lighting": held_out(LIGHT_KEYS),
    "held_out_all": held_out(tuple(ATTRIBUTES)),
}


def check_set(set_name: str, where: str = "env.appearance") -> dict[str, tuple[str, ...]]:
    if set_name not in APPEARANCE_SETS:
        raise ConfigError(f"{where}: unknown appearance set {set_name!r}; available: {list(APPEARANCE_SETS)}")
    return APPEARANCE_SETS[set_name]


def sample_appearance(set_name: str, rng: np.random.Generator, where: str = "env.appearance") -> Appearance:
    """One appearance drawn uniformly and independently per attribute from the set's allowed values."""
    allowed = check_set(set_name, where)
    return Appearance(**{name: allowed[name][int(rng.integers(len(allowed[name])))] for name in ATTRIBUTES})


def in_set(appearance: Appearance, set_name: str) -> bool:
    allowed = check_set(set_name)
    return all(getattr(appearance, f.name) in allowed[f.name] for f in fields(Appearance))


def to_appearance(value, where: str = "env.appearance") -> Appearance:
    """An `Appearance` from an Appearance, a mapping of attribute names (missing ones take the demo's) or None."""
    if value is None or isinstance(value, Appearance):
        return value
    try:
        options = dict(value)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"{where}: expected a set name or a mapping of {list(ATTRIBUTES)}, got {value!r}") from err
    for name in options:
        check(name in ATTRIBUTES, f"{where}.{name}", f"unknown attribute; known: {list(ATTRIBUTES)}")
    try:
        return Appearance(**options)
    except ConfigError as err:
        raise ConfigError(f"{where}.{str(err).removeprefix('appearance.')}") from err


# ---- textures ------------------------------------------------------------------------------------------------------
@functools.lru_cache(maxsize=64)
def texture_image(color: str, pattern: str, height: int, width: int) -> bytes:
    """A (height, width, 3) uint8 texture of the colour in the pattern, as bytes (cached: episodes repeat values).
    Patterns are the colour and a darker shade of it, so the colour name stays what the eye reads."""
    base = np.asarray(COLOR_VALUES[color], dtype=np.float32)
    dark = base * 0.45 + 0.05  # the pattern's second shade; black gets a dark grey
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    y, x = y / height, x / width  # in [0, 1): patterns scale with the texture, not with its pixel count
    if pattern == "plain":
        mask = np.zeros((height, width), dtype=bool)
    elif pattern == "stripes":
        mask = (x * 8) % 1.0 < 0.5
    elif pattern == "checker":
        mask = ((np.floor(x * 4) + np.floor(y * 4)) % 2) == 1
    elif pattern == "dots":
        mask = ((x * 4) % 1.0 - 0.5) ** 2 + ((y * 4) % 1.0 - 0.5) ** 2 < 0.09
    elif pattern == "noise":  # fixed coarse blocks: the same noise every time, like a printed pattern
        cells = np.random.default_rng(0).random((16, 16)) < 0.5
        mask = cells[(y * 16).astype(int), (x * 16).astype(int)]
    elif pattern == "wood":  # wavy grain lines
        mask = np.sin((y * 24 + 0.6 * np.sin(x * 6.28 * 2)) * 6.28) > 0.6
    else:
        raise ConfigError(f"appearance: unknown texture {pattern!r}; available: {list(TEXTURES)}")
    image = np.where(mask[..., None], dark, base)
    return (np.clip(image, 0.0, 1.0) * 255).round().astype(np.uint8).tobytes()


def fill_texture(model: mujoco.MjModel, texid: int, color: str, pattern: str) -> None:
    height, width, channels = model.tex_height[texid], model.tex_width[texid], model.tex_nchannel[texid]
    check(channels == 3, "appearance", f"texture {texid} has {channels} channels; only RGB textures are edited")
    start, size = model.tex_adr[texid], height * width * channels
    model.tex_data[start:start + size] = np.frombuffer(texture_image(color, pattern, int(height), int(width)),
                                                       dtype=np.uint8)


# ---- which texture, material and geoms each surface uses -----------------------------------------------------------
@dataclass(frozen=True)
class Slots:
    """Texture ids and the materials and geoms whose colour they decide, found once per model."""
    object_geom: int
    object_texture: int
    object_material: int
    table_texture: int
    floor_texture: int
    wall_texture: int
    sky_texture: int  # -1: none
    materials: tuple[int, ...]  # materials of the edited textures: their rgba becomes white
    detached: tuple[int, ...]  # other visible geoms that shared the object's material (shelf-place's shelf)


DETACHED_RGBA = (0.62, 0.48, 0.32, 1.0)  # a plain wood tone for geoms detached from the object's texture
EDITED_TEXTURES = ("T_table", "T_floor", "T_wallmetal")


def find_slots(model: mujoco.MjModel, object_geom: str = "objGeom") -> Slots:
    names = {model.texture(i).name: i for i in range(model.ntex)}
    for name in EDITED_TEXTURES:
        check(name in names, "appearance", f"the model has no texture {name!r}: {sorted(names)}")
    rgb = mujoco.mjtTextureRole.mjTEXROLE_RGB
    material_of = {int(model.mat_texid[m, rgb]): m for m in range(model.nmat) if model.mat_texid[m, rgb] >= 0}
    # the object's texture: the one 2-D/cube texture that is neither a scene surface nor the sky
    own = [i for i in range(model.ntex) if model.texture(i).name not in EDITED_TEXTURES
           and model.tex_type[i] != mujoco.mjtTexture.mjTEXTURE_SKYBOX and i in material_of]
    check(len(own) == 1, "appearance", f"expected one object texture besides {EDITED_TEXTURES}, found {own}")
    geom = model.geom(object_geom).id
    material = material_of[own[0]]
    visible = model.geom_group < 3  # groups 3+ are collision geoms, not drawn by default
    detached = tuple(int(g) for g in np.nonzero((model.geom_matid == material) & visible)[0] if g != geom)
    sky = [i for i in range(model.ntex) if model.tex_type[i] == mujoco.mjtTexture.mjTEXTURE_SKYBOX]
    textures = [names[n] for n in EDITED_TEXTURES] + own
    return Slots(geom, own[0], material, names["T_table"], names["T_floor"], names["T_wallmetal"],
                 sky[0] if sky else -1, tuple(material_of[t] for t in textures if t in material_of), detached)


def apply_appearance(model: mujoco.MjModel, appearance: Appearance, renderers=(), data: mujoco.MjData | None = None,
                     previous: Appearance | None = None, object_geom: str = "objGeom") -> None:
    """Write `appearance` into `model` and re-upload the edited textures to each `mujoco.Renderer` in `renderers`
    (a renderer made after this call reads the new textures when its context is created). With `data`, the lights'
    world directions are refreshed at once (`mj_camlight`); otherwise they follow at the next step or forward.
    `previous`: the appearance the model and these renderers already show; textures it shares are neither rewritten
    nor re-uploaded (an upload costs tens of ms per texture and renderer in software GL)."""
    slots = find_slots(model, object_geom)
    model.mat_rgba[list(slots.materials)] = 1.0  # textures carry the colour
    model.geom_matid[slots.object_geom] = slots.object_material
    model.geom_rgba[slots.object_geom] = 1.0
    for geom in slots.detached:
        model.geom_matid[geom] = -1
        model.geom_rgba[geom] = DETACHED_RGBA
    wanted = texture_values(slots, appearance)
    shown = texture_values(slots, previous) if previous is not None else {}
    changed = [texid for texid, value in wanted.items() if shown.get(texid) != value]
    for texid in changed:
        fill_texture(model, texid, *wanted[texid])
    apply_lighting(model, appearance)
    if data is not None:
        mujoco.mj_camlight(model, data)
    for renderer in renderers:
        upload_textures(model, renderer, changed)


def texture_values(slots: Slots, appearance: Appearance) -> dict[int, tuple[str, str]]:
    background = (appearance.background_color, appearance.background_texture)
    values = {slots.object_texture: (appearance.object_color, appearance.object_texture),
              slots.table_texture: (appearance.table_color, appearance.table_texture),
              slots.floor_texture: background, slots.wall_texture: background}
    if slots.sky_texture >= 0:
        values[slots.sky_texture] = (appearance.background_color, "plain")
    return values


KEY_DIFFUSE, FILL_DIFFUSE, HEADLIGHT = 0.55, 0.15, 0.3  # at intensity 1: about Meta-World's default brightness


def apply_lighting(model: mujoco.MjModel, appearance: Appearance) -> None:
    scale = LIGHT_INTENSITIES[appearance.light_intensity]
    direction = np.asarray(LIGHT_DIRECTIONS[appearance.light_direction], dtype=np.float64)
    model.light_dir[0] = direction / np.linalg.norm(direction)
    model.light_diffuse[:] = FILL_DIFFUSE * scale
    model.light_diffuse[0] = KEY_DIFFUSE * scale
    model.light_ambient[:] = 0.0
    model.vis.headlight.diffuse[:] = HEADLIGHT * scale
    model.vis.headlight.ambient[:] = HEADLIGHT * scale


def upload_textures(model: mujoco.MjModel, renderer: mujoco.Renderer, textures) -> None:
    """Copy the textures' new images into the renderer's OpenGL context (it keeps its own copy from creation).
    `mujoco.Renderer` exposes its context only as private attributes (mujoco 3.3)."""
    renderer._gl_context.make_current()
    for texid in textures:
        mujoco.mjr_uploadTexture(model, renderer._mjr_context, int(texid))
