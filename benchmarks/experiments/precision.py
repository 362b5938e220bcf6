"""Training speed in float32 and under bfloat16 autocast (``--precision bf16``, issue 13).

Times the training loop itself (``sparsecbm.training.train_epoch``: forward, joint
loss, backward, AdamW step) of the dense CBM and of the SparseCBM (K masked
backbone passes per batch) of a trained model, on the same seeded CEBaB training
batches in both precisions. Every round starts from the model's saved weights, the
precisions alternate over the rounds so that drift hits both alike, and the
median seconds per step is reported with the mean training loss of each round
(the same batches, so the losses should agree to bfloat16 rounding). Whether
bfloat16 keeps test accuracy is a question for whole runs (benchmarks/experiments/recipe.py
and sparse_recipe.py), not for this script.

    python -m benchmarks.experiments.precision [--model runs/sparse_recipe/mining-gamma-5-s0] [--steps 20] [--rounds 3]
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time
from dataclasses import replace
from pathlib import Path

import torch

from benchmarks.harness import machine, write_results
from sparsecbm import load, load_dataset
from sparsecbm.files import write_text
from sparsecbm.training import PRECISIONS, Run, TrainConfig, make_optimizer, train_epoch


def timed_steps(clf, state, split, config: TrainConfig, steps: int) -> tuple[float, float]:
    """Seconds per step and mean training loss of ``steps`` batches from ``state``."""
    clf.model.load_state_dict(state)
    torch.manual_seed(0)  # the same dropout in both precisions
    run = Run(config, None, False, {})
    optimizer, scheduler = make_optimizer(clf.model, config, steps, warmup=0.0)
    start = time.perf_counter()
    losses = train_epoch(clf, split, run, optimizer, scheduler, "timing", max_steps=steps)
    return (time.perf_counter() - start) / steps, losses["train_loss"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="runs/sparse_recipe/mining-gamma-5-s0", help="a SparseCBM folder")
    parser.add_argument("--dense", default="runs/table2/cebab-cbm-s0",
                        help="the dense CBM (default: the one the default --model started from)")
    parser.add_argument("--steps", type=int, default=20, help="training steps per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", default="benchmarks/results")
    args = parser.parse_args()
    split = load_dataset("cebab")["train"]
    result = {"command": "python -m benchmarks.experiments.precision", "model": args.model, "dense": args.dense,
              "machine": machine(),
              "steps": args.steps, "rounds": args.rounds, "models": {}}
    for name, folder in (("dense CBM", Path(args.dense)), ("SparseCBM", Path(args.model))):
        clf = load(folder)
        state = copy.deepcopy(clf.model.state_dict())
        config = TrainConfig(model=clf.config.kind, batch_size=16, max_length=clf.max_length, seed=0)
        timed_steps(clf, state, split, config, 2)  # warm up both paths
        timed_steps(clf, state, split, replace(config, precision="bf16"), 2)
        rounds = {p: [] for p in PRECISIONS}
        for _ in range(args.rounds):
            for precision in PRECISIONS:
                rounds[precision].append(timed_steps(clf, state, split, replace(config, precision=precision), args.steps))
        row = {p: {"seconds_per_step": statistics.median(s for s, _ in r), "losses": [loss for _, loss in r]}
               for p, r in rounds.items()}
        row["speedup"] = row["fp32"]["seconds_per_step"] / row["bf16"]["seconds_per_step"]
        result["models"][name] = row
        print(name, row, flush=True)
    write_results(Path(args.out) / "precision.json", result)
    lines = [f"Training steps (batch 16, CEBaB train, the same seeded batches in both precisions), median of "
             f"{args.rounds} rounds of {args.steps} steps, {result['machine']}, model `{args.model}`:", "",
             "| model | fp32 s/step | bf16 s/step | speed-up | mean loss fp32 / bf16 (first round) |",
             "|---|---|---|---|---|"]
    for name, row in result["models"].items():
        lines.append(f"| {name} | {row['fp32']['seconds_per_step']:.3f} | {row['bf16']['seconds_per_step']:.3f} "
                     f"| {row['speedup']:.2f}x | {row['fp32']['losses'][0]:.4f} / {row['bf16']['losses'][0]:.4f} |")
    text = "\n".join(lines) + "\n"
    write_text(Path(args.out) / "precision.md", text)
    print(text)


if __name__ == "__main__":
    main()
