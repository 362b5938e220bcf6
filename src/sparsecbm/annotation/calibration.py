"""Calibration on a few labelled rows: per concept, a small classifier over the similarity features.

With 50-200 rows whose concept values a person gave, each concept gets a standardised logistic
regression over :class:`~.scoring.ConceptScores` features. Its agreement is measured by
cross-validation on those rows (never on rows it was fitted to), beside the zero-label rule's
agreement on the same rows, so the user sees whether calibration helps before trusting it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import KFold, StratifiedKFold
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

REGULARISATION = 0.3  # inverse L2 strength: few rows, correlated features (chosen on CEBaB dev)
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

