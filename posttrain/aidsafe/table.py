"""The AIDSAFE results of several runs (seeds) as markdown tables, mean ± sd per cell:

    python -m posttrain.aidsafe.table logs/aidsafe/runs/*/results.json
"""
from __future__ import annotations

import json
import sys
from statistics import mean, stdev

DATA = [("faithfulness B=0", "b0/faithfulness"), ("B=1", "b1/faithfulness"), ("B=2", "b2/faithfulness"),
        ("B=4", "b4/faithfulness"), ("unrefined B=4", "b4/faithfulness_raw"), ("redundancy", "data/redundancy"),
        ("deceptive", "data/deceptive_rate"), ("rounds", "data/rounds"),
        ("deliberation calls", "data/deliberation_calls")]
MODELS = [("held-out safe", "heldout/safe_rate"), ("jailbreak safe", "jailbreak/safe_rate"),
          ("benign over-refusal", "benign/over_refusal"), ("held-out acc", "heldout/accuracy"),
          ("jailbreak acc", "jailbreak/accuracy"), ("held-out CoT faith.", "heldout/faithfulness")]
PAIRS = [("faithfulness gap (chosen − rejected)", "pairs/faithfulness_gap"),
         ("violation gap (rejected − chosen)", "pairs/violation_gap"), ("pairs kept", "pairs/kept"),
         ("tied, dropped", "pairs/tied_dropped"), ("inverted, dropped", "pairs/inverted_dropped"),
         ("whisperer errors", "pairs/whisperer_errors")]


def cell(values: list[float]) -> str:
    if not values:
        return ""
    return f"{mean(values):.3f} ± {stdev(values):.3f}" if len(values) > 1 else f"{values[0]:.3f}"


def table(runs: list[list[dict]], columns: list[tuple[str, str]], keep) -> str:
    names = [row["run"] for row in runs[0] if keep(row)]
    lines = ["| run | " + " | ".join(c for c, _ in columns) + " |", "|---" * (len(columns) + 1) + "|"]
    for name in names:
        rows = [row for run in runs for row in run if row["run"] == name and keep(row)]
        lines.append(f"| {name} | " + " | ".join(cell([r[k] for r in rows if k in r]) for _, k in columns) + " |")
    return "\n".join(lines)


def summarise(paths: list[str]) -> str:
    runs = [json.load(open(p))["rows"] for p in paths]
    return "\n\n".join([
        table(runs, DATA, lambda r: "b0/faithfulness" in r),
        table(runs, MODELS, lambda r: "heldout/safe_rate" in r),
        table(runs, PAIRS, lambda r: "pairs/kept" in r)])


if __name__ == "__main__":
    print(f"{len(sys.argv) - 1} runs\n")
    print(summarise(sys.argv[1:]))
