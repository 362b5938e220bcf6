"""The whole SparseCBM pipeline on CEBaB (dense CBM -> mask mining -> fine-tuning):
wall time, peak memory, test scores, subnetwork sparsity and overlap.

    python benchmarks/pipeline.py [--out benchmarks/results] [-- extra train flags]

Target (issue 3): under 45 minutes on a 2-core machine with the default backbone.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from foundation import run_one  # benchmarks/ is on sys.path when run as a script

from sparsecbm.classifier import load
from sparsecbm.files import write_json, write_text
from sparsecbm.masks import summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="benchmarks/results")
    parser.add_argument("--runs-dir", default="runs/pipeline")
    parser.add_argument("extra", nargs="*", help="extra flags for sparsecbm train (after --)")
    args = parser.parse_args()
    name = "cebab-sparsecbm"
    result = run_one(name, ["--data", "cebab", "--model", "sparsecbm", *args.extra], Path(args.runs_dir))
    model_dir = Path(args.runs_dir) / name
    saved = json.loads((model_dir / "config.json").read_text())
    log = [json.loads(line) for line in (model_dir / "train_log.jsonl").read_text().splitlines()]
    masks = summary(load(model_dir).model.masks)
    result.update({
        "pruning": saved["pruning"],
        "phase_seconds": _phase_seconds(log),
        "sparsity": {c: s["sparsity"] for c, s in masks["concepts"].items()},
        "jaccard": masks["jaccard"],
    })
    out = Path(args.out)
    write_json(out / "pipeline.json", result)
    t = result["test"]
    lines = [
        f"`{result['commands'][0]}` on 2 CPU cores:",
        "",
        f"- wall time {result['train_wall_seconds'] / 60:.1f} min (phases, cumulative s: {result['phase_seconds']}), "
        f"peak memory {result['train_peak_memory_mb']:.0f} MB",
        f"- test: concepts {100 * t['concepts']['mean']['accuracy']:.1f} / {100 * t['concepts']['mean']['macro_f1']:.1f}, "
        f"task {100 * t['task']['accuracy']:.1f} / {100 * t['task']['macro_f1']:.1f} (accuracy / macro-F1 %)",
        f"- sparsity per concept: {', '.join(f'{c} {100 * s:.1f}%' for c, s in result['sparsity'].items())}",
        f"- Jaccard overlap of kept weights: {', '.join(f'{p} {j:.3f}' for p, j in result['jaccard'].items())}",
    ]
    write_text(out / "pipeline.md", "\n".join(lines) + "\n")
    print("\n".join(lines))


def _phase_seconds(log: list[dict]) -> dict[str, float]:
    """Clock time at the end of each phase (dense, each pruning step, sparse fine-tuning)."""
    ends: dict[str, float] = {}
    for r in log:
        key = r["phase"] if r["phase"] != "prune" else f"prune {r['step']}"
        ends[key] = r["seconds"]
    return ends


if __name__ == "__main__":
    sys.exit(main())
