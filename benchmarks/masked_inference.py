"""Per-example inference time: SparseCBM (K subnetworks) vs the dense CBM, same run.

The physical floor for unstructured masks on dense kernels is K dense passes;
the target is at most 1.15 x K x dense, i.e. applying the masks may not cost
more than 15 %. sparsecbm caches each concept's masked weights (M_k * theta)
between calls and rebuilds them only when a weight or mask changes, so a
steady-state prediction is K plain backbone passes.

Uses MiniLM with random 75 %-sparse masks (timing does not depend on which
weights are kept) on real CEBaB test texts, batch size 1.

    python -m benchmarks.masked_inference [--n 100] [--out benchmarks/results]
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch

from benchmarks.harness import machine, write_results
from sparsecbm.backbones import load_backbone
from sparsecbm.data import load_dataset
from sparsecbm.files import write_text
from sparsecbm.model import ConceptBottleneckModel, ModelConfig


def per_example_ms(model, batches) -> list[float]:
    times = []
    with torch.inference_mode():
        for batch in batches:
            start = time.perf_counter()
            model(**batch)
            times.append(1000 * (time.perf_counter() - start))
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=100, help="test texts timed")
    parser.add_argument("--out", default="benchmarks/results")
    args = parser.parse_args()

    data = load_dataset("cebab")
    backbone, tokenizer = load_backbone("minilm")
    dense = ConceptBottleneckModel(backbone, ModelConfig(kind="cbm", schema=data.schema)).eval()
    sparse = ConceptBottleneckModel(backbone, ModelConfig(kind="sparsecbm", schema=data.schema)).eval()
    sparse.projector.load_state_dict(dense.projector.state_dict())
    sparse.classifier.load_state_dict(dense.classifier.state_dict())
    g = torch.Generator().manual_seed(0)
    sparse.masks = {c: {n: torch.rand(m.shape, generator=g) >= 0.75 for n, m in per.items()} for c, per in sparse.masks.items()}
    K = len(data.schema.concepts)

    texts = data["test"].texts[: args.n]
    batches = [
        {k: v for k, v in tokenizer([t], truncation=True, max_length=128, return_tensors="pt").items()
         if k in ("input_ids", "attention_mask")}
        for t in texts
    ]
    # Warm up both (and fill the masked-weight cache), then alternate rounds so drift hits both alike.
    per_example_ms(dense, batches[:5])
    first_call = per_example_ms(sparse, batches[:1])[0]
    per_example_ms(sparse, batches[:5])
    dense_ms, sparse_ms = [], []
    for _ in range(3):
        dense_ms += per_example_ms(dense, batches)
        sparse_ms += per_example_ms(sparse, batches)
    d, s = statistics.median(dense_ms), statistics.median(sparse_ms)
    result = {
        "machine": machine(),
        "examples": len(texts), "rounds": 3, "K": K,
        "dense_median_ms": d, "sparse_median_ms": s,
        "ratio_to_dense": s / d, "ratio_to_K_dense": s / (K * d), "target_ratio_to_K_dense": 1.15,
        "first_sparse_call_ms_cache_build": first_call,
        "masked_weights_cached": True, "subnetworks_batched": False,
    }
    out = Path(args.out)
    write_results(out / "masked_inference.json", result)
    text = (
        f"Per-example forward (batch 1, {len(texts)} CEBaB test texts x 3 rounds, median), {result['machine']}:\n\n"
        f"| dense CBM | SparseCBM (K = {K}) | SparseCBM / dense | SparseCBM / (K x dense) |\n|---|---|---|---|\n"
        f"| {d:.1f} ms | {s:.1f} ms | {s / d:.2f} | {s / (K * d):.3f} (target <= 1.15) |\n\n"
        f"First SparseCBM call (builds the cached masked weights): {first_call:.0f} ms.\n"
    )
    write_text(out / "masked_inference.md", text)
    print(text)


if __name__ == "__main__":
    main()
