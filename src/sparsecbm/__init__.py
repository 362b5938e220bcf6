"""sparsecbm: text classifiers that explain themselves through human concepts.

    >>> import sparsecbm
    >>> data = sparsecbm.load_dataset("cebab")
    >>> clf = sparsecbm.train(data, sparsecbm.TrainConfig(model="cbm", epochs=5), out="runs/cbm")
    >>> clf.evaluate(data, "test")["concepts"]["mean"]
    >>> sparsecbm.load("runs/cbm").predict(["The food was great but the waiter ignored us."])
    >>> sparse = sparsecbm.train(data, sparsecbm.TrainConfig(model="sparsecbm"), prune=sparsecbm.PruneConfig())
    >>> print(sparse.explain("Cold food, lovely staff.").describe())
    >>> sparsecbm.annotate("reviews.csv", "examples/cebab-concepts.toml").write("reviews.annotated.csv")
"""

import importlib
from typing import TYPE_CHECKING

__version__ = "0.2.0"  # the one place the version is written (pyproject.toml reads it)

# Names are imported on first use (PEP 562), so that ``import sparsecbm.cli`` and
# ``sparsecbm --help`` do not pay for torch and transformers.
_HOMES = {
    "Annotations": "annotation", "annotate": "annotation", "convert_gguf": "backbones",
    "Classifier": "classifier", "ConceptPrediction": "classifier", "Prediction": "classifier", "load": "classifier",
    "DataError": "data", "Dataset": "data", "Schema": "data", "Split": "data", "load_dataset": "data",
    "Explanation": "explanations", "explain": "explanations",
    "CBMOutput": "model", "ConceptBottleneckModel": "model", "ModelConfig": "model",
    "PruneConfig": "pruning", "TrainConfig": "training", "train": "training",
}

if TYPE_CHECKING:  # what editors and type checkers see
    from .annotation import Annotations, annotate
    from .backbones import convert_gguf
    from .classifier import Classifier, ConceptPrediction, Prediction, load
    from .data import DataError, Dataset, Schema, Split, load_dataset
    from .explanations import Explanation, explain
    from .model import CBMOutput, ConceptBottleneckModel, ModelConfig
    from .pruning import PruneConfig
    from .training import TrainConfig, train


def __getattr__(name: str):
    if name not in _HOMES:
        raise AttributeError(f"module 'sparsecbm' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_HOMES[name]}", __name__), name)
    globals()[name] = value  # found once
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_HOMES])


__all__ = [
    "Annotations",
    "CBMOutput",
    "Classifier",
    "ConceptBottleneckModel",
    "ConceptPrediction",
    "DataError",
    "Dataset",
    "Explanation",
    "ModelConfig",
    "Prediction",
    "PruneConfig",
    "Schema",
    "Split",
    "TrainConfig",
    "annotate",
    "convert_gguf",
    "explain",
    "load",
    "load_dataset",
    "train",
]
