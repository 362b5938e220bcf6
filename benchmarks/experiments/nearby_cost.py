"""What the nearest texts cost a correction preview in the explorer: previews of the same wrong
concepts with ``--nearest 0`` and ``20``, alternating, on the first 500 CEBaB dev rows (the
explorer's API called directly, no HTTP).

    python -m benchmarks.experiments.nearby_cost --model runs/cebab-sparsecbm     # ~2 min on 2 CPU cores
"""

from __future__ import annotations

import argparse
import statistics
import time

import sparsecbm
from benchmarks.harness import write_results
from sparsecbm.explorer import Explorer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="runs/cebab-sparsecbm")
    parser.add_argument("--previews", type=int, default=12, help="wrong concepts previewed per setting")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--out", default="benchmarks/results/nearby_cost.json")
    args = parser.parse_args()
    clf = sparsecbm.load(args.model)
    split = sparsecbm.load_dataset("cebab")["dev"].head(500)
    predicted = clf.forward_texts(split.texts).predicted_values()
    wrong = [(i, k) for i in range(len(split)) for k in range(len(clf.schema.concepts))
             if predicted[i, k] != split.concepts[i, k]][: args.previews]
    runs = []
    for _ in range(args.rounds):
        for nearest in (0, 20):
            explorer = Explorer(clf, split, "cebab dev", nearest=nearest)
            explorer.model()
            explorer.settle()
            ms = []
            for i, k in wrong:
                body = {"index": i, "concept": clf.schema.concepts[k],
                        "value": clf.schema.concept_values[k][split.concepts[i, k]]}
                start = time.perf_counter()
                explorer.preview(body)
                ms.append(1000 * (time.perf_counter() - start))
            runs.append({"nearest": nearest, "p50_ms": statistics.median(ms), "max_ms": max(ms), "each_ms": ms})
            print(f"--nearest {nearest}: preview p50 {statistics.median(ms):.0f} ms, max {max(ms):.0f} ms")
    write_results(args.out, {"model": args.model, "previews": len(wrong), "runs": runs})


if __name__ == "__main__":
    main()
