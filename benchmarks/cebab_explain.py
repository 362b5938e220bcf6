"""CEBaB's explanation benchmark: how well an explainer predicts the model's own change of output
when a person rewrites one aspect of a review (Abraham et al. 2022, CEBaB's code/eval_pipeline).

    python -m benchmarks.cebab_explain --models runs/distill/cebab-cbm-s0 runs/distill/cebab-none-s0
    python -m benchmarks.cebab_explain --split dev --what-if-shift 0 0.5 1 1.5 2 --models ...   # choosing on dev

Followed as their code does it (utils/data_utils.py, utils/metric_utils.py, pipeline.py):

- the pairs, over CEBaB's whole test.json (1,689 rows; ``--split dev``: dev.json, for choosing settings):
  within each family (``original_id``), edit -> original, original -> edit, and edit -> edit of the same ``edit_type``; the concept is the
  edit type; a pair whose validated aspect label (the raw ``*_aspect_majority``) is the same in both
  texts is dropped. This gives their 3,958 pairs;
- ICaCE = round(p(counterfactual) - p(base), 4), with p the model's label probabilities (calibrated,
  when the model has a temperature: ``Classifier.label_probabilities``);
- per pair, L2 = ||ICaCE - estimate||, cosine distance (1 when either vector is zero), NormDiff =
  | ||ICaCE|| - ||estimate|| |; each averaged over the pairs, per concept and per direction.

Explainers, each estimating the change from the base text alone:

- ``what-if`` (ours, concept models; what every explanation shows): the label for a text that said the
  counterfactual's value, from the base text alone: the edited concept set to that value, the others as
  predicted with their features moved by their mean shift between training texts with the old and new
  value (``oracle_labels(..., counterfactual=True)``, ``sparsecbm.counterfactuals``), its probabilities
  read ``heads.WHAT_IF_SPREAD`` times less sure than the text's own, minus the base prediction. A model
  folder saved before value shifts existed gets them fitted here on the training split;
- ``intervention`` (concept models): the plain oracle intervention, the other concepts' features as the
  base text gave them (``what-if`` without the shifts);
- ``approx`` (their CONEXP): E[p | aspect = counterfactual value] - E[p | aspect = base value] over the
  training split, rounded to 4 decimals;
- ``s-learner`` (theirs): a logistic regression from the one-hot aspect labels of the training split
  to the model's predicted label; the base text's aspects as predicted, the edited one set. Where they
  predict the base aspects with a separate BERT aspect model, a concept model here uses its own
  concept predictions and a Standard model the gold aspects (stated in each result);
- ``random`` (their RandomExplainer, seeded) and ``zero`` (no effect, the floor any explainer must beat).

Their training split is ``train_inclusive`` or ``train_exclusive``; the shared data holds the latter.
Each model's result is saved in ``cebab_explain.json`` at once and skipped when rerun.
"""

from __future__ import annotations

import argparse
import json
import re
import time
from collections import defaultdict
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression

import sparsecbm
from benchmarks.harness import run_missing, table_head
from sparsecbm import heads
from sparsecbm.data import find_data_dir
from sparsecbm.interventions import oracle_labels
from sparsecbm.training import fit_missing_value_shifts

ASPECTS = ("food", "ambiance", "service", "noise")
VALUES = ("Negative", "unknown", "Positive")  # their one-hot order (explainer_utils.dataset_aspects_to_onehot)
EXPLAINERS = ("what-if", "intervention", "approx", "s-learner", "random", "zero")


@dataclass(frozen=True)
class Pair:
    base: int  # rows of the test records
    counterfactual: int
    concept: str  # the edit type
    base_value: str  # the concept's validated label (raw *_aspect_majority) in each text
    counterfactual_value: str
    kind: str  # edit->original, original->edit or edit->edit


def intervention_pairs(records: list[dict]) -> list[Pair]:
    """CEBaB's intervention pairs of ``records`` (rows of test.json), as its eval_pipeline forms them."""
    families = defaultdict(list)
    for i, r in enumerate(records):
        families[r["original_id"]].append(i)
    pairs = []
    for rows in families.values():
        if len(rows) < 2:
            continue
        originals = [i for i in rows if records[i]["is_original"]]
        edits = [i for i in rows if not records[i]["is_original"]]
        candidates = [(e, o, "edit->original") for e in edits for o in originals]
        candidates += [(o, e, "original->edit") for e in edits for o in originals]
        candidates += [(a, b, "edit->edit") for a in edits for b in edits
                       if a != b and records[a]["edit_type"] == records[b]["edit_type"]]
        for base, cf, kind in candidates:
            concept = records[base]["edit_type"] if kind == "edit->original" else records[cf]["edit_type"]
            values = [records[i][f"{concept}_aspect_majority"] or "" for i in (base, cf)]
            if values[0] != values[1]:  # an edit with no validated change is dropped
                pairs.append(Pair(base=base, counterfactual=cf, concept=concept, base_value=values[0],
                                  counterfactual_value=values[1], kind=kind))
    return pairs


def errors(icace: np.ndarray, estimate: np.ndarray) -> np.ndarray:
    """(n, 3): per pair L2, cosine distance (1 when either is zero) and NormDiff."""
    a, b = np.linalg.norm(icace, axis=1), np.linalg.norm(estimate, axis=1)
    both = (a > 0) & (b > 0)
    cosine = np.ones(len(icace))
    cosine[both] = 1 - (icace[both] * estimate[both]).sum(1) / (a[both] * b[both])
    return np.stack([np.linalg.norm(icace - estimate, axis=1), cosine, np.abs(a - b)], axis=1)


def onehot_aspects(aspects: list[dict[str, str]]) -> np.ndarray:
    """Their representation: per aspect a one-hot of (Negative, unknown, Positive); '' and
    'no majority' the zero vector."""
    out = np.zeros((len(aspects), len(ASPECTS) * len(VALUES)))
    for i, a in enumerate(aspects):
        for j, aspect in enumerate(("food", "service", "ambiance", "noise")):  # their column order
            if a[aspect] in VALUES:
                out[i, 3 * j + VALUES.index(a[aspect])] = 1
    return out


def schema_value(raw: str) -> str:
    return raw if raw in VALUES else "unknown"  # the model's reading of '' and 'no majority'


def estimates(clf, pairs: list[Pair], test: list[dict], train: list[dict], seed: int,
              shifts: tuple[float, ...] = ()) -> tuple[dict, np.ndarray, str]:
    """Every explainer's estimates (n_pairs, L), the ICaCE, and how the S-learner read the base aspects."""
    out = clf.forward_texts([r["description"] for r in test], progress=True, desc="test texts")
    probs = clf.label_probabilities(out.task_logits).numpy().astype(np.float64)
    base = np.array([p.base for p in pairs])
    cf = np.array([p.counterfactual for p in pairs])
    icace = np.round(probs[cf] - probs[base], 4)
    found = {"zero": np.zeros_like(icace)}
    rng = np.random.default_rng(seed)

    def random_probs() -> np.ndarray:
        p = rng.uniform(size=icace.shape)
        return p / p.sum(1, keepdims=True)

    found["random"] = random_probs() - random_probs()
    train_probs = clf.forward_texts([r["description"] for r in train], progress=True, desc="train texts")
    train_probs = clf.label_probabilities(train_probs.task_logits).numpy().astype(np.float64)
    conditional = {(a, v): train_probs[[r[f"{a}_aspect_majority"] == v for r in train]].mean(0)
                   for a in ASPECTS for v in VALUES}
    found["approx"] = np.round(np.array([conditional[p.concept, p.counterfactual_value] - conditional[p.concept, p.base_value]
                                         for p in pairs]), 4)
    lr = LogisticRegression().fit(onehot_aspects([{a: r[f"{a}_aspect_majority"] or "" for a in ASPECTS} for r in train]),
                                  train_probs.argmax(1))
    has_concepts = clf.model.config.has_concepts
    if has_concepts:
        predicted = out.predicted_values()
        schema = clf.schema
        seen = [{a: schema.concept_values[schema.concepts.index(a)][predicted[p.base, schema.concepts.index(a)]]
                 for a in ASPECTS} for p in pairs]
        how = "the model's own concept predictions"
    else:
        seen = [{a: test[p.base][f"{a}_aspect_majority"] or "" for a in ASPECTS} for p in pairs]
        how = "the gold aspect labels (a Standard model predicts none)"
    after = [{**s, p.concept: p.counterfactual_value} for s, p in zip(seen, pairs)]
    found["s-learner"] = lr.predict_proba(onehot_aspects(after)) - lr.predict_proba(onehot_aspects(seen))
    if has_concepts:
        set_to = [{p.concept: schema_value(p.counterfactual_value)} for p in pairs]
        idx = torch.as_tensor(base)
        intervened = oracle_labels(clf, out.activations[idx], set_to, tuple(f[idx] for f in out.features))
        labels = clf.schema.labels
        found["intervention"] = np.array([[r["probabilities"][y] for y in labels] for r in intervened]) - probs[base]
        for scale in shifts or (heads.WHAT_IF_SHIFT,):
            with head_setting("WHAT_IF_SHIFT", scale):
                said = oracle_labels(clf, out.activations[idx], set_to, tuple(f[idx] for f in out.features),
                                     counterfactual=True)
            name = f"what-if@{scale:g}" if shifts else "what-if"
            found[name] = np.array([[r["probabilities"][y] for y in labels] for r in said]) - probs[base]
    return found, icace, how


@contextmanager
def head_setting(name: str, value: float):
    """A constant of ``sparsecbm.heads`` (``WHAT_IF_SHIFT``, ``PROTOTYPE_MIX``) set to ``value`` for a
    while (choosing it on dev)."""
    saved = getattr(heads, name)
    setattr(heads, name, value)
    try:
        yield
    finally:
        setattr(heads, name, saved)


def run(model: str, data_dir: str | None, seed: int, split: str = "test", shifts: tuple[float, ...] = ()) -> dict:
    start = time.perf_counter()
    clf = sparsecbm.load(model)
    shifts_from = ("fitted by the benchmark on the training split (the folder predates them)"
                   if fit_missing_value_shifts(clf, sparsecbm.load_dataset("cebab", data_dir=data_dir)["train"], progress=True)
                   else "the model folder")
    folder = find_data_dir(data_dir) / "cebab"
    test = json.loads((folder / f"{split}.json").read_text(encoding="utf-8"))
    train = [r for r in json.loads((folder / "train_exclusive.json").read_text(encoding="utf-8"))
             if r["review_majority"] != "no majority"]
    pairs = intervention_pairs(test)
    found, icace, how = estimates(clf, pairs, test, train, seed, shifts)
    result = {"model": model, "split": split, "kind": clf.config.kind, "temperature": clf.temperature, "pairs": len(pairs),
              "value_shifts": shifts_from, "what_if_shift": list(shifts) or heads.WHAT_IF_SHIFT,
              "what_if_spread": heads.WHAT_IF_SPREAD,
              "s_learner_base_aspects": how,
              "mean_icace_norm": float(np.linalg.norm(icace, axis=1).mean()), "explainers": {}}
    for name, estimate in found.items():
        e = errors(icace, estimate)
        groups = {"all": np.ones(len(pairs), bool)}
        groups.update({f"concept {c}": np.array([p.concept == c for p in pairs]) for c in ASPECTS})
        groups.update({f"{c} {b} -> {v}": np.array([(p.concept, p.base_value, p.counterfactual_value) == (c, b, v)
                                                     for p in pairs])
                       for c in ASPECTS for b in VALUES for v in VALUES if b != v})
        result["explainers"][name] = {group: {"pairs": int(rows.sum()), "L2": float(e[rows, 0].mean()),
                                              "cosine": float(e[rows, 1].mean()), "NormDiff": float(e[rows, 2].mean())}
                                      for group, rows in groups.items() if rows.any()}
    result["seconds"] = round(time.perf_counter() - start, 1)
    return result


def markdown(results: dict) -> str:
    split = next(iter(results.values())).get("split", "test")
    names = list(dict.fromkeys(name for r in results.values() for name in r["explainers"]))
    names.sort(key=lambda n: EXPLAINERS.index(n.split("@")[0]))
    lines = table_head(f"CEBaB's explanation benchmark on its {split} pairs (`python -m benchmarks.cebab_explain"
                       f"{' --split dev' if split == 'dev' else ''}`): "
                       "mean ICaCE error per pair, L2 / cosine distance / NormDiff (lower is better).",
                       ["model", "pairs", "mean ||ICaCE||", *names])
    for r in results.values():
        cells = []
        for name in names:
            m = r["explainers"].get(name, {}).get("all")
            cells.append(f"{m['L2']:.3f} / {m['cosine']:.3f} / {m['NormDiff']:.3f}" if m else "-")
        lines.append(f"| {r['model']} ({r['kind']}, T {r.get('temperature', 1.0):.2f}) | {r['pairs']} | "
                     f"{r['mean_icace_norm']:.3f} | " + " | ".join(cells) + " |")
    groups = defaultdict(list)  # the same recipe over seeds: the folder's name without its -s<seed>
    for r in results.values():
        groups[re.sub(r"-s\d+$", "", r["model"])].append(r)
    mean = table_head("Mean over the seeds run (their number in brackets), L2 / cosine distance / NormDiff.",
                      ["models", *names])
    for group, runs in groups.items():
        cells = []
        for name in names:
            found = [r["explainers"][name]["all"] for r in runs if name in r["explainers"]]
            cells.append(" / ".join(f"{np.mean([m[e] for m in found]):.3f}" for e in ("L2", "cosine", "NormDiff"))
                         if found else "-")
        mean.append(f"| {group}-s* ({len(runs)}) | " + " | ".join(cells) + " |")
    lines += ["", *mean]
    per = table_head("Per concept (the edited aspect), L2 / cosine distance / NormDiff (lower is better); "
                     "a concept is won when what-if beats both approx and s-learner on all three.",
                     ["model", "explainer", *ASPECTS])
    for r in results.values():
        explainers = r["explainers"]
        for name in (n for n in names if n in explainers and n.split("@")[0] not in ("random", "zero")):
            m = explainers[name]
            per.append(f"| {r['model']} | {name} | " + " | ".join(
                f"{m[f'concept {c}']['L2']:.3f} / {m[f'concept {c}']['cosine']:.3f} / {m[f'concept {c}']['NormDiff']:.3f}"
                for c in ASPECTS) + " |")
        if "what-if" in explainers:
            won = [c for c in ASPECTS if all(explainers["what-if"][f"concept {c}"][e] < explainers[b][f"concept {c}"][e]
                                             for b in ("approx", "s-learner") for e in ("L2", "cosine", "NormDiff"))]
            per.append(f"| {r['model']} | concepts won | {len(won)} of {len(ASPECTS)}: {', '.join(won) or 'none'} | | | |")
    return "\n".join(lines) + "\n\n" + "\n".join(per) + "\n"


def _key(model: str) -> str:
    """A model's results key: its folder, and its label temperature when calibrated (the probabilities differ)."""
    t = (json.loads((Path(model) / "config.json").read_text()).get("calibration") or {}).get("temperature")
    return model if t is None else f"{model} (T {t:.2f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", required=True, help="model folders trained on CEBaB")
    parser.add_argument("--data-dir", help="the folder holding cebab/ (default: ../shared/data or $SPARSECBM_DATA_DIR)")
    parser.add_argument("--seed", type=int, default=0, help="the random explainer's draw")
    parser.add_argument("--split", choices=["test", "dev"], default="test", help="whose pairs (dev: for choosing)")
    parser.add_argument("--what-if-shift", nargs="*", type=float, default=[],
                        help="what-if at each of these shares of the value shifts (default: the library's)")
    parser.add_argument("--out", default="benchmarks/results")
    args = parser.parse_args()
    shifts = tuple(args.what_if_shift)
    planned = {_key(model): (lambda m=model: run(m, args.data_dir, args.seed, args.split, shifts)) for model in args.models}
    name = "cebab_explain" + ("" if args.split == "test" else f"-{args.split}") + ("-shifts" if shifts else "")
    run_missing(Path(args.out), name, planned, markdown)


if __name__ == "__main__":
    main()
