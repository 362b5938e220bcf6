"""Why a concept intervention underestimates a person's edit, and which "what if" fixes it,
on CEBaB's *dev* counterfactual pairs (choosing; test is for ``benchmarks.cebab_explain``).

1. **Where the model's change comes from.** For each pair (base text, the person's edit of one
   aspect k), the label logits' change is split into the label head's parts: concept k's own
   term, the other concepts' terms (and the side channel). ``own share`` and ``others' share``
   are each part's projection on the total change, averaged over pairs.
2. **Which what-if.** The counterfactual estimate from the base text alone (label probabilities
   minus the base's), scored like CEBaB (L2 / cosine distance / NormDiff against the ICaCE):

   - ``intervention``: concept k set (its value embedding ``PROTOTYPE_MIX`` toward its
     prototype), the other concepts' features as the text gave them;
   - ``others shifted S``: the same plus every other concept's features moved by S times their mean
     shift between training texts with k's new and predicted value (``sparsecbm.counterfactuals``);
   - ``own mix M``: the other concepts shifted (S = 1) and concept k's embedding moved M of the way
     to its prototype instead of ``PROTOTYPE_MIX``;
   - ``own shifted``: the other concepts shifted (S = 1) and concept k's whole features moved by
     the mean difference between training texts with k's new and old value, instead of a mix;
   - ``spread X``: the other concepts shifted (S = 1), the estimate's label probabilities read at
     X times the model's temperature (a rewrite's reading is less certain than the text's own);
   - ``spread X, shifted S``: both at once (X 1, 1.1, 1.25; S 1.25 to 2);
   - ``scales averaged``: the mean of the label probabilities at S = 0, 0.5, 1, 1.5 and 2 (a hedge
     over how far one review's other concepts move);
   - ``shift per concept``: at the library's spread, one S per edited concept, each chosen by the L2
     of that concept's pairs (in sample, so an upper bound on what a per-concept shift gains).

    python -m benchmarks.experiments.what_if_shift --models runs/distill/cebab-cbm-s0 runs/cebab-sparsecbm
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

import sparsecbm
from benchmarks.cebab_explain import errors, head_setting, intervention_pairs, schema_value
from benchmarks.harness import run_missing, table_head
from sparsecbm import heads
from sparsecbm.counterfactuals import MIN_TEXTS
from sparsecbm.data import find_data_dir
from sparsecbm.training import fit_missing_value_shifts


def run(model: str, data_dir: str | None) -> dict:
    clf = sparsecbm.load(model)
    head, schema = clf.model.head, clf.schema
    fit_missing_value_shifts(clf, sparsecbm.load_dataset("cebab", data_dir=data_dir)["train"], progress=True)
    records = json.loads((find_data_dir(data_dir) / "cebab" / "dev.json").read_text(encoding="utf-8"))
    pairs = intervention_pairs(records)
    out = clf.forward_texts([r["description"] for r in records], progress=True, desc="dev texts")
    probs = clf.label_probabilities(out.task_logits).numpy().astype(np.float64)
    base = np.array([p.base for p in pairs])
    cf = np.array([p.counterfactual for p in pairs])
    icace = np.round(probs[cf] - probs[base], 4)
    n, n_concepts = len(pairs), len(schema.concepts)
    ks = torch.tensor([schema.concepts.index(p.concept) for p in pairs])
    rows = torch.arange(n)

    # 1. the label logits' change under the person's edit, by part
    terms = head.concept_terms(out.activations.float(), tuple(f.float() for f in out.features))
    change = terms[cf] - terms[base]  # (n, K, C_y)
    change = change - change.mean(-1, keepdim=True)  # a softmax reads logits up to a constant
    total = out.task_logits[cf].float() - out.task_logits[base].float()
    total = total - total.mean(-1, keepdim=True)
    own = change[rows, ks]
    norm = (total * total).sum(1).clamp_min(1e-9)
    decomposition = {"own share": float(((own * total).sum(1) / norm).mean()),
                     "others' share": float((((change.sum(1) - own) * total).sum(1) / norm).mean()),
                     "mean |logit change|": float(total.norm(dim=1).mean())}

    # 2. what-if variants, from the base texts alone
    a, features = out.activations[base], tuple(f[base] for f in out.features)
    predicted = torch.stack([a[:, head.concept_slice(k)].argmax(-1) for k in range(n_concepts)], 1)
    target = torch.tensor([schema.concept_values[k].index(schema_value(p.counterfactual_value))
                           for k, p in zip(ks.tolist(), pairs)])
    values = predicted.clone()
    values[rows, ks] = target
    chosen = torch.zeros(n, n_concepts, dtype=torch.bool)
    chosen[rows, ks] = True
    a_set = a.clone()
    for i, k in enumerate(ks.tolist()):
        cols = head.concept_slice(k)
        a_set[i, cols] = torch.nn.functional.one_hot(target[i], cols.stop - cols.start).to(a.dtype)
    shifts = head.value_shifts

    def others(f, scale=1.0):
        return shifts.shifted(f, predicted, values, chosen, scale)

    def own_shifted(f):
        f = [x.clone() for x in f]
        for i, k in enumerate(ks.tolist()):
            off, new, old = int(shifts.offsets[k]), int(target[i]), int(predicted[i, k])
            counts = shifts.counts[k]
            if new != old and counts[new, off + new] >= MIN_TEXTS and counts[old, off + old] >= MIN_TEXTS:
                f[k][i] += shifts.means[k][new, off + new] - shifts.means[k][old, off + old]
        return tuple(f)

    def probabilities(f, spread=1.0) -> np.ndarray:
        return clf.label_probabilities(clf.read_label(a_set, f) / spread).numpy().astype(np.float64)

    def score(f, spread=1.0, p=None) -> dict:
        estimate = (probabilities(f, spread) if p is None else p) - probs[base]
        e = errors(icace, estimate).mean(0)
        return {"L2": float(e[0]), "cosine": float(e[1]), "NormDiff": float(e[2]),
                "length": float(np.linalg.norm(estimate, axis=1).mean())}

    intervened = head.true_features(features, values, a, chosen)
    variants = {"intervention": score(intervened)}
    for scale in (0.5, 1.0, 1.5, 2.0):
        variants[f"others shifted {scale:g}"] = score(others(intervened, scale))
    for mix in (0.0, 1.0):
        with head_setting("PROTOTYPE_MIX", mix):
            variants[f"own mix {mix:g}"] = score(others(head.true_features(features, values, a, chosen)))
    variants["own shifted"] = score(others(own_shifted(features)))
    for spread in (1.1, 1.25, 1.5, 2.0):
        variants[f"spread {spread:g}"] = score(others(intervened), spread)
    for spread in (1.0, 1.1, 1.25):  # a longer shift lengthens the estimate (NormDiff), the spread hedges it
        for scale in (1.25, 1.5, 1.75, 2.0):
            if spread != 1.0 or scale not in (1.5, 2.0):  # those are "others shifted S" above
                variants[f"spread {spread:g}, shifted {scale:g}"] = score(others(intervened, scale), spread)
    averaged = np.mean([probabilities(others(intervened, s)) for s in (0.0, 0.5, 1.0, 1.5, 2.0)], 0)
    variants["scales averaged"] = score(None, p=averaged)
    # one shift per edited concept, each chosen by its pairs' L2 (in sample: an upper bound on the gain)
    grid = (0.5, 0.75, 1.0, 1.25, 1.5, 2.0)
    per_scale = {s: probabilities(others(intervened, s), heads.WHAT_IF_SPREAD) for s in grid}
    l2 = {s: np.linalg.norm(icace - (p - probs[base]), axis=1) for s, p in per_scale.items()}
    concept_of = ks.numpy()
    best = {k: min(grid, key=lambda s: l2[s][concept_of == k].mean()) for k in np.unique(concept_of)}
    mixed = np.stack([per_scale[best[k]][i] for i, k in enumerate(concept_of)])
    variants["shift per concept"] = {**score(None, p=mixed), "scales": {schema.concepts[k]: s for k, s in best.items()}}
    return {"model": model, "kind": clf.config.kind, "temperature": clf.temperature, "pairs": n,
            "mean_icace_norm": float(np.linalg.norm(icace, axis=1).mean()), "decomposition": decomposition,
            "variants": variants}


def markdown(results: dict) -> str:
    parts = table_head("Where a person's edit of one aspect moves the label logits, CEBaB dev pairs "
                       "(`python -m benchmarks.experiments.what_if_shift`): projection of each part on the change.",
                       ["model", "pairs", "mean logit change", "edited concept's term", "other concepts' terms"])
    for r in results.values():
        d = r["decomposition"]
        own, others = d["own share"], d["others' share"]
        parts.append(f"| {r['model']} ({r['kind']}) | {r['pairs']} | {d['mean |logit change|']:.2f} | {own:.2f} | {others:.2f} |")
    names = list(dict.fromkeys(name for r in results.values() for name in r["variants"]))  # runs of older grids lack some
    table = table_head("What-if variants on the same pairs: L2 / cosine distance / NormDiff (lower is better), and "
                       "the estimate's mean length (the ICaCE's in brackets); - : not in that run's grid.",
                       ["model", *names])
    for r in results.values():
        cells = [f"{v['L2']:.3f} / {v['cosine']:.3f} / {v['NormDiff']:.3f} ({v['length']:.2f})"
                 if (v := r["variants"].get(name)) else "-" for name in names]
        table.append(f"| {r['model']} ({r['mean_icace_norm']:.2f}) | " + " | ".join(cells) + " |")
    return "\n".join(parts) + "\n\n" + "\n".join(table) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", required=True, help="model folders trained on CEBaB (embedding head)")
    parser.add_argument("--data-dir", help="the folder holding cebab/ (default: ../shared/data or $SPARSECBM_DATA_DIR)")
    parser.add_argument("--out", default="benchmarks/results")
    args = parser.parse_args()
    planned = {model: (lambda m=model: run(m, args.data_dir)) for model in args.models}
    run_missing(Path(args.out), "what_if_shift", planned, markdown)


if __name__ == "__main__":
    main()
