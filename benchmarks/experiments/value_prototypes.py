"""How far an intervened value's embedding should move toward its training prototype
(heads.PROTOTYPE_MIX): 0 keeps the text's own embedding of the true value (Concept Embedding
Models' intervention), 1 swaps in the prototype. For the default head's CBM and SparseCBM runs
of benchmarks/bottlenecks.py (3 seeds each), on CEBaB dev (where the mix is chosen) and test:
one wrong concept set true alone, net labels fixed over every (text, wrong concept) pair, and
the random-order curve. Prototypes come from each run's training texts.

    python -m benchmarks.experiments.value_prototypes     # ~10 min on 2 CPU cores
"""

from __future__ import annotations

import argparse
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

import sparsecbm
from benchmarks.harness import write_results
from sparsecbm import heads
from sparsecbm.data import dataset_from_spec
from sparsecbm.interventions.curves import curve, single_fixes, true_activations
from sparsecbm.training import fit_value_prototypes

RUNS = [f"runs/bottlenecks/{kind}-s{seed}" for kind in ("cbm-embedding-p0.5", "sparsecbm-embedding-p0.5")
        for seed in (0, 1, 2)]
MIXES = (0.0, 0.25, 0.5, 0.75, 1.0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="benchmarks/results/value_prototypes.json")
    args = parser.parse_args()
    results = {}
    for run in RUNS:
        clf = sparsecbm.load(run)
        data = dataset_from_spec(clf.data_spec)
        fit_value_prototypes(clf, data["train"])
        for split in ("dev", "test"):
            out = clf.forward_texts(data[split].texts)
            certainty = torch.stack([logits.softmax(-1).max(-1).values for logits in out.concept_logits], 1)
            true = true_activations(clf, data[split])
            for mix in MIXES:
                heads.PROTOTYPE_MIX = mix
                fixes = asdict(single_fixes(clf, data[split], out))
                results.setdefault(run, {}).setdefault(split, {})[str(mix)] = {
                    "single_fixes": fixes, "curve": curve(clf, data[split], out, true, certainty, "random")}
                print(f"{run} {split} mix {mix}: net {100 * fixes['net']:+.2f} % "
                      f"({fixes['fixed']} fixed / {fixes['broken']} broken)", flush=True)
    summary = {}
    for kind in ("cbm", "sparsecbm"):
        for split in ("dev", "test"):
            for mix in MIXES:
                runs = [r[split][str(mix)] for name, r in results.items() if name.split("/")[-1].startswith(kind + "-")]
                summary.setdefault(kind, {}).setdefault(split, {})[str(mix)] = {
                    "net_single_fixes": float(np.mean([r["single_fixes"]["net"] for r in runs])),
                    "curve": np.mean([r["curve"] for r in runs], 0).round(4).tolist()}
    print("\nmean over 3 seeds: net single fixes % (curve 0..4 true)")
    for kind, by_split in summary.items():
        for split, by_mix in by_split.items():
            print(f"{kind:10s} {split:5s} " + "  ".join(
                f"{mix}: {100 * r['net_single_fixes']:+.2f} ({' / '.join(f'{100 * p:.1f}' for p in r['curve'])})"
                for mix, r in by_mix.items()))
    write_results(Path(args.out), {"runs": results, "summary": summary})


if __name__ == "__main__":
    main()
