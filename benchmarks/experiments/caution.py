"""How much one correction disturbs other inputs, by the guard's caution.

For the first --n wrong concepts of the first 120 dev examples, one taylor
edit (auto, label known) is made with the cost term ``caution * theta^2 F / 2``
(F: diagonal empirical Fisher of L_k over the first --guard-n train rows, as
:class:`sparsecbm.guard.Guard` computes it), then undone. Reported per caution:
corrections fixed, median bits flipped, and on the first --eval-n test examples
how many of concept k's predictions the edit changed and its accuracy change.

    python -m benchmarks.experiments.caution --caution 0 100 1000 10000 30000 100000
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

import sparsecbm
from benchmarks.harness import command_line, machine, write_results
from sparsecbm.data import dataset_from_spec
from sparsecbm.interventions import Guard
from sparsecbm.interventions import rewire as I


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="runs/pipeline/cebab-sparsecbm")
    parser.add_argument("--caution", type=float, nargs="+", default=[0, 100, 1000, 10000, 30000, 100000])
    parser.add_argument("--n", type=int, default=40, help="corrections")
    parser.add_argument("--guard-n", type=int, default=300)
    parser.add_argument("--eval-n", type=int, default=400)
    parser.add_argument("--out", default="benchmarks/results/caution.json")
    args = parser.parse_args()
    clf = sparsecbm.load(args.model)
    data = dataset_from_spec(clf.data_spec)
    dev, test = data["dev"].head(120), data["test"].head(args.eval_n)
    guard = Guard(data["train"].head(args.guard_n), caution=1.0, progress=True)  # penalty() = the bare cost
    schema, model = clf.schema, clf.model
    wrong = clf.forward_texts(dev.texts).predicted_values() != dev.concepts
    items = [(int(i), int(k)) for i in np.flatnonzero(wrong.any(1)) for k in np.flatnonzero(wrong[i])][: args.n]
    test_batches = I.tokenize(clf, test.texts)
    base = [I.concept_k_outputs(clf, test_batches, k).values().numpy()
            for k in range(len(schema.concepts))]
    rows = {c: [] for c in args.caution}
    for i, k in items:
        concept, masks_k = schema.concepts[k], model.masks[schema.concepts[k]]
        cost = guard.penalty(clf, k)
        batches = I.tokenize(clf, [dev.texts[i]])
        v, y = torch.tensor([int(dev.concepts[i, k])]), torch.tensor([int(dev.labels[i])])
        g_theta = I.saliency(clf, k, batches, v, y).copy()
        for caution in args.caution:
            drop, grow = I.rank(clf, masks_k, g_theta.copy(), int(1e-3 * g_theta.size), "taylor", 0,
                                penalty=np.float32(caution) * cost)
            if drop.size == 0:
                rows[caution].append({"fixed": False, "bits": 0, "changed": 0, "delta_accuracy": 0.0})
                continue
            n, logits = I.search(clf, k, batches, v, drop, grow, g_theta.size)
            after = I.concept_k_outputs(clf, test_batches, k).values().numpy()
            I.flip(model, concept, drop[:n], grow[:n], undo=True)
            truth = test.concepts[:, k]
            rows[caution].append({"fixed": int(logits.values()[0]) == int(v[0]), "bits": 2 * int(n),
                                  "changed": int((after != base[k]).sum()),
                                  "delta_accuracy": float((after == truth).mean() - (base[k] == truth).mean())})
    summary = {
        f"{c:g}": {"fixed": sum(r["fixed"] for r in rs), "tried": len(rs),
                   "median_bits_flipped": float(np.median([r["bits"] for r in rs])),
                   "mean_predictions_changed": float(np.mean([r["changed"] for r in rs])),
                   "mean_accuracy_change_points": float(100 * np.mean([r["delta_accuracy"] for r in rs]))}
        for c, rs in rows.items()}
    result = {"machine": machine(),
              "model": args.model, "command": command_line("benchmarks.experiments.caution", args),
              "eval_n": len(test), "guard_n": len(guard), "summary": summary}
    write_results(Path(args.out), result)
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
