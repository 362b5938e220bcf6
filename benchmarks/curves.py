"""Intervention curves of saved models (issue 27's instrument): CEBaB test task accuracy
as 0..K concepts are set to their true values (random order over every subset, and
least-certain first; true values as 0/1 and as training percentiles), the task
accuracy of the head fed hard predicted concepts, and the concepts' share of the
winning label's logit. One JSON and one PNG per model in --out.

    python -m benchmarks.curves --models runs/pipeline/cebab-sparsecbm runs/pipeline/cebab-sparsecbm/dense
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import sparsecbm
from benchmarks.harness import machine, write_results
from sparsecbm.data import dataset_from_spec
from sparsecbm.interventions.curves import intervention_curves, plot_curves


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["runs/pipeline/cebab-sparsecbm",
                                                         "runs/pipeline/cebab-sparsecbm/dense"])
    parser.add_argument("--split", default="test")
    parser.add_argument("--out", default="benchmarks/results/curves")
    args = parser.parse_args()
    out = Path(args.out)
    for model in args.models:
        clf = sparsecbm.load(model)
        data = dataset_from_spec(clf.data_spec)
        start = time.perf_counter()
        curves = intervention_curves(clf, data[args.split], data["train"], progress=True)
        result = curves.to_dict()
        name = model.strip("/").replace("/", "__")
        result.update(model=model, kind=clf.config.kind, seconds=round(time.perf_counter() - start, 1),
                      machine=machine(),
                      command=f"python -m benchmarks.curves --models {model} --split {args.split}")
        write_results(out / f"{name}.json", result)
        plot_curves(curves, out / f"{name}.png")
        print(f"{model} ({clf.config.kind}): " + "; ".join(
            f"{k} " + " ".join(f"{100 * p:.1f}" for p in v) for k, v in result["curves"].items())
            + f"; hard concepts {100 * result['hard_concepts_task_accuracy']:.1f}; "
              f"concept share {100 * result['concept_share']:.1f} %")


if __name__ == "__main__":
    main()
