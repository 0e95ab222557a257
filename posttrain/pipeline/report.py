"""The results table: one row per evaluation of every stage, printed and written to results.json."""
from __future__ import annotations

import json
import os

from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig

from posttrain.utils.machine import machine_info


def history_rows(name: str, history: list[dict]) -> list[dict]:
    """A module's `eval_history` as rows: `<name> (start)`, `<name> epoch <e>` or `<name> iteration <i>`."""
    rows = []
    for entry in history:
        if entry.get("epoch", 0) < 0:
            label = f"{name} (start)"
        elif "iteration" in entry:
            label = f"{name} iteration {entry['iteration']}"
        else:
            label = f"{name} epoch {entry['epoch'] + 1}"
        rows.append({"run": label, **entry})
    return rows


def printed_rows(rows: list[dict]) -> list[dict]:
    """The rows the table prints: all but the per-epoch validations of a stage that is also scored once at the end
    (a warm-up validated every epoch to stop at its target or plateau); those stay in results.json."""
    scored = {r["run"] for r in rows}
    return [r for r in rows if not (" epoch " in r["run"] and r["run"].rsplit(" epoch ", 1)[0] in scored)]


@rank_zero_only
def report(cfg: DictConfig, rows: list[dict]) -> None:
    if not rows:
        return
    shown = printed_rows(rows)
    metrics = sorted({k for r in shown for k in r if "/" in k}, key=lambda k: (k.split("/")[1], k))
    header = ["run", "step", *metrics]
    table = [[str(r["run"]), str(r.get("step", "")), *(f"{r[m]:.4f}" if m in r else "" for m in metrics)]
             for r in shown]
    widths = [max(len(h), *(len(t[i]) for t in table)) for i, h in enumerate(header)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths))]
    lines += ["  ".join(c.ljust(w) for c, w in zip(t, widths)) for t in table]
    if len(shown) < len(rows):
        lines.append(f"({len(rows) - len(shown)} per-epoch validations of stages scored at the end: results.json)")
    print("\n" + "\n".join(lines) + "\n", flush=True)
    os.makedirs(cfg.paths.output_dir, exist_ok=True)
    with open(os.path.join(cfg.paths.output_dir, "results.json"), "w") as handle:
        json.dump({"name": cfg.name, "seed": cfg.seed, "machine": machine_info(), "rows": rows}, handle, indent=1)
