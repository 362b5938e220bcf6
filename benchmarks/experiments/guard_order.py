"""A/B in one process: the guard's forward pass over 300 CEBaB train texts through
concept 0's subnetwork, in the guard's own order vs shortest first (what
``Guard`` does), 5 alternating rounds, median seconds and padding.

    python -m benchmarks.experiments.guard_order [--model runs/pipeline/cebab-sparsecbm]
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np

from benchmarks.harness import write_results
from sparsecbm import load, load_dataset
from sparsecbm.interventions.gradients import concept_k_outputs, tokenize


def padding(batches) -> float:
    """Padded tokens over real ones."""
    return sum(b["attention_mask"].numel() for _, b in batches) / sum(int(b["attention_mask"].sum()) for _, b in batches)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="runs/pipeline/cebab-sparsecbm")
    parser.add_argument("--out", default="benchmarks/results")
    args = parser.parse_args()
    clf = load(args.model)
    texts = load_dataset("cebab")["train"].head(300).texts
    order = np.argsort([len(t) for t in texts], kind="stable")
    variants = {"guard's order": tokenize(clf, texts), "shortest first": tokenize(clf, [texts[i] for i in order])}
    concept_k_outputs(clf, variants["guard's order"], 0)  # warm up
    seconds = {name: [] for name in variants}
    for _ in range(5):
        for name, batches in variants.items():
            start = time.perf_counter()
            concept_k_outputs(clf, batches, 0)
            seconds[name].append(time.perf_counter() - start)
    result = {"command": "python -m benchmarks.experiments.guard_order", "model": args.model, "texts": len(texts),
              **{name: {"median_s": statistics.median(seconds[name]), "padded_over_real": padding(variants[name])}
                 for name in variants}}
    write_results(Path(args.out) / "guard_order.json", result)
    for name in variants:
        print(f"{name}: median {result[name]['median_s']:.2f} s, padded/real tokens {result[name]['padded_over_real']:.2f}")


if __name__ == "__main__":
    main()
