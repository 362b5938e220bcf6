"""Test-set scores, wall time and peak memory of Standard and CBM runs.

Each run is the real CLI in a child process (`sparsecbm train`, then
`sparsecbm evaluate --split test`), so its time and memory are its own.

    python -m benchmarks.experiments.foundation                       # every run below
    python -m benchmarks.experiments.foundation --only cebab-cbm      # one run
    python -m benchmarks.experiments.foundation --out benchmarks/results

Writes ``foundation.json`` (all numbers, with the commands) and
``foundation.md`` (a table) to --out.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from benchmarks.harness import machine, run_one, sole_writer, stored_runs, write_results
from sparsecbm.data import load_dataset
from sparsecbm.files import write_text
from sparsecbm.metrics import concept_ceiling

RUNS = {
    "cebab-standard": ["--data", "cebab", "--model", "standard"],
    "cebab-cbm": ["--data", "cebab", "--model", "cbm"],
    "cebab-cbm-10-epochs": ["--data", "cebab", "--model", "cbm", "--epochs", "10"],
    "imdbc-standard": ["--data", "imdbc", "--model", "standard", "--max-length", "512", "--epochs", "10", "--batch-size", "8"],
    "imdbc-cbm": ["--data", "imdbc", "--model", "cbm", "--max-length", "512", "--epochs", "10", "--batch-size", "8"],
    # The decoder on a subset: 300 training rows, 2 epochs (SmolLM2 is 6x MiniLM's size).
    "cebab-cbm-smollm2": ["--data", "cebab", "--model", "cbm", "--backbone", "smollm2-135m",
                          "--max-train", "300", "--max-eval", "300", "--epochs", "2", "--batch-size", "8"],
}


def ceilings() -> dict:
    out = {}
    for name in ("cebab", "imdbc"):
        data = load_dataset(name)
        out[name] = concept_ceiling(data["train"], data["test"], data.schema)
    return out


def markdown(results: dict, ceiling: dict, machine: str) -> str:
    lines = [
        f"Test split, accuracy / macro-F1 in %. Machine: {machine}.",
        "",
        "| run | concepts (mean) | task | best epoch | train wall | peak memory |",
        "|---|---|---|---|---|---|",
    ]
    for name, r in results.items():
        t = r["test"]
        concepts = t.get("concepts", {}).get("mean")
        c = f"{100 * concepts['accuracy']:.1f} / {100 * concepts['macro_f1']:.1f}" if concepts else "-"
        lines.append(
            f"| {name} | {c} | {100 * t['task']['accuracy']:.1f} / {100 * t['task']['macro_f1']:.1f} "
            f"| {r['best_epoch']} | {r['train_wall_seconds']:.0f} s | {r['train_peak_memory_mb']:.0f} MB |"
        )
    lines += ["", "Task from the gold concept labels (logistic regression; the bottleneck's honest ceiling):", ""]
    for name, s in ceiling.items():
        lines.append(f"- {name}: {100 * s['accuracy']:.1f} / {100 * s['macro_f1']:.1f}")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", nargs="*", choices=sorted(RUNS), help="runs to do (default: all)")
    parser.add_argument("--out", default="benchmarks/results", help="folder for foundation.json / .md")
    parser.add_argument("--runs-dir", default="runs/foundation", help="folder for the trained models")
    args = parser.parse_args()
    out = Path(args.out)
    json_path = out / "foundation.json"
    with sole_writer(json_path):
        results = stored_runs(json_path)
        for name in args.only or RUNS:
            results[name] = run_one(name, RUNS[name], Path(args.runs_dir))
            where = machine()
            ceiling = ceilings()
            write_results(json_path, {"machine": where, "runs": results, "gold_concept_ceiling": ceiling})
            write_text(out / "foundation.md", markdown(results, ceiling, where))
    print((out / "foundation.md").read_text())


if __name__ == "__main__":
    main()
