"""The whole SparseCBM pipeline on CEBaB (dense CBM -> mask mining -> fine-tuning):
wall time, peak memory, test scores, subnetwork sparsity and overlap.

    python -m benchmarks.pipeline [--out benchmarks/results] [-- extra train flags]
    python -m benchmarks.pipeline --profile [-- extra train flags]   # where the time goes

Target (issue 3): under 45 minutes on a 2-core machine with the default backbone.

``--profile`` runs the same training in this process under cProfile and writes
``pipeline_profile.json`` / ``.md``: the cumulative time of the functions that
make up each phase (they nest: a training epoch contains its forward and
backward passes). cProfile's own overhead (every Python call is counted) makes
the profiled run slower than a plain one; compare shares, not seconds.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import pstats
import sys
import time
from pathlib import Path

from benchmarks.harness import run_one, write_results
from sparsecbm.classifier import load
from sparsecbm.files import write_text
from sparsecbm.masks import summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="benchmarks/results")
    parser.add_argument("--runs-dir", default="runs/pipeline")
    parser.add_argument("--profile", action="store_true", help="where the time goes (cProfile), see above")
    parser.add_argument("extra", nargs="*", help="extra flags for sparsecbm train (after --)")
    args = parser.parse_args()
    if args.profile:
        return profile(args.extra, Path(args.runs_dir) / "profile", Path(args.out))
    name = "cebab-sparsecbm"
    result = run_one(name, ["--data", "cebab", "--model", "sparsecbm", *args.extra], Path(args.runs_dir))
    model_dir = Path(args.runs_dir) / name
    saved = json.loads((model_dir / "config.json").read_text())
    log = [json.loads(line) for line in (model_dir / "train_log.jsonl").read_text().splitlines()]
    masks = summary(load(model_dir).model.masks)
    result.update({
        "pruning": saved["pruning"],
        "phase_seconds": phase_seconds(log),
        "sparsity": {c: s["sparsity"] for c, s in masks["concepts"].items()},
        "jaccard": masks["jaccard"],
    })
    out = Path(args.out)
    write_results(out / "pipeline.json", result)
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


# (what, file the function lives in, its name): cumulative time of every call.
PROFILED = [
    ("whole training run", "sparsecbm/training/pipeline.py", "train"),
    ("training epochs (dense, between pruning steps, sparse)", "sparsecbm/training/epochs.py", "train_epoch"),
    ("dev evaluation after each epoch (and a separate head's inputs)", "sparsecbm/training/epochs.py", "_forward"),
    ("pruning steps (Fisher gradients, inversion, scores, selection)", "sparsecbm/pruning/__init__.py", "prune_step"),
    ("Fisher gradients: forward+backward of L_k through subnetwork k", "sparsecbm/pruning/obs.py", "gradient_chunks"),
    ("Fisher: Gram accumulation", "sparsecbm/pruning/fisher.py", "add"),
    ("Fisher: batched Cholesky inversion", "sparsecbm/pruning/fisher.py", "inverse_diagonal"),
    ("OBS scores", "sparsecbm/pruning/fisher.py", "obs_scores"),
    ("mask selection (top-k per concept)", "sparsecbm/pruning/__init__.py", "select"),
    ("backbone forward (all callers)", "sparsecbm/model.py", "encode"),
    ("building masked weights M_k * theta", "sparsecbm/model.py", "masked_weights"),
    ("backward passes (all callers)", "torch/autograd/graph.py", "_engine_run_backward"),
    ("optimizer steps", "torch/optim/adam.py", "step"),
    ("tokenizing and batching", "sparsecbm/data/batching.py", "iter_batches"),
    ("checkpoints and resume points", "sparsecbm/training/run.py", "save_point"),
]


def profile(extra: list[str], model_dir: Path, out: Path) -> None:
    """Train under cProfile; the cumulative seconds of each PROFILED function."""
    from sparsecbm.cli import main as cli

    argv = ["-q", "train", "--data", "cebab", "--model", "sparsecbm", *extra, "--out", str(model_dir), "--overwrite"]
    profiler = cProfile.Profile()
    start = time.perf_counter()
    code = profiler.runcall(cli, argv)
    wall = time.perf_counter() - start
    if code:
        raise SystemExit(f"sparsecbm {' '.join(argv)} exited with {code}")
    stats = pstats.Stats(profiler).stats  # (file, line, name) -> (calls, ncalls, tottime, cumtime, callers)
    rows = []
    for what, file, name in PROFILED:
        hits = [(v[1], v[3]) for (f, _, n), v in stats.items() if n == name and f.replace("\\", "/").endswith(file)]
        rows.append({"phase": what, "function": f"{file}:{name}", "calls": sum(c for c, _ in hits),
                     "seconds": round(sum(t for _, t in hits), 2)})
    command = "python -m benchmarks.pipeline --profile" + (f" -- {' '.join(extra)}" if extra else "")
    result = {"command": command,
              "train_argv": argv, "profiled_wall_seconds": round(wall, 1), "phases": rows}
    write_results(out / "pipeline_profile.json", result)
    lines = [f"`{result['command']}` (cProfile; 2 CPU cores): {wall / 60:.1f} min profiled.", "",
             "| phase | function | calls | seconds | share of the run |", "|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['phase']} | `{r['function']}` | {r['calls']} | {r['seconds']:.1f} | {100 * r['seconds'] / wall:.0f} % |")
    write_text(out / "pipeline_profile.md", "\n".join(lines) + "\n")
    print("\n".join(lines))


def phase_seconds(log: list[dict]) -> dict[str, float]:
    """Clock time at the end of each phase (dense, each pruning step, sparse fine-tuning)."""
    ends: dict[str, float] = {}
    for r in log:
        key = r["phase"] if r["phase"] != "prune" else f"prune {r['step']}"
        ends[key] = r["seconds"]
    return ends


if __name__ == "__main__":
    sys.exit(main())
