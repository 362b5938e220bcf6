"""Explanations of one prediction at three levels, and the decision pathway.

- Concept level (docs/explanations.md): each concept's predicted value, its
  activation ``a_k = sigmoid(logits_k)`` and its contribution to the
  predicted label ``y``, ``phi_{y,k} . a_k``. The label's logit is the sum of
  the contributions plus the classifier bias (Eq. 3), so the contributions
  say exactly how much each concept pushed the label.
- Token level (:mod:`sparsecbm.word_scores`): per concept, a score for every word
  read, from the gradient of that concept's predicted logit with respect to the
  input token embeddings, taken through the concept's own subnetwork (the dense
  backbone for a CBM). Word pieces are summed back into words; special tokens get no score.
- Subnetwork level (SparseCBM): per concept the kept fraction of every weight
  matrix, a downsampled heatmap of its mask, and the pairwise Jaccard overlap.

``Explanation.to_dict()`` is the stable JSON form (docs/explanations.md); the
rendering to HTML and PNG lives in :mod:`sparsecbm.report`.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from tqdm.auto import tqdm

from .data.batching import check_texts
from .data.reading import is_blank
from .files import atomic_path
from .interventions.oracle import what_if
from .masks import summary as masks_summary
from .predictions import WhatIf, what_if_dict, what_if_line
from .word_scores import METHODS, SIGNED, token_scores, words

if TYPE_CHECKING:
    from .interfaces import ClassifierLike as Classifier

JSON_VERSION = 1
HEATMAP_CELLS = 16  # a mask heatmap is at most this many cells a side


@dataclass(frozen=True)
class WordScore:
    text: str
    score: float
    start: int  # character offsets in the explained text
    end: int


@dataclass(frozen=True)
class ConceptExplanation:
    name: str
    value: str  # the predicted value
    probability: float  # softmax over the concept's values
    activation: float  # a_k of the predicted value (sigmoid of its logit)
    activations: dict[str, float]
    contribution: float  # concept k's term of the predicted label y's logit (phi_{y,k} . a_k with a soft head)
    contributions: dict[str, float]  # per value: its part of the term (phi_{y,k,v} a_{k,v} with a soft head)
    words: tuple[WordScore, ...] = ()  # every word read, in text order (empty without a token method)

    def top_words(self, n: int = 5) -> list[WordScore]:
        return sorted(self.words, key=lambda w: -w.score)[:n]


@dataclass(frozen=True)
class Explanation:
    """One text's prediction, explained. ``concepts`` are ranked by |contribution|."""

    text: str
    label: str
    probabilities: dict[str, float]
    bias: float  # classifier bias of the predicted label
    concepts: tuple[ConceptExplanation, ...]
    method: str | None  # token-score method, None when token scores were not asked for
    truncated: bool = False  # the text was longer than the model's max length; later words were not read
    subnetworks: dict[str, Any] | None = field(default=None, repr=False)
    side: float | None = None  # the side channel's part of the label's logit (None: the model has none)
    values_label: str | None = None  # the label the predicted concept values alone give (no nuance, no side channel)
    concept_share: float | None = None  # share of the label's logit carried by the named concept values
    # Per concept, per value other than the predicted one: the label were the concept that value.
    what_if: dict[str, dict[str, WhatIf]] = field(default_factory=dict)

    @property
    def logit(self) -> float:
        """The predicted label's logit: concept contributions + side channel + bias."""
        return sum(c.contribution for c in self.concepts) + (self.side or 0.0) + self.bias

    def decision_sentence(self) -> str:
        """How much the concepts decide, as sentences (figures and pages)."""
        pushes = sum(c.contribution for c in self.concepts)
        text = f"The logit of label {self.label!r}, {self.logit:.2f}, = the concepts' pushes {pushes:+.2f}"
        if self.side is not None:
            text += f" + the side channel, not explained by the concepts, {self.side:+.2f}"
        text += f" + a constant {self.bias:+.2f}."
        if self.concept_share is not None:
            text += f" The concept values carry {100 * self.concept_share:.0f}% of it."
        if self.values_label is not None and self.values_label != self.label:
            text += f" The concept values alone would give label {self.values_label!r}."
        return text

    def decision_lines(self) -> list[str]:
        """How much the concepts decide, in words: the side channel, the constant, and the
        label the concept values alone would give when it differs."""
        lines = []
        if self.side is not None:
            lines.append(f"not explained by the concepts (side channel): {self.side:+.2f}")
        lines.append(f"a constant {self.bias:+.2f}; the label's logit {self.logit:.2f} is the sum")
        if self.concept_share is not None:
            lines.append(f"the concept values carry {100 * self.concept_share:.0f}% of it")
        if self.values_label is not None and self.values_label != self.label:
            lines.append(f"the concept values alone would give label {self.values_label!r}")
        return lines

    @property
    def signed(self) -> bool:
        """Whether the word scores have a sign (see :data:`SIGNED`)."""
        return bool(self.method and SIGNED[self.method])

    def describe(self, words: int = 3) -> str:
        """The pathway in words, for a person."""
        p = self.probabilities[self.label]
        lines = [f"text: {self.text!r}", f"predicted label {self.label!r} ({100 * p:.0f}%), because:"]
        for c in self.concepts:
            verb = "pushed toward" if c.contribution >= 0 else "pushed against"
            line = f"  {c.name} = {c.value} ({100 * c.probability:.0f}%) {verb} it by {abs(c.contribution):.2f}"
            if c.words:
                line += "; read from: " + ", ".join(repr(w.text) for w in c.top_words(words))
            lines.append(line)
            if self.what_if.get(c.name):
                lines.append(f"    had the text said another value, the label would be: {what_if_line(self.what_if[c.name])}")
        lines += [f"  {line}" for line in self.decision_lines()]
        if self.truncated:
            lines.append("  note: the text is longer than the model reads; it was cut and later words were not read")
        return "\n".join(lines)

    def to_dict(self, subnetworks: bool = True) -> dict[str, Any]:
        d = {
            "version": JSON_VERSION,
            "text": self.text,
            "label": self.label,
            "probabilities": dict(self.probabilities),
            "bias": self.bias,
            "side": self.side,
            "logit": self.logit,
            "values_label": self.values_label,
            "concept_share": self.concept_share,
            "method": self.method,
            "signed": self.signed,
            "truncated": self.truncated,
            "concepts": [
                {
                    "name": c.name,
                    "value": c.value,
                    "probability": c.probability,
                    "activation": c.activation,
                    "activations": dict(c.activations),
                    "contribution": c.contribution,
                    "contributions": dict(c.contributions),
                    "tokens": [{"text": w.text, "score": w.score, "start": w.start, "end": w.end} for w in c.words],
                }
                for c in self.concepts
            ],
        }
        d["what_if"] = what_if_dict(self.what_if)
        if subnetworks:
            d["subnetworks"] = self.subnetworks
        return d


# ---------------------------------------------------------------- subnetworks


def _heatmap(mask: torch.Tensor, cells: int = HEATMAP_CELLS) -> list[list[float]]:
    """Kept fraction of the mask in a grid of at most ``cells`` x ``cells`` (near-equal bins)."""
    m = mask.detach().cpu().numpy().reshape(mask.shape[0], -1)
    rows = np.linspace(0, m.shape[0], min(cells, m.shape[0]) + 1).astype(int)
    cols = np.linspace(0, m.shape[1], min(cells, m.shape[1]) + 1).astype(int)
    sums = np.add.reduceat(np.add.reduceat(m.astype(np.int32), rows[:-1], axis=0), cols[:-1], axis=1)
    pooled = sums / np.outer(np.diff(rows), np.diff(cols))
    return [[round(float(v), 4) for v in row] for row in pooled]


def subnetworks(clf: Classifier, heatmaps: bool = True) -> dict[str, Any] | None:
    """Per concept: overall and per-matrix kept fraction, mask heatmaps; pairwise Jaccard.

    Cached on the classifier until any mask changes (in place or replaced)."""
    masks = clf.model.masks
    if masks is None:
        return None
    return clf.cache.get("subnetworks", [m for per in masks.values() for m in per.values()],
                         lambda: _subnetworks(masks, heatmaps), heatmaps)


def _subnetworks(masks, heatmaps: bool) -> dict[str, Any]:
    base = masks_summary(masks)  # sparsity per concept and matrix, pairwise Jaccard
    concepts = {}
    for c, per in masks.items():
        entry: dict[str, Any] = {
            "kept": 1.0 - base["concepts"][c]["sparsity"],
            "layers": {n: 1.0 - s for n, s in base["concepts"][c]["layers"].items()},
        }
        if heatmaps:
            entry["heatmaps"] = {n: _heatmap(m) for n, m in per.items()}
        concepts[c] = entry
    return {"concepts": concepts, "jaccard": base["jaccard"]}


# ---------------------------------------------------------------- the explanation


def explain(
    clf: Classifier,
    text: str,
    method: str | None = "grad",
    *,
    steps: int = 20,
    subnetwork_level: bool = True,
    heatmaps: bool = True,
) -> Explanation:
    """Explain one text's prediction at the concept, token and subnetwork levels.

    ``method`` is the token-score method (``grad``, ``grad_x_input`` or
    ``integrated_gradients``; None skips the token level). The subnetwork level
    exists for a SparseCBM only.
    """
    if isinstance(text, str) and is_blank(text):
        raise ValueError("the text to explain is empty (nothing but spaces or invisible characters)")
    (text,) = check_texts([text])
    if not clf.model.config.has_concepts:
        raise ValueError("a Standard model has no concepts to explain its label with")
    if method is not None and method not in METHODS:
        raise ValueError(f"method must be one of {list(METHODS)}, got {method!r}")
    model = clf.model
    schema = clf.schema
    enc = words(clf, text)
    if method is None:
        out = clf.forward_texts([text])
        logits, features = list(out.concept_logits), out.features
        scores: list[np.ndarray | None] = [None] * len(logits)
    else:
        # Concept k's logits (and features) come out of its own gradient pass: no second forward.
        outputs, scores = [], []
        for k in range(len(schema.concepts)):
            s, ok = token_scores(clf, enc, k, None, method, steps=steps, features=True)
            outputs.append(ok)
            scores.append(s)
        logits = [o.logits for o in outputs]
        features = tuple(o.features for o in outputs) if model.head.has_features else ()
    activations = torch.sigmoid(torch.cat(logits, dim=1))
    with torch.inference_mode(), model.evaluating():
        parts = model.head.logit_parts(activations.to(clf.device), tuple(f.to(clf.device) for f in features))
    probs = clf.label_probabilities(clf.read_label(activations, features))[0]
    y = int(parts.label[0])
    spans = enc.spans
    word_texts = enc.texts(text)
    concepts = []
    for k, (name, values) in enumerate(zip(schema.concepts, schema.concept_values)):
        cols = model.head.concept_slice(k)
        a = activations[0, cols]
        with torch.inference_mode(), model.evaluating():
            per_value = model.head.value_terms(k, a.to(clf.device), features[k][0].to(clf.device) if features else None, y)
        p = logits[k][0].softmax(-1)
        v = int(p.argmax())
        ws = ()
        if scores[k] is not None:
            ws = tuple(WordScore(t, float(s), a_, b_) for t, s, (a_, b_) in zip(word_texts, scores[k], spans))
        concepts.append(ConceptExplanation(
            name=name,
            value=values[v],
            probability=float(p[v]),
            activation=float(a[v]),
            activations=dict(zip(values, map(float, a))),
            contribution=float(parts.values[0, k] + parts.nuance[0, k]),
            contributions=dict(zip(values, per_value)),
            words=ws,
        ))
    concepts.sort(key=lambda c: -abs(c.contribution))
    return Explanation(
        text=text,
        label=schema.labels[y],
        probabilities=dict(zip(schema.labels, map(float, probs))),
        bias=float(parts.bias[0]),
        concepts=tuple(concepts),
        method=method,
        truncated=enc.truncated,
        subnetworks=subnetworks(clf, heatmaps) if subnetwork_level else None,
        side=float(parts.side[0]) if model.config.residual else None,
        values_label=schema.labels[int(parts.values_label[0])],
        concept_share=float(parts.share[0]),
        what_if=what_if(clf, activations, features)[0],
    )


def explain_many(
    clf: Classifier,
    texts: list[str],
    path: str | os.PathLike,
    method: str | None = "grad",
    *,
    steps: int = 20,
    progress: bool = True,
) -> int:
    """Explain every text into one JSONL file (a line per text, in order, with
    its ``index``; the input-independent subnetwork level is left out: see
    ``sparsecbm masks --json``). Written to a temporary name, then renamed.
    Returns the number of lines."""
    texts = check_texts(texts)
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        for i, text in enumerate(tqdm(texts, desc="explain", disable=not progress)):
            e = explain(clf, text, method, steps=steps, subnetwork_level=False)
            f.write(json.dumps({"index": i, **e.to_dict(subnetworks=False)}, ensure_ascii=False) + "\n")
    return len(texts)
