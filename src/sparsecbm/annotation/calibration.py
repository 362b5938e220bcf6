"""Calibration on a few labelled rows: per concept, the zero-label rule or a small classifier.

With 50-200 rows whose concept values a person gave, two classifiers are fitted:

- per concept, a standardised logistic regression over :class:`~.scoring.ConceptScores` features;
- for all concepts together, a logistic regression from the deciding clause's embedding to the value
  it states (:class:`ClausePolarity`): values are matched by name across concepts (Positive,
  Negative, ...), so a hundred rows give it a few hundred clauses. Whether a text mentions a
  concept stays the zero-label rule's call.

Each is measured by cross-validation on the labelled rows (never on rows it was fitted to),
beside the zero-label rule's agreement on the same rows; :func:`calibrate` keeps, per concept,
whichever held out best, and reports all three so the user sees what calibration bought.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import KFold, StratifiedKFold
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from .scoring import ConceptScores

REGULARISATION = 0.3  # inverse L2 strength: few rows, correlated features (chosen on CEBaB dev)
POLARITY_REGULARISATION = 3.0  # inverse L2 strength of the clause classifier (unit-length embeddings; CEBaB dev)
FOLDS = 5


@dataclass
class Calibrator:
    """One concept's classifier, or the one value every labelled row had."""

    model: object | None
    constant: int | None = None

    def predict(self, features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(value index, confidence) per row."""
        if self.model is None:
            return np.full(len(features), self.constant), np.ones(len(features), dtype=np.float32)
        proba = self.model.predict_proba(features)
        classes = self.model.classes_
        return classes[proba.argmax(1)].astype(np.int64), proba.max(1).astype(np.float32)


def _classifier():
    return make_pipeline(StandardScaler(), LogisticRegression(C=REGULARISATION, max_iter=5000))


def fit_calibrator(features: np.ndarray, labels: np.ndarray, *, seed: int = 0) -> tuple[Calibrator, float | None]:
    """Fit on all labelled rows; return it with its cross-validated agreement (None when the
    rows are too few to hold any out: under 2 per fold)."""
    present = np.unique(labels)
    if len(present) == 1:
        return Calibrator(None, int(present[0])), None
    agreement = None
    if len(labels) >= 2 * FOLDS:
        counts = np.bincount(labels)
        folds = (StratifiedKFold(FOLDS, shuffle=True, random_state=seed) if counts[present].min() >= FOLDS
                 else KFold(FOLDS, shuffle=True, random_state=seed))
        predicted = np.empty(len(labels), dtype=np.int64)
        for train, test in folds.split(features, labels):
            predicted[test] = _fold_predict(features, labels, train, test)
        agreement = float(np.mean(predicted == labels))
    return Calibrator(_classifier().fit(features, labels)), agreement


def _fold_predict(features: np.ndarray, labels: np.ndarray, train: np.ndarray, test: np.ndarray) -> np.ndarray:
    values = np.unique(labels[train])
    if len(values) == 1:  # a fold whose training part saw one value predicts it
        return np.full(len(test), values[0])
    return _classifier().fit(features[train], labels[train]).predict(features[test])


class ClausePolarity:
    """The value a deciding clause states, read from its embedding, one classifier for every
    concept; ``mentioned[k]`` names concept k's mentioned values (its "not mentioned" is not
    learned here: the zero-label rule decides it)."""

    def __init__(self, model, mentioned: list[tuple[str, ...]]) -> None:
        self.model, self.mentioned = model, mentioned

    @classmethod
    def fit(cls, scores: list[ConceptScores], gold: np.ndarray, mentioned: list[tuple[str, ...]]
            ) -> "ClausePolarity | None":
        """Fit on every (labelled row, concept) whose person-given value is a mentioned one and
        whose text has a deciding clause; None without clause embeddings or two values to tell apart."""
        clauses, names = [], []
        for k, s in enumerate(scores):
            if s.clause is None:
                return None
            rows = np.flatnonzero((gold[:, k] < len(mentioned[k])) & (s.values < len(mentioned[k])))
            clauses.append(s.clause[rows])
            names += [mentioned[k][g] for g in gold[rows, k]]
        if len(set(names)) < 2:
            return None
        model = LogisticRegression(C=POLARITY_REGULARISATION, max_iter=5000).fit(np.concatenate(clauses), names)
        return cls(model, mentioned)

    def predict(self, k: int, scores: ConceptScores) -> tuple[np.ndarray, np.ndarray]:
        """(value index, confidence) per text for concept k: texts the rule found mentioning k get
        the classifier's value among k's mentioned values; the others keep the rule's."""
        values, confidence = scores.values.copy(), scores.confidence.copy()
        classes = list(self.model.classes_)
        columns = [classes.index(v) if v in classes else None for v in self.mentioned[k]]
        said = np.flatnonzero(values < len(columns))
        if not len(said) or all(c is None for c in columns):
            return values, confidence
        proba = self.model.predict_proba(scores.clause[said])
        p = np.stack([proba[:, c] if c is not None else np.zeros(len(said)) for c in columns], 1)
        p /= p.sum(1, keepdims=True).clip(1e-12)
        values[said] = p.argmax(1)
        confidence[said] = scores.mention[said] * p.max(1)
        return values, confidence


def _polarity_held_out(scores: list[ConceptScores], gold: np.ndarray, mentioned: list[tuple[str, ...]],
                       seed: int) -> np.ndarray | None:
    """(K,) cross-validated agreement of :class:`ClausePolarity` on the labelled rows, or None."""
    if len(gold) < 2 * FOLDS or scores[0].clause is None:
        return None
    predicted = np.stack([s.values for s in scores], 1).copy()
    for train, test in KFold(FOLDS, shuffle=True, random_state=seed).split(gold):
        polarity = ClausePolarity.fit([s.take(train) for s in scores], gold[train], mentioned)
        if polarity is not None:
            for k, s in enumerate(scores):
                predicted[test, k] = polarity.predict(k, s.take(test))[0]
    return (predicted == gold).mean(0)


def calibrate(labelled: list[ConceptScores], gold: np.ndarray, target: list[ConceptScores],
              mentioned: list[tuple[str, ...]], *, seed: int = 0
              ) -> tuple[np.ndarray, np.ndarray, dict[int, dict[str, Any]]]:
    """Values and confidences (n, K) for the ``target`` texts, and per concept index the
    agreement record: the zero-label rule's on the labelled rows, each classifier's held out,
    and which was used (the best held out; the zero-label rule wins ties, it fits nothing)."""
    values = np.stack([s.values for s in target], 1).copy()
    confidence = np.stack([s.confidence for s in target], 1).copy()
    polarity = ClausePolarity.fit(labelled, gold, mentioned)
    polarity_cv = _polarity_held_out(labelled, gold, mentioned, seed) if polarity is not None else None
    record = {}
    for k, scores in enumerate(labelled):
        zero = float(np.mean(scores.values == gold[:, k]))
        calibrator, cv = fit_calibrator(scores.features, gold[:, k], seed=seed)
        held = {"zero-label": zero, "calibrated": cv,
                "clause polarity": None if polarity_cv is None else float(polarity_cv[k])}
        used = max((name for name, a in held.items() if a is not None), key=lambda name: held[name])
        if used == "calibrated":
            values[:, k], confidence[:, k] = calibrator.predict(target[k].features)
        elif used == "clause polarity":
            values[:, k], confidence[:, k] = polarity.predict(k, target[k])
        record[k] = {"zero_label": round(zero, 4), "calibrated_cross_validated": None if cv is None else round(cv, 4),
                     "clause_polarity_cross_validated": None if held["clause polarity"] is None
                     else round(held["clause polarity"], 4), "used": used}
    return values, confidence, record
