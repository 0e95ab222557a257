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


@rank_zero_only
def report(cfg: DictConfig, rows: list[dict]) -> None:
    if not rows:
        return
    metrics = sorted({k for r in rows for k in r if "/" in k}, key=lambda k: (k.split("/")[1], k))
    header = ["run", "step", *metrics]
    table = [[str(r["run"]), str(r.get("step", "")), *(f"{r[m]:.4f}" if m in r else "" for m in metrics)] for r in rows]
    widths = [max(len(h), *(len(t[i]) for t in table)) for i, h in enumerate(header)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths))]
    lines += ["  ".join(c.ljust(w) for c, w in zip(t, widths)) for t in table]
    print("\n" + "\n".join(lines) + "\n", flush=True)
    os.makedirs(cfg.paths.output_dir, exist_ok=True)
    with open(os.path.join(cfg.paths.output_dir, "results.json"), "w") as handle:
        json.dump({"name": cfg.name, "seed": cfg.seed, "machine": machine_info(), "rows": rows}, handle, indent=1)
