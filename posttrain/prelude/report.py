"""PRELUDE evaluation: per agent, the cumulative edit cost (mean ± sd over seeds), learned-preference accuracy
(exact match, Jaccard and nearest-source match of the preference used each round, overall and in the first and
last quarter of the rounds), tokens spent (agent prompt and output), and cumulative cost curves drawn as an image.
"""
from __future__ import annotations

import math
from collections import defaultdict

import numpy as np
from PIL import Image, ImageDraw

from posttrain.envs.render import font

COLOURS = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189), (140, 86, 75),
           (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207), (0, 0, 0), (255, 187, 120),
           (152, 223, 138), (174, 199, 232)]


def by_agent(rows: list[dict]) -> dict[str, dict[int, list[dict]]]:
    """{agent: {seed: rows in round order}}."""
    runs = defaultdict(lambda: defaultdict(list))
    for row in rows:
        runs[row["agent"]][row["seed"]].append(row)
    return {a: {s: sorted(r, key=lambda x: x["round"]) for s, r in seeds.items()} for a, seeds in runs.items()}


def mean_sd(values: list[float]) -> tuple[float, float]:
    values = np.asarray(values, dtype=float)
    return float(values.mean()), float(values.std(ddof=1)) if len(values) > 1 else 0.0


def scored(rows: list[dict], key: str) -> float | None:
    values = [r[key] for r in rows if r.get(key) is not None]
    return float(np.mean(values)) if values else None


def summary(rows: list[dict]) -> dict[str, dict]:
    """{agent: metrics} in the order the agents first appear."""
    table = {}
    for agent, seeds in by_agent(rows).items():
        runs = list(seeds.values())
        cost, cost_sd = mean_sd([sum(r["cost"] for r in run) for run in runs])
        every = [r for run in runs for r in run]
        quarter = max(1, len(runs[0]) // 4)
        table[agent] = {
            "cost": cost, "cost_sd": cost_sd, "seeds": len(runs), "rounds": len(runs[0]),
            "edited": float(np.mean([r["edited"] != r["output"] for r in every])),
            "exact": scored(every, "exact"), "jaccard": scored(every, "jaccard"),
            "class": scored(every, "class_match"),
            "jaccard_first": scored([r for run in runs for r in run[:quarter]], "jaccard"),
            "jaccard_last": scored([r for run in runs for r in run[-quarter:]], "jaccard"),
            "prompt_tokens": float(np.mean([sum(r["agent_prompt_tokens"] for r in run) for run in runs])),
            "completion_tokens": float(np.mean([sum(r["agent_completion_tokens"] for r in run) for run in runs])),
        }
    return table


def format_table(table: dict[str, dict]) -> str:
    def number(value, digits=2):
        return "–" if value is None else f"{value:.{digits}f}"

    header = ["agent", "cum. cost (mean ± sd)", "edited", "exact", "jaccard", "jacc. 1st/last ¼", "class",
              "agent tokens (in/out)"]
    lines = [[agent, f"{m['cost']:.0f} ± {m['cost_sd']:.0f}", number(m["edited"]), number(m["exact"]),
              number(m["jaccard"]), f"{number(m['jaccard_first'])} / {number(m['jaccard_last'])}",
              number(m["class"]), f"{m['prompt_tokens']:.0f} / {m['completion_tokens']:.0f}"]
             for agent, m in table.items()]
    widths = [max(len(h), *(len(line[i]) for line in lines)) for i, h in enumerate(header)]
    text = [" | ".join(c.ljust(w) for c, w in zip(row, widths)) for row in [header, *lines]]
    return "\n".join([text[0], "-+-".join("-" * w for w in widths), *text[1:]])


def curves(rows: list[dict]) -> dict[str, np.ndarray]:
    """{agent: (T,) cumulative cost after each round, mean over seeds}."""
    return {agent: np.mean([np.cumsum([r["cost"] for r in run]) for run in seeds.values()], axis=0)
            for agent, seeds in by_agent(rows).items()}


def plot(curves_: dict[str, np.ndarray], width: int = 720, height: int = 440) -> np.ndarray:
    """Cumulative cost against round, one line per agent, as an (H, W, 3) uint8 image."""
    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)
    left, right, top, bottom = 60, width - 170, 20, height - 40
    rounds = max(len(c) for c in curves_.values())
    top_value = max(float(c.max()) for c in curves_.values()) or 1.0
    top_value = 10 ** math.floor(math.log10(top_value)) * math.ceil(top_value / 10 ** math.floor(math.log10(top_value)))
    small = font(12)
    draw.rectangle([left, top, right, bottom], outline="black")
    for i in range(5):
        value = top_value * i / 4
        y = bottom - (bottom - top) * i / 4
        draw.line([left - 4, y, left, y], fill="black")
        draw.text((4, y - 7), f"{value:.0f}", fill="black", font=small)
    for i in range(5):
        x = left + (right - left) * i / 4
        draw.text((x - 10, bottom + 6), f"{round(rounds * i / 4)}", fill="black", font=small)
    draw.text(((left + right) // 2 - 20, height - 18), "round", fill="black", font=small)
    for n, (agent, curve) in enumerate(curves_.items()):
        colour = COLOURS[n % len(COLOURS)]
        points = [(left + (right - left) * (t + 1) / rounds, bottom - (bottom - top) * v / top_value)
                  for t, v in enumerate(curve)]
        draw.line(points, fill=colour, width=2)
        draw.line([right + 10, top + 16 * n + 7, right + 30, top + 16 * n + 7], fill=colour, width=3)
        draw.text((right + 35, top + 16 * n), agent, fill="black", font=small)
    return np.asarray(image)
