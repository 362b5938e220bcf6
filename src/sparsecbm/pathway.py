"""One prediction's decision pathway in words: concepts -> how much each pushed the label.

For a CBM the task logit of label y is ``sum_k phi_{y,k} . a_k + b_y``
(Eq. 3), so each concept's push toward the predicted label is its term
``phi_{y,k} . a_k`` (for SparseCBM, ``a_k`` comes from concept k's own
subnetwork).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .classifier import Classifier


@dataclass(frozen=True)
class ConceptStep:
    concept: str
    value: str
    probability: float
    contribution: float  # phi_{y,k} . a_k for the predicted label y


@dataclass(frozen=True)
class Pathway:
    text: str
    label: str
    label_probability: float
    bias: float
    concepts: tuple[ConceptStep, ...]  # largest absolute contribution first

    def describe(self) -> str:
        lines = [f"text: {self.text!r}", f"predicted label {self.label!r} ({100 * self.label_probability:.0f}%), because:"]
        for s in self.concepts:
            verb = "pushed toward" if s.contribution >= 0 else "pushed against"
            lines.append(
                f"  {s.concept} = {s.value} ({100 * s.probability:.0f}%) {verb} it by {abs(s.contribution):.2f}"
            )
        lines.append(f"  (plus a constant {self.bias:+.2f}; the label's logit is the sum)")
        return "\n".join(lines)


@torch.inference_mode()
def pathway(clf: Classifier, text: str) -> Pathway:
    """The pathway of one text through a CBM or SparseCBM."""
    if not clf.config.has_concepts:
        raise ValueError("a Standard model has no concepts to explain its label with")
    out = clf.forward_texts([text])
    probs = out.task_logits.softmax(-1)[0]
    y = int(probs.argmax())
    terms = clf.model.concept_terms(out.activations.to(clf.device))[0, :, y].cpu()  # (K,)
    schema = clf.schema
    steps = []
    for k, (name, values) in enumerate(zip(schema.concepts, schema.concept_values)):
        p = out.concept_logits[k][0].softmax(-1)
        steps.append(ConceptStep(name, values[int(p.argmax())], float(p.max()), float(terms[k])))
    steps.sort(key=lambda s: -abs(s.contribution))
    return Pathway(
        text=text,
        label=schema.labels[y],
        label_probability=float(probs[y]),
        bias=float(clf.model.classifier.bias[y]),
        concepts=tuple(steps),
    )
