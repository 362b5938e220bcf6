"""Intervention protocols over a data split (METHOD.md §5): NI, SI, oracle, persistent.

- :func:`per_example` (the paper's Fig. 3): for every example, each concept
  the model gets wrong is corrected to its true value by editing that concept's
  mask; the example is re-predicted and the masks restored. Concept and task
  scores with no intervention (NI), with it (SI) for each ratio, and with the
  oracle (true activations fed to the classifier).
- :func:`persistent`: edits accumulate over the corrections of one split and
  stay; a split they never saw is scored before and after (the regression
  check), and the corrected examples are re-checked at the end.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from .classifier import Classifier
from .data import Split
from .intervention import tokenize_one, revert, edit, intervene, oracle_labels, task_from
from .masks import Masks, kept, sparsity
from .metrics import evaluate_predictions


def _pred(concept_logits: list[torch.Tensor]) -> np.ndarray:
    return np.stack([l.argmax(-1).numpy() for l in concept_logits], axis=1)  # (n, K)


def _scores(clf: Classifier, split: Split, concept_logits: list[torch.Tensor]) -> dict[str, float]:
    """Summary scores of the predictions that these concept logits (n, C_k) give."""
    task = task_from(clf, concept_logits).argmax(-1).numpy()
    return _summary(evaluate_predictions(split, clf.schema, task, _pred(concept_logits)))


def _summary(result: dict[str, Any]) -> dict[str, float]:
    return {"concept_accuracy": result["concepts"]["mean"]["accuracy"], "concept_macro_f1": result["concepts"]["mean"]["macro_f1"],
            "task_accuracy": result["task"]["accuracy"], "task_macro_f1": result["task"]["macro_f1"]}


def _n_bits(clf: Classifier, ratio: float) -> int:
    masks_0 = next(iter(clf.model.masks.values()))
    return round(ratio * sum(m.numel() for m in masks_0.values()))


def per_example(
    clf: Classifier,
    split: Split,
    ratios: list[float],
    *,
    steps: int = 1,
    use_label: bool = True,
    progress: bool = True,
) -> dict[str, Any]:
    """NI, SI per ratio and oracle scores on ``split`` (every mask restored after each example)."""
    if clf.model.masks is None:
        raise ValueError(f"interventions rewire concept masks; a {clf.config.kind!r} model has none")
    schema = clf.schema
    out = clf.forward_texts(split.texts, progress=progress, desc="predict")
    logits = [l.clone() for l in out.concept_logits]
    pred = _pred(logits)
    wrong = pred != split.concepts  # (n, K)
    corrections = [{schema.concepts[k]: schema.concept_values[k][split.concepts[i, k]] for k in np.flatnonzero(wrong[i])}
                   for i in range(len(split))]
    oracle_task = np.array([schema.labels.index(o["label"]) for o in oracle_labels(clf, out.activations, corrections)])
    result: dict[str, Any] = {
        "n": len(split), "wrong_concepts": int(wrong.sum()), "examples_with_a_wrong_concept": int(wrong.any(1).sum()),
        "steps": steps, "uses_task_label": use_label,
        "NI": _scores(clf, split, logits),
        "oracle": _summary(evaluate_predictions(split, schema, oracle_task, split.concepts)),
        "SI": {},
    }
    rows = np.flatnonzero(wrong.any(1))
    for ratio in ratios:
        n = _n_bits(clf, ratio)
        new = [l.clone() for l in logits]
        fixed = 0
        for i in tqdm(rows, desc=f"intervene r={ratio:g}", disable=not progress):
            batch = tokenize_one(clf, split.texts[i])
            for k in np.flatnonzero(wrong[i]):
                concept = schema.concepts[k]
                label = int(split.labels[i]) if use_label else None
                drops, grows, new[k][i] = edit(clf, k, batch, logits[k][i], int(split.concepts[i, k]), label, n, steps,
                                               seed=int(i))
                revert(clf.model, concept, drops, grows)
                fixed += int(new[k][i].argmax()) == int(split.concepts[i, k])
        result["SI"][f"{ratio:g}"] = {**_scores(clf, split, new), "ratio": ratio, "bits_per_step": 2 * n,
                                      "corrections_fixed": fixed / max(1, int(wrong.sum()))}
    return result


def _diff_bits(a: Masks, b: Masks) -> int:
    return sum(int(np.count_nonzero(a[c][n].cpu().numpy() != b[c][n].cpu().numpy())) for c in a for n in a[c])


def persistent(
    clf: Classifier,
    edit_split: Split,
    eval_split: Split,
    ratio: float,
    *,
    steps: int = 1,
    use_label: bool = True,
    progress: bool = True,
) -> dict[str, Any]:
    """Correct every wrong concept of ``edit_split`` cumulatively (edits stay, logged
    on ``clf``); score ``eval_split`` before and after, and re-check the corrections."""
    if clf.model.masks is None:
        raise ValueError(f"interventions rewire concept masks; a {clf.config.kind!r} model has none")
    schema = clf.schema
    original = {c: {n: m.clone() for n, m in per.items()} for c, per in clf.model.masks.items()}
    eval_before = clf.evaluate(eval_split, progress=progress)
    out = clf.forward_texts(edit_split.texts, progress=progress, desc="predict")
    edit_before = _scores(clf, edit_split, list(out.concept_logits))
    wrong = _pred(list(out.concept_logits)) != edit_split.concepts
    corrected = []  # (row, k) fixed at the time of its edit
    for i in tqdm(np.flatnonzero(wrong.any(1)), desc=f"persistent edits r={ratio:g}", disable=not progress):
        for k in np.flatnonzero(wrong[i]):
            value = schema.concept_values[k][edit_split.concepts[i, k]]
            label = schema.labels[edit_split.labels[i]] if use_label else None
            r = intervene(clf, edit_split.texts[i], schema.concepts[k], value, ratio=ratio, steps=steps,
                          persist=True, label=label, seed=int(i))
            if r.fixed:
                corrected.append((int(i), int(k)))
    final = clf.forward_texts(edit_split.texts, progress=progress, desc="re-check")
    final_pred = _pred(list(final.concept_logits))
    still = sum(int(final_pred[i, k] == edit_split.concepts[i, k]) for i, k in corrected)
    edit_after = _scores(clf, edit_split, list(final.concept_logits))
    eval_after = clf.evaluate(eval_split, progress=progress)
    kept_same = all(kept(original[c]) == kept(per) for c, per in clf.model.masks.items())
    return {
        "ratio": ratio, "steps": steps, "uses_task_label": use_label,
        "edits": len(clf.interventions), "wrong_concepts": int(wrong.sum()),
        "fixed_when_edited": len(corrected), "still_fixed_at_end": still,
        "bits_changed": _diff_bits(original, clf.model.masks),
        "bits_flipped_by_edits": sum(2 * int(e.drop.numel()) for e in clf.interventions),
        "kept_counts_unchanged": kept_same,
        "sparsity": {c: sparsity(per) for c, per in clf.model.masks.items()},
        "edit_split": {"before": edit_before, "after": edit_after, "n": len(edit_split)},
        "eval_split": {"before": _summary(eval_before), "after": _summary(eval_after), "n": len(eval_split)},
    }


def plot_ratios(result: dict[str, Any], path) -> None:
    """The paper's Fig. 3: concept and task accuracy against the intervention ratio, NI and oracle as lines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .files import atomic_path

    si = sorted(result["SI"].values(), key=lambda r: r["ratio"])
    xs = [100 * r["ratio"] for r in si]
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8), dpi=110)
    for ax, key, title in ((axes[0], "concept_accuracy", "concept accuracy"), (axes[1], "task_accuracy", "task accuracy")):
        ax.plot(xs, [100 * r[key] for r in si], "o-", label="SI (mask rewiring)")
        ax.axhline(100 * result["NI"][key], color="0.4", ls="--", label="NI (no intervention)")
        ax.axhline(100 * result["oracle"][key], color="tab:green", ls=":", label="oracle (true activations)")
        ax.set_xscale("log")
        ax.set_xlabel("intervention ratio r (% of prunable weights dropped and grown)")
        ax.set_ylabel(f"{title} (%)")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle(f"per-example intervention, {result['n']} examples, {result['wrong_concepts']} wrong concepts", fontsize=10)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
