"""Built-in visual question task: coloured shapes on a white image, questions with one-word answers, seeded.

An image is a `grid` x `grid` board of cells (default 4 x 4 cells of 16 px on a 64 px image); each object is a
circle, square or triangle in one of four colours, drawn without anti-aliasing inside its own cell with at least
a 2 px gap to its neighbours, so every colour is exact and no two objects touch. Question kinds:

    count      "How many red shapes?" / "How many circles?"          -> "0" ... str(objects[1])
    colour     "What colour is the square?" (one square in the image) -> "red" | "green" | "blue" | "yellow"
    left_of    "Is the red circle left of the blue square?"           -> "yes" | "no"
    leftmost   "Which shape is leftmost?"                             -> "circle" | "square" | "triangle"

"Left of" compares grid columns (the two objects never share one) and the leftmost object is alone in the leftmost
occupied column, so no answer depends on a few pixels of jitter. Kinds take turns and, within a kind, answers take
turns, so each split is balanced: a model that sees only the question (which names its kind) scores the per-kind
majority baseline below at best.

Splits: `train` and `val` have `objects` (default 1-4) objects per image and are drawn from disjoint seeds; no
`train` example repeats a `val` one (same objects and question). `test_ood` has more objects per image
(`ood_objects`, default 5-6): the same questions in more crowded images. Its count answers stay within 0..objects[1],
so every OOD answer is one that training has seen; only the crowd is new.

Majority-class baseline accuracy (seed 0, default sizes; checked by tests/datamodules/test_shapes.py):

    split      one answer for all   best answer per kind (count / colour / left_of / leftmost)
    train      0.125                0.321 (0.200 / 0.250 / 0.500 / 0.334)
    val        0.126                0.324 (0.200 / 0.256 / 0.504 / 0.336)
    test_ood   0.126                0.324 (0.200 / 0.256 / 0.504 / 0.336)

Drawing the default splits' objects and questions takes about 0.1 s at construction; rendering about 0.015 ms per
image (the 6,000 default images in 0.09 s, one CPU thread), done once per split when `examples(split)` first asks.
Examples are `{"image": PIL RGB image, "prompt", "response", "answer", "kind", "objects"}`, where `objects` is the
tuple of drawn `Shape`s (the render parameters, for per-kind analysis and tests).
"""
from __future__ import annotations

import random
from collections.abc import Sequence
from typing import NamedTuple

from PIL import Image, ImageDraw

from posttrain.rewards import ExactMatchVerifier
from posttrain.utils.config import check

COLOURS = {"red": (220, 30, 30), "green": (30, 160, 50), "blue": (30, 70, 220), "yellow": (235, 190, 20)}
SHAPES = ("circle", "square", "triangle")
KINDS = ("count", "colour", "left_of", "leftmost")
LOOKS = [(shape, colour) for shape in SHAPES for colour in COLOURS]
BACKGROUND = (255, 255, 255)
_VERIFIER = ExactMatchVerifier(normalize=True)


class Shape(NamedTuple):
    shape: str
    colour: str
    row: int
    col: int
    x: int  # left edge of the bounding box, px
    y: int  # top edge, px
    size: int  # side of the bounding box, px


def render(objects: Sequence[Shape], image_size: int) -> Image.Image:
    image = Image.new("RGB", (image_size, image_size), BACKGROUND)
    draw = ImageDraw.Draw(image)
    for o in objects:
        box = (o.x, o.y, o.x + o.size - 1, o.y + o.size - 1)
        fill = COLOURS[o.colour]
        if o.shape == "circle":
            draw.ellipse(box, fill=fill)
        elif o.shape == "square":
            draw.rectangle(box, fill=fill)
        else:
            draw.polygon([(o.x + (o.size - 1) / 2, o.y), (o.x, box[3]), (box[2], box[3])], fill=fill)
    return image


def answer_choices(kind: str, max_count: int) -> list[str]:
    return {"count": [str(k) for k in range(max_count + 1)], "colour": list(COLOURS), "left_of": ["yes", "no"],
            "leftmost": list(SHAPES)}[kind]


class ShapesTask:
    eval_splits: tuple[str, ...] = ("val", "test_ood")

    def __init__(
        self,
        image_size: int = 64,
        grid: int = 4,
        objects: Sequence[int] = (1, 4),
        ood_objects: Sequence[int] = (5, 6),
        kinds: Sequence[str] = KINDS,
        train_size: int = 5000,
        val_size: int = 500,
        test_ood_size: int = 500,
        seed: int = 0,
    ):
        cell = image_size // max(grid, 1)
        check(grid >= 2 and cell >= 8, "data.task.grid", f"need >= 2 cells of >= 8 px, got {grid} on {image_size} px")
        for key, span in (("objects", objects), ("ood_objects", ood_objects)):
            check(1 <= span[0] <= span[1] <= grid * (grid - 1) + 1, f"data.task.{key}",
                  f"must be [min, max] with 1 <= min <= max <= {grid * (grid - 1) + 1} (a leftmost object alone in "
                  f"its column), got {list(span)}")
        check(bool(kinds) and set(kinds) <= set(KINDS), "data.task.kinds", f"choose from {list(KINDS)}, got {kinds}")
        if {"left_of", "leftmost"} & set(kinds):
            check(min(objects[1], ood_objects[1]) >= 2, "data.task.objects",
                  "left_of and leftmost questions need images with at least two objects")
        for key, size in (("train_size", train_size), ("val_size", val_size), ("test_ood_size", test_ood_size)):
            check(size >= 0, f"data.task.{key}", f"must be >= 0, got {size}")
        self.image_size, self.grid, self.cell = image_size, grid, cell
        self.size = cell * 5 // 8  # small enough to shift by a few px inside its cell and keep clear of the edges
        self.kinds, self.max_count = tuple(kinds), objects[1]
        val = self._draw(random.Random(f"shapes:{seed}:val"), objects, val_size, exclude=set())
        self._scenes = {
            "val": val,
            "train": self._draw(random.Random(f"shapes:{seed}:train"), objects, train_size,
                                exclude={_key(s) for s in val}),
            "test_ood": self._draw(random.Random(f"shapes:{seed}:test_ood"), ood_objects, test_ood_size, set()),
        }
        self._examples: dict[str, list[dict]] = {}

    def examples(self, split: str) -> list[dict]:
        check(split in self._scenes, "split", f"unknown split {split!r}; this task has {sorted(self._scenes)}")
        if split not in self._examples:
            self._examples[split] = [{**s, "image": render(s["objects"], self.image_size)}
                                     for s in self._scenes[split]]
        return self._examples[split]

    @staticmethod
    def is_correct(example: dict, completion: str) -> bool:
        return _VERIFIER(example, completion).correct

    def _draw(self, rng: random.Random, span: Sequence[int], n: int, exclude: set) -> list[dict]:
        """n scenes; kinds take turns and each kind's answers take turns (exact balance), then shuffled."""
        seen, out = set(exclude), []
        for i in range(n):
            kind = self.kinds[i % len(self.kinds)]
            choices = answer_choices(kind, self.max_count)
            answer = choices[(i // len(self.kinds)) % len(choices)]
            for _ in range(1000):
                scene = getattr(self, f"_{kind}")(rng, span, answer)
                if _key(scene) not in seen:
                    break
            check(_key(scene) not in seen, "data.task", f"cannot draw {n} distinct examples; use a larger grid")
            seen.add(_key(scene))
            out.append(scene)
        rng.shuffle(out)
        return out

    # One method per kind: objects drawn so that the question's answer is `answer`.

    def _count(self, rng, span, answer):
        k = int(answer)
        by_colour = rng.random() < 0.5
        target = rng.choice(list(COLOURS) if by_colour else SHAPES)
        field = "colour" if by_colour else "shape"
        looks = [self._look(rng, **{field: target}) for _ in range(k)]
        n = rng.randint(max(span[0], k), max(span[1], k))
        looks += [self._look(rng, **{f"not_{field}": target}) for _ in range(n - k)]
        noun = f"{target} shapes" if by_colour else f"{target}s"
        return _scene("count", f"How many {noun}?", answer, self._place(rng, looks))

    def _colour(self, rng, span, answer):
        shape = rng.choice(SHAPES)
        looks = [(shape, answer)] + [self._look(rng, not_shape=shape) for _ in range(rng.randint(*span) - 1)]
        return _scene("colour", f"What colour is the {shape}?", answer, self._place(rng, looks))

    def _left_of(self, rng, span, answer):
        a, b = rng.sample(LOOKS, 2)
        n = rng.randint(max(span[0], 2), span[1])
        others = [rng.choice([look for look in LOOKS if look not in (a, b)]) for _ in range(n - 2)]
        cells = self._cells(rng, n)
        while cells[0][1] == cells[1][1]:  # a and b in one column: "left of" would be undefined
            cells = self._cells(rng, n)
        if (cells[0][1] < cells[1][1]) != (answer == "yes"):
            cells[0], cells[1] = cells[1], cells[0]
        prompt = f"Is the {a[1]} {a[0]} left of the {b[1]} {b[0]}?"
        return _scene("left_of", prompt, answer, self._at([a, b, *others], cells, rng))

    def _leftmost(self, rng, span, answer):
        n = rng.randint(max(span[0], 2), span[1])
        col = rng.choice([c for c in range(self.grid) if (self.grid - 1 - c) * self.grid >= n - 1])
        right = [(r, c) for r in range(self.grid) for c in range(col + 1, self.grid)]
        cells = [(rng.randrange(self.grid), col), *rng.sample(right, n - 1)]
        looks = [self._look(rng, shape=answer)] + [self._look(rng) for _ in range(n - 1)]
        return _scene("leftmost", "Which shape is leftmost?", answer, self._at(looks, cells, rng))

    # Helpers: a look is (shape, colour); cells are (row, col).

    @staticmethod
    def _look(rng, shape=None, colour=None, not_shape=None, not_colour=None) -> tuple[str, str]:
        shape = shape or rng.choice([s for s in SHAPES if s != not_shape])
        return shape, colour or rng.choice([c for c in COLOURS if c != not_colour])

    def _cells(self, rng, n: int) -> list[tuple[int, int]]:
        return rng.sample([(r, c) for r in range(self.grid) for c in range(self.grid)], n)

    def _place(self, rng, looks) -> tuple[Shape, ...]:
        return self._at(looks, self._cells(rng, len(looks)), rng)

    def _at(self, looks, cells, rng) -> tuple[Shape, ...]:
        top = self.cell - self.size - 1  # offsets 1..top keep >= 1 px between the object and its cell's edges
        return tuple(Shape(shape, colour, row, col, col * self.cell + rng.randint(1, top),
                           row * self.cell + rng.randint(1, top), self.size)
                     for (shape, colour), (row, col) in zip(looks, cells))


def _scene(kind: str, prompt: str, answer: str, objects: tuple[Shape, ...]) -> dict:
    return {"prompt": prompt, "response": answer, "answer": answer, "kind": kind, "objects": objects}


def _key(scene: dict) -> tuple:
    return scene["prompt"], tuple(sorted(scene["objects"]))
