"""Task and concept metrics (scikit-learn's accuracy and macro-F1, as fractions).

Macro-F1 is the standard one: the unweighted mean of per-class F1 over the
classes of the split's schema (a class absent from both truth and prediction
counts as F1 = 0 via ``zero_division=0``, so the number is comparable across runs).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, f1_score

from .data import Schema, Split


def scores(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> dict[str, float]:
    return {
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "macro_f1": float(
            f1_score(y_true, y_pred, labels=list(range(n_classes)), average="macro", zero_division=0)
        ),
    }


def evaluate_predictions(
    split: Split, schema: Schema, task_pred: np.ndarray, concept_pred: np.ndarray | None
) -> dict[str, Any]:
    """``{"task": {...}, "concepts": {"mean": {...}, "<name>": {...}}, "n": N}``.

    ``concept_pred`` is (n, K) predicted value indices, or None for a Standard model
    (then the result has no "concepts").
    """
    result: dict[str, Any] = {"task": scores(split.labels, task_pred, len(schema.labels))}
    if concept_pred is not None:
        per = {
            name: scores(split.concepts[:, k], concept_pred[:, k], len(values))
            for k, (name, values) in enumerate(zip(schema.concepts, schema.concept_values))
        }
        mean = {m: float(np.mean([s[m] for s in per.values()])) for m in ("accuracy", "macro_f1")}
        result["concepts"] = {"mean": mean, **per}
    result["n"] = len(split)
    return result


def concept_ceiling(train: Split, test: Split, schema: Schema) -> dict[str, float]:
    """Task scores of a logistic regression fed the *true* concepts (one-hot).

    How much of the label the named concepts can explain: a jointly trained CBM
    above this carries task information through its soft activations (leakage).
    """

    def one_hot(split: Split) -> np.ndarray:
        blocks = [np.eye(len(v))[split.concepts[:, k]] for k, v in enumerate(schema.concept_values)]
        return np.concatenate(blocks, axis=1)  # (n, sum C_k)

    clf = LogisticRegression(max_iter=2000).fit(one_hot(train), train.labels)
    return scores(test.labels, clf.predict(one_hot(test)), len(schema.labels))


def format_table(result: dict[str, Any], title: str = "", ceiling: dict[str, float] | None = None,
                 annotated: bool = False) -> str:
    """A plain-text table of an evaluation result, in percent (``annotated``: the data's concept
    values come from ``sparsecbm annotate``, not from people, and the rows say so)."""
    source = "annotated" if annotated else "true"
    rows = [("task", result["task"])]
    if "concepts" in result:
        rows += [(f"concept: {name}", s) for name, s in result["concepts"].items() if name != "mean"]
        rows.append(("concepts (mean)", result["concepts"]["mean"]))
    if ceiling is not None:
        rows.append((f"task, from {source} concepts*", ceiling))
    width = max(len(r[0]) for r in rows)
    lines = [title] if title else []
    lines.append(f"{'':<{width}}  {'accuracy %':>10}  {'macro-F1 %':>10}")
    for name, s in rows:
        lines.append(f"{name:<{width}}  {100 * s['accuracy']:>10.1f}  {100 * s['macro_f1']:>10.1f}")
    lines.append(f"n = {result['n']} examples")
    if ceiling is not None:
        lines.append("* logistic regression on the " + ("annotated concept values (not human labels)" if annotated
                     else "gold concept labels") + ": the most the named concepts explain")
    return "\n".join(lines)
