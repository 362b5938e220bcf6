"""SparseCBM settings against its dense CBM (issue 12: concepts within 0.5 points, task >= it).

Each row runs the SparseCBM phase (mask mining, then the sparse fine-tuning
epochs) from the dense joint CBM of Table 2's seed (``runs/table2/cebab-cbm-sS``,
made by ``python benchmarks/table2.py --only table --data cebab``) with the
default recipe plus the row's flags, and compares its test scores with that
CBM's and with the default SparseCBM of the same seed (both from
benchmarks/results/table2.json). Every run is the real CLI (foundation.py),
saved to benchmarks/results/sparse_recipe.json as soon as it ends and skipped
when the script runs again (an interrupted run is resumed); each takes about
35 min on 2 CPU cores.

    python benchmarks/sparse_recipe.py [--only mining-gamma-5] [--seeds 0 1 2]
"""

from __future__ import annotations

import argparse
import functools
import json
import statistics
from pathlib import Path

from foundation import run_missing, run_one  # benchmarks/ is on sys.path when run as a script


SETTINGS = {
    "mining-gamma-5": ["--mining-gamma", "5"],  # L_k weighted like the paper's gamma: the concept term leads
}
TABLE2 = Path("benchmarks/results/table2.json")


def dense_dir(seed: int) -> Path:
    path = Path(f"runs/table2/cebab-cbm-s{seed}")
    if not (path / "config.json").exists():
        raise SystemExit(f"{path}: no dense CBM of seed {seed}; run `python benchmarks/table2.py --only table "
                         f"--data cebab --seeds {seed}` first")
    return path


def accuracies(record: dict) -> tuple[float, float]:
    t = record["test"]
    return 100 * t["concepts"]["mean"]["accuracy"], 100 * t["task"]["accuracy"]


def markdown(results: dict, table2: dict) -> str:
    lines = ["CEBaB test, MiniLM, accuracy %: each SparseCBM row against the dense CBM it starts from "
             "and the default SparseCBM of the same seed (Table 2). Gap = row minus dense CBM.", "",
             "| setting | seed | concepts | task | concept gap | task gap | default SparseCBM gaps | train min |",
             "|---|---|---|---|---|---|---|---|"]
    gaps: dict[str, list[tuple[float, float]]] = {}
    for key, r in results.items():
        name, seed = r["setting"], r["seed"]
        c, t = accuracies(r)
        dc, dt = accuracies(table2[f"cebab-cbm-s{seed}"])
        default = table2.get(f"cebab-sparsecbm-obs-s{seed}")
        if default:
            bc, bt = accuracies(default)
        base = f"{bc - dc:+.1f} / {bt - dt:+.1f}" if default else "-"
        gaps.setdefault(name, []).append((c - dc, t - dt))
        lines.append(f"| {name} | {seed} | {c:.1f} | {t:.1f} | {c - dc:+.1f} | {t - dt:+.1f} | {base} "
                     f"| {r['train_wall_seconds'] / 60:.1f} |")
    lines += ["", "| setting | seeds | mean concept gap | mean task gap |", "|---|---|---|---|"]
    for name, g in gaps.items():
        lines.append(f"| {name} | {len(g)} | {statistics.mean(x for x, _ in g):+.2f} "
                     f"| {statistics.mean(y for _, y in g):+.2f} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", nargs="*", choices=list(SETTINGS))
    parser.add_argument("--seeds", nargs="*", type=int, default=[0, 1, 2])
    parser.add_argument("--out", default="benchmarks/results")
    args = parser.parse_args()
    table2 = json.loads(TABLE2.read_text())["runs"]
    planned = {f"{name}-s{seed}": functools.partial(run_row, name, seed) for seed in args.seeds
               for name in args.only or SETTINGS}
    run_missing(Path(args.out), "sparse_recipe", planned, lambda results: markdown(results, table2))


def run_row(name: str, seed: int) -> dict:
    argv = ["--data", "cebab", "--model", "sparsecbm", "--seed", str(seed), "--init-from", str(dense_dir(seed)),
            *SETTINGS[name]]
    return {"setting": name, "seed": seed, **run_one(f"{name}-s{seed}", argv, Path("runs/sparse_recipe"))}


if __name__ == "__main__":
    main()
