"""Batched inference throughput: texts per second of the dense CBM and the SparseCBM
pruned from it, over the whole CEBaB test split at batch 32 (issue 13).

`Classifier.forward_texts` is what `predict` and `evaluate` run: longest texts
first, padded per batch. A SparseCBM runs its K subnetworks one after another,
so K x the dense time is the floor for unstructured masks on dense kernels; the
target is a throughput of at least 1 / (1.05 K) of the dense CBM's. The two
models alternate over the rounds so that drift hits both alike.

    python -m benchmarks.throughput [--model runs/pipeline/cebab-sparsecbm] [--rounds 3]
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

from benchmarks.harness import machine, write_results
from sparsecbm import load, load_dataset
from sparsecbm.files import write_text


def texts_per_second(clf, texts, batch_size: int) -> float:
    start = time.perf_counter()
    clf.forward_texts(texts, batch_size=batch_size)
    return len(texts) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="runs/pipeline/cebab-sparsecbm", help="a SparseCBM folder; its dense/ is the CBM")
    parser.add_argument("--dense", help="the dense CBM folder (default MODEL/dense)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", default="benchmarks/results")
    args = parser.parse_args()
    sparse = load(args.model)
    dense = load(args.dense or Path(args.model) / "dense")
    texts = load_dataset("cebab")["test"].texts
    K = len(sparse.schema.concepts)
    texts_per_second(sparse, texts[:64], args.batch_size)  # warm up (and build the masked-weight cache)
    texts_per_second(dense, texts[:64], args.batch_size)
    rates = {"dense": [], "sparse": []}
    for _ in range(args.rounds):
        rates["dense"].append(texts_per_second(dense, texts, args.batch_size))
        rates["sparse"].append(texts_per_second(sparse, texts, args.batch_size))
    d, s = statistics.median(rates["dense"]), statistics.median(rates["sparse"])
    result = {
        "command": "python -m benchmarks.throughput",
        "machine": machine(),
        "texts": len(texts), "batch_size": args.batch_size, "rounds": args.rounds, "K": K, "rates": rates,
        "dense_texts_per_s": d, "sparse_texts_per_s": s, "sparse_over_dense": s / d,
        "sparse_time_over_K_dense": d / (K * s), "target_sparse_over_dense": 1 / (1.05 * K),
    }
    write_results(Path(args.out) / "throughput.json", result)
    text = (f"Batched inference, the whole CEBaB test split ({len(texts)} texts) at batch {args.batch_size}, "
            f"median of {args.rounds} rounds, {result['machine']}:\n\n"
            f"| dense CBM | SparseCBM (K = {K}) | SparseCBM / dense throughput | SparseCBM time / (K x dense) |\n"
            f"|---|---|---|---|\n"
            f"| {d:.1f} texts/s | {s:.1f} texts/s | {s / d:.3f} (target >= {1 / (1.05 * K):.3f}) "
            f"| {d / (K * s):.3f} (target <= 1.05) |\n")
    write_text(Path(args.out) / "throughput.md", text)
    print(text)


if __name__ == "__main__":
    main()
