"""Intervention curves (Koh et al. 2020): task accuracy as 0, 1, ..., K concepts are
set to their true values, and how much the concepts decide the label.

Setting concept k true replaces its activations ``a_k`` by the true value's:
``onehot`` (1 for the true value, 0 for the others) or ``percentile`` (the 95th
percentile of that activation column over the training texts for the true value,
the 5th for the others), then the label is read from the classifier as usual
(an embedding head reads the true value's embedding moved toward its prototype:
``heads.LabelHead.true_features``).
Orders:

- ``random``: the mean over every set of j concepts (all C(K, j) of them, exact);
- ``uncertainty``: per text, the j concepts the model is least sure of
  (lowest probability of its predicted value) first.

A curve that falls as concepts are set right says the label head reads more
than the concept values the pathway shows (leakage).
"""

from __future__ import annotations

import itertools
from typing import TYPE_CHECKING

import numpy as np
import torch

from ..data import Split
from ..outputs import ConceptOutputs
from .reports import CurvesResult, Fixes

if TYPE_CHECKING:
    from ..interfaces import ClassifierLike as Classifier

ORDERS = ("random", "uncertainty")
VALUES = ("onehot", "percentile")


def true_activations(clf: Classifier, split: Split, values: str = "onehot",
                     train_activations: torch.Tensor | None = None, train_split: Split | None = None) -> torch.Tensor:
    """(n, sum C_k): every concept's activations set to the text's true value."""
    if values not in VALUES:
        raise ValueError(f"values must be one of {list(VALUES)}, got {values!r}")
    model = clf.model
    out = torch.zeros(len(split), sum(model.concept_sizes))
    for k in range(len(clf.schema.concepts)):
        cols = model.head.concept_slice(k)
        truth = torch.as_tensor(split.concepts[:, k])
        onehot = torch.nn.functional.one_hot(truth, cols.stop - cols.start).float()
        if values == "onehot":
            out[:, cols] = onehot
            continue
        if train_activations is None or train_split is None:
            raise ValueError("values='percentile' needs the training texts' activations (train_activations, train_split)")
        high, low = _percentiles(train_activations[:, cols], torch.as_tensor(train_split.concepts[:, k]))
        out[:, cols] = onehot * high + (1 - onehot) * low
    return out


def _percentiles(activations: torch.Tensor, truth: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per value column: the 95th percentile where it is the true value, the 5th where it is not."""
    high, low = [], []
    for v in range(activations.shape[1]):
        on, off = activations[truth == v, v], activations[truth != v, v]
        high.append(float(np.percentile(on.numpy(), 95)) if len(on) else 1.0)
        low.append(float(np.percentile(off.numpy(), 5)) if len(off) else 0.0)
    return torch.tensor(high), torch.tensor(low)


def _accuracy(clf: Classifier, activations: torch.Tensor, features, labels: np.ndarray) -> np.ndarray:
    """Per text, whether the label head on these activations (and features) predicts the label."""
    return clf.read_label(activations, features).argmax(-1).numpy() == labels


def curve(clf: Classifier, split: Split, out, true: torch.Tensor, certainty: torch.Tensor, order: str) -> list[float]:
    """Task accuracy with j = 0..K concepts set true (``out``: the model's outputs on
    ``split``; ``true``: (n, sum C_k) true activations; ``certainty``: (n, K), the
    probability of each predicted value)."""
    if order not in ORDERS:
        raise ValueError(f"order must be one of {list(ORDERS)}, got {order!r}")
    model, n_concepts = clf.model, len(clf.schema.concepts)
    cols = [model.head.concept_slice(k) for k in range(n_concepts)]
    labels = np.asarray(split.labels)
    predicted, truth = out.activations, torch.as_tensor(split.concepts)

    def accuracy(chosen: torch.Tensor) -> np.ndarray:  # chosen: (n, K) bool
        a = predicted.clone()
        for k, c in enumerate(cols):
            a[:, c] = torch.where(chosen[:, k:k + 1], true[:, c], predicted[:, c])
        return _accuracy(clf, a, model.head.true_features(out.features, truth, predicted, chosen), labels)

    points = []
    for j in range(n_concepts + 1):
        if order == "random":
            accs = []
            for subset in itertools.combinations(range(n_concepts), j):
                chosen = torch.zeros(len(split), n_concepts, dtype=torch.bool)
                chosen[:, list(subset)] = True
                accs.append(accuracy(chosen).mean())
            points.append(float(np.mean(accs)))
        else:
            rank = certainty.argsort(dim=1, stable=True)  # least certain first
            chosen = torch.zeros(len(split), n_concepts, dtype=torch.bool)
            chosen.scatter_(1, rank[:, :j], True)
            points.append(float(accuracy(chosen).mean()))
    return points


def single_fixes(clf: Classifier, split: Split, out) -> Fixes:
    """Each (text, wrong concept) pair set right alone (0/1 true value), the rest as
    predicted: how many labels that fixes and how many it breaks."""
    labels = np.asarray(split.labels)
    pred = out.predicted_values()
    right = clf.read_label(out.activations, out.features).argmax(-1).numpy() == labels
    fixed = broken = pairs = 0
    for k in range(len(clf.schema.concepts)):
        rows = np.flatnonzero(pred[:, k] != split.concepts[:, k])
        if not len(rows):
            continue
        a = out.activations[rows].clone()
        cols = clf.model.head.concept_slice(k)
        a[:, cols] = torch.nn.functional.one_hot(torch.as_tensor(split.concepts[rows, k]), cols.stop - cols.start).float()
        chosen = torch.zeros(len(rows), len(clf.schema.concepts), dtype=torch.bool)
        chosen[:, k] = True
        features = clf.model.head.true_features(tuple(f[rows] for f in out.features), torch.as_tensor(split.concepts[rows]),
                                           out.activations[rows], chosen)
        now = _accuracy(clf, a, features, labels[rows])
        fixed += int((now & ~right[rows]).sum())
        broken += int((~now & right[rows]).sum())
        pairs += len(rows)
    return Fixes(pairs=pairs, fixed=fixed, broken=broken, net=(fixed - broken) / max(1, pairs))


def swap_curve(clf: Classifier, split: Split, before: list[ConceptOutputs], after: list[ConceptOutputs]) -> list[float]:
    """Task accuracy when j = 0..K concepts' outputs (``model.concept_outputs``)
    come from ``after`` instead of ``before``, the mean over every set of j concepts.
    With ``after`` the outputs once each wrong concept was rewired alone, this is the
    rewiring curve: concept k's edit moves only concept k's outputs, so rewiring a set of
    concepts is exactly their outputs swapped in."""
    labels, n_concepts = np.asarray(split.labels), len(before)
    points = []
    for j in range(n_concepts + 1):
        accs = [np.mean(clf.task_logits([after[k] if k in subset else before[k] for k in range(n_concepts)])
                        .argmax(-1).numpy() == labels) for subset in itertools.combinations(range(n_concepts), j)]
        points.append(float(np.mean(accs)))
    return points


def swap_fixes(clf: Classifier, split: Split, before: list[ConceptOutputs], after: list[ConceptOutputs],
               wrong: np.ndarray) -> Fixes:
    """Over every (text, wrong concept) pair (``wrong``: (n, K) bool), the labels fixed and
    broken when that concept alone takes its ``after`` outputs (as :func:`single_fixes`)."""
    labels = np.asarray(split.labels)
    right = clf.task_logits(before).argmax(-1).numpy() == labels
    fixed = broken = 0
    for k in range(len(before)):
        rows = wrong[:, k]
        now = clf.task_logits([after[j] if j == k else before[j] for j in range(len(before))]).argmax(-1).numpy() == labels
        fixed += int((now & ~right & rows).sum())
        broken += int((~now & right & rows).sum())
    pairs = int(wrong.sum())
    return Fixes(pairs=pairs, fixed=fixed, broken=broken, net=(fixed - broken) / max(1, pairs))


def intervention_curves(clf: Classifier, split: Split, train_split: Split | None = None, *,
                        progress: bool = False) -> CurvesResult:
    """Every order x value mode's curve on ``split``, the head fed hard predicted values,
    single-concept fixes (:func:`single_fixes`) and the concepts' share of the winning
    logit (:func:`concept_share`)."""
    if not clf.model.config.has_concepts:
        raise ValueError("intervention curves need concepts; a Standard model has none")
    out = clf.forward_texts(split.texts, progress=progress, desc="curve")
    probs = [logits.softmax(-1) for logits in out.concept_logits]
    certainty = torch.stack([p.max(-1).values for p in probs], dim=1)  # (n, K)
    train_activations = None
    if train_split is not None:
        train_activations = clf.forward_texts(train_split.texts, progress=progress, desc="train activations").activations
    curves = {}
    for values in VALUES:
        if values == "percentile" and train_split is None:
            continue
        true = true_activations(clf, split, values, train_activations, train_split)
        for order in ORDERS:
            curves[f"{order}/{values}"] = curve(clf, split, out, true, certainty, order)
    return CurvesResult(n=len(split), concepts=list(clf.schema.concepts), j=list(range(len(clf.schema.concepts) + 1)),
                        curves=curves, hard_concepts_task_accuracy=hard_concepts_accuracy(clf, split, out),
                        task_accuracy=curves["random/onehot"][0], single_fixes=single_fixes(clf, split, out),
                        concept_share=concept_share(clf, out))


def hard_concepts_accuracy(clf: Classifier, split: Split, out) -> float:
    """Task accuracy of the label head fed the predicted concept values as 0/1 (no nuance;
    the side channel, if any, as usual)."""
    return float(_accuracy(clf, clf.model.head.hard_values(out.activations), out.features, np.asarray(split.labels)).mean())


def concept_share(clf: Classifier, out) -> float:
    """The mean, over texts, of the share of the winning label's logit carried by the
    named concept *values* (what a pathway shows), rather than by the activations'
    nuance around them, the side channel or the bias (``model.head.logit_parts``):
    ``sum_k |value_k| / (sum_k |value_k| + sum_k |nuance_k| + |side| + |b_y|)``."""
    with torch.inference_mode():
        parts = clf.model.head.logit_parts(out.activations.to(clf.device), tuple(f.to(clf.device) for f in out.features))
    return float(parts.share.mean())


def plot_curves(result: CurvesResult, path) -> None:
    """Task accuracy against the number of concepts set to their true values, one line per curve."""
    from ..files import atomic_path
    from ..plotting import pyplot

    plt = pyplot()

    fig, ax = plt.subplots(figsize=(6, 4), dpi=110)
    for name, points in result.curves.items():
        ax.plot(result.j, [100 * p for p in points], "o-", label=name)
    ax.axhline(100 * result.hard_concepts_task_accuracy, color="0.5", ls=":", label="hard predicted concepts")
    ax.set_xticks(result.j)
    ax.set_xlabel("concepts set to their true value")
    ax.set_ylabel("task accuracy (%)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(f"intervention curves, {result.n} texts; concepts' share of the winning logit "
                 f"{100 * result.concept_share:.0f}%", fontsize=9)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
