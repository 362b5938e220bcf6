"""Training: one loop for every model kind, the best checkpoint by dev score.

The backbone and the heads get separate AdamW learning rates. With the joint
loss at the paper's gamma = 5 and one small rate for everything, the 12 -> 5
classifier on sigmoid activations barely moves and task accuracy stays near
chance (docs/method.md, "The SparseCBM pipeline"): Adam moves a weight about one learning rate per step,
and a classifier on (0, 1) activations needs weights of several units. The
defaults (gamma 0.5, backbone lr 1e-4, head lr 5e-2) come from the recipe
sweep (benchmarks/experiments/recipe.py, docs/decisions.md).

The package: ``config`` (``TrainConfig``), ``run`` (one run's folder, device,
seeds and resume checks), ``epochs`` (the loop and the best-epoch fit),
``pipeline`` (``train``) and ``checkpoint`` (resume points).
"""

from .config import CBM_MODES, PRECISIONS, SELECT, SPEED_ONLY, TrainConfig, acting_settings
from .epochs import batch_share, group_by_length, make_optimizer, train_epoch
from .pipeline import fit_missing_value_shifts, fit_value_prototypes, new_classifier, train
from .run import Run

__all__ = [
    "fit_missing_value_shifts",
    "fit_value_prototypes",
    "CBM_MODES", "PRECISIONS", "SELECT", "SPEED_ONLY", "Run", "TrainConfig", "acting_settings", "batch_share",
    "group_by_length", "make_optimizer", "new_classifier", "train", "train_epoch",
]
