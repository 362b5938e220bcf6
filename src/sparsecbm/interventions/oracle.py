"""The classic CBM intervention: true concept activations into the classifier."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch

from .. import heads
from ..data.batching import check_texts
from ..predictions import WhatIf

if TYPE_CHECKING:
    from ..interfaces import ClassifierLike as Classifier


def oracle(clf: Classifier, text: str, corrections: dict[str, str]) -> dict[str, Any]:
    """The classic CBM intervention: set each corrected concept's activations to
    its true value (1 for it, 0 for the others) and re-run the classifier.
    Fixes the output, not the subnetwork. Returns the label and its probabilities."""
    (text,) = check_texts([text])
    if not clf.model.config.has_concepts:
        raise ValueError("a Standard model has no concepts to intervene on")
    for concept, value in corrections.items():
        clf.schema.concept_index(concept, value)
    out = clf.forward_texts([text])
    return oracle_labels(clf, out.activations, [corrections], out.features)[0]


def oracle_labels(clf: Classifier, activations: torch.Tensor, corrections: list[dict[str, str]],
                  features=(), *, counterfactual: bool = False) -> list[dict[str, Any]]:
    """Oracle intervention on a batch of activations (n, sum C_k) (and the label head's
    ``features``, ``CBMOutput.features``): one dict of corrections per row. ``counterfactual``:
    the label for a text that *said* those values instead, the other concepts' features moved
    as they move on average between training texts with the old and new values
    (``LabelHead.counterfactual_features``), its probabilities read ``heads.WHAT_IF_SPREAD`` times
    less sure than the text's own."""
    schema = clf.schema
    a = activations.clone()
    chosen = torch.zeros(len(a), len(schema.concepts), dtype=torch.bool)
    values = torch.zeros(len(a), len(schema.concepts), dtype=torch.long)
    for i, corr in enumerate(corrections):
        for concept, value in corr.items():
            k = schema.concepts.index(concept)
            cols = clf.model.head.concept_slice(k)
            chosen[i, k], values[i, k] = True, schema.concept_values[k].index(value)
            a[i, cols] = torch.nn.functional.one_hot(values[i, k], cols.stop - cols.start).to(a.dtype)
    head = clf.model.head
    features = (head.counterfactual_features if counterfactual else head.true_features)(tuple(features), values,
                                                                                          activations, chosen)
    logits = clf.read_label(a, features)
    probs = clf.label_probabilities(logits / heads.WHAT_IF_SPREAD if counterfactual else logits)
    return [{"label": schema.labels[int(p.argmax())], "probabilities": dict(zip(schema.labels, map(float, p)))}
            for p in probs]


def what_if(clf: Classifier, activations: torch.Tensor, features=()) -> list[dict[str, dict[str, WhatIf]]]:
    """Per text (a row of ``activations``, with the head's ``features``), per concept, per value
    other than the predicted one: the label the model would give had the text said that value,
    the other concepts as predicted (:func:`oracle_labels` with ``counterfactual=True``: their
    features moved as a change of that value moves them on the training texts; one head
    evaluation each)."""
    schema = clf.schema
    rows, corrections = [], []
    for i in range(len(activations)):
        for k, (concept, values) in enumerate(zip(schema.concepts, schema.concept_values)):
            predicted = int(activations[i, clf.model.head.concept_slice(k)].argmax())
            for v, value in enumerate(values):
                if v != predicted:
                    rows.append(i)
                    corrections.append({concept: value})
    idx = torch.tensor(rows, dtype=torch.long)
    labels = (oracle_labels(clf, activations[idx], corrections, tuple(f[idx] for f in features), counterfactual=True)
              if rows else [])
    out: list[dict[str, dict[str, WhatIf]]] = [{c: {} for c in schema.concepts} for _ in range(len(activations))]
    for i, correction, r in zip(rows, corrections, labels):
        [(concept, value)] = correction.items()
        out[i][concept][value] = WhatIf(label=r["label"], probabilities=r["probabilities"])
    return out
