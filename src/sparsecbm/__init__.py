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

__version__ = "0.1.0"

from .annotation import Annotations, annotate
from .backbones import convert_gguf
from .classifier import Classifier, ConceptPrediction, Prediction, load
from .data import DataError, Dataset, Schema, Split, load_dataset
from .explanations import Explanation, explain
from .model import CBMOutput, ConceptBottleneckModel, ModelConfig
from .pruning import PruneConfig
from .training import TrainConfig, train

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
