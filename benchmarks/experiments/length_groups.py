"""Padding of training batches on CEBaB's training split: plain random batches vs
``--length-groups G`` (sparsecbm.training.group_by_length), counted in MiniLM
tokens (capped at 128, as training reads them), batches of 16, 5 seeded epochs.

    python -m benchmarks.experiments.length_groups [--groups 8]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from transformers import AutoTokenizer

from benchmarks.harness import write_results
from sparsecbm import load_dataset
from sparsecbm.backbones import minilm_dir
from sparsecbm.training import group_by_length


def padded_over_real(order: np.ndarray, lengths: np.ndarray, batch_size: int) -> tuple[int, int]:
    batches = [lengths[order[s : s + batch_size]] for s in range(0, len(order), batch_size)]
    return sum(int(b.max()) * len(b) for b in batches), sum(int(b.sum()) for b in batches)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--groups", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--out", default="benchmarks/results")
    args = parser.parse_args()
    texts = load_dataset("cebab")["train"].texts
    tokenizer = AutoTokenizer.from_pretrained(minilm_dir())
    lengths = np.array([len(ids) for ids in tokenizer(list(texts), truncation=True, max_length=128)["input_ids"]])
    rng = np.random.default_rng(0)
    totals = {"random": [0, 0], f"length groups {args.groups}": [0, 0]}
    for _ in range(args.epochs):
        order = rng.permutation(len(texts))
        grouped = group_by_length(order, texts, args.batch_size, args.groups, rng)
        for name, o in zip(totals, (order, grouped)):
            padded, real = padded_over_real(o, lengths, args.batch_size)
            totals[name][0] += padded
            totals[name][1] += real
    result = {"command": "python -m benchmarks.experiments.length_groups", "texts": len(texts), "batch_size": args.batch_size,
              "epochs": args.epochs, "padded_over_real": {name: p / r for name, (p, r) in totals.items()}}
    write_results(Path(args.out) / "length_groups.json", result)
    for name, ratio in result["padded_over_real"].items():
        print(f"{name}: padded tokens / real tokens = {ratio:.2f}")


if __name__ == "__main__":
    main()
