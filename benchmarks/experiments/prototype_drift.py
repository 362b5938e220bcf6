"""How far value prototypes drift when persistent edits rewire the masks, and whether it matters.

Value prototypes (each concept value's mean embedding over the training texts) are fitted
once, when training ends; kept mask edits change the edited concepts' embeddings and do
not refit them. This applies the guarded persistent edits of benchmarks/intervention.py
(every wrong concept of the first --n dev reviews, taylor ``auto``, the guard of --n
training reviews), then refits the prototypes on the training split and compares:
the drift of each value's prototype (relative L2 distance), and one wrong concept set true
alone over the whole test split with the stored and with the refitted prototypes.

    python -m benchmarks.experiments.prototype_drift    # 14 min on 2 cores beside a training run
"""

from __future__ import annotations

import argparse
from dataclasses import asdict
from pathlib import Path

import torch

import sparsecbm
from benchmarks.harness import command_line, machine, write_results
from sparsecbm.data import dataset_from_spec
from sparsecbm.interventions import CAUTION, Guard, protocols
from sparsecbm.interventions.curves import single_fixes
from sparsecbm.training import fit_value_prototypes


def drift(a: torch.Tensor, b: torch.Tensor) -> list[float]:
    """Per value (row), ||a - b|| / ||a||."""
    return ((a - b).norm(dim=1) / a.norm(dim=1).clamp_min(1e-12)).tolist()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="runs/bottlenecks/sparsecbm-embedding-p0.5-s0")
    parser.add_argument("--n", type=int, default=300, help="dev reviews corrected, and training reviews guarding")
    parser.add_argument("--out", default="benchmarks/results/prototype_drift.json")
    args = parser.parse_args()
    clf = sparsecbm.load(args.model)
    if clf.model.head.value_prototypes is None:
        raise SystemExit(f"{args.model} has no value prototypes (python -m benchmarks.bottlenecks --remeasure adds them)")
    data = dataset_from_spec(clf.data_spec)
    test = data["test"]
    stored = clf.model.head.value_prototypes.clone()
    refit_unedited = fit_value_prototypes(clf, data["train"], progress=True).clone()
    clf.model.head.value_prototypes = stored
    edits = protocols.persistent(clf, data["dev"].head(args.n), test, "auto", selection="taylor",
                                 guard=Guard(data["train"].head(args.n), caution=CAUTION, loss_budget=None, progress=True))
    out = clf.forward_texts(test.texts, progress=True, desc="test after the edits")
    with_stored = asdict(single_fixes(clf, test, out))
    refit = fit_value_prototypes(clf, data["train"], progress=True).clone()
    with_refit = asdict(single_fixes(clf, test, out))
    names = [f"{c}.{v}" for c, values in zip(clf.schema.concepts, clf.schema.concept_values) for v in values]
    edited = sorted({e.concept for e in clf.interventions})
    result = {
        "machine": machine(),
        "command": command_line("benchmarks.experiments.prototype_drift", args),
        "model": args.model, "edits_kept": edits.edits, "mask_bits_changed": edits.bits_changed,
        "edited_concepts": edited,
        "refit_without_edits_max_drift": max(drift(stored, refit_unedited)),
        "drift_after_edits": dict(zip(names, drift(stored, refit))),
        "single_fixes_stored_prototypes": with_stored,
        "single_fixes_refitted_prototypes": with_refit,
    }
    write_results(Path(args.out), result)
    worst = max(result["drift_after_edits"].items(), key=lambda item: item[1])
    print(f"{edits.edits} edits kept ({edits.bits_changed} mask bits); refit without edits: max drift "
          f"{result['refit_without_edits_max_drift']:.2e}; after the edits: max drift {worst[1]:.4f} ({worst[0]})")
    for name, r in (("stored", with_stored), ("refitted", with_refit)):
        print(f"one true concept, {name} prototypes: {r['fixed']} fixed, {r['broken']} broken of {r['pairs']} "
              f"(net {100 * r['net']:+.2f} %)")


if __name__ == "__main__":
    main()
