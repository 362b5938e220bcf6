"""Value prototypes of an embedding head: each concept value's mean embedding over the
training texts whose true value it is. An intervention moves the true value's embedding
toward it (``heads.LabelHead.true_features``). Saved beside the weights as
``prototypes.safetensors``; a model saved without them intervenes with each text's own
value embeddings.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from safetensors.torch import load_file, save_file

from ..data import Split
from ..files import atomic_path

if TYPE_CHECKING:
    from ..interfaces import ClassifierLike as Classifier
    from ..model import ConceptBottleneckModel

PROTOTYPES = "prototypes.safetensors"


def fit_value_prototypes(clf: Classifier, split: Split, *, progress: bool = False) -> torch.Tensor | None:
    """Set (and return) an embedding head's value prototypes, (sum C_k, m): per concept
    value, the mean of its embedding over the texts of ``split`` (the training split) whose
    true value it is (over every text when none has it). None for other heads."""
    model = clf.model
    if not clf.config.has_concepts or not model.embedding_dim:
        return None
    out = clf.forward_texts(split.texts, progress=progress, desc="value prototypes")
    m, rows = model.embedding_dim, []
    for k, f_k in enumerate(out.features):
        size = model.concept_sizes[k]
        e = f_k[:, : size * m].reshape(len(f_k), size, m).float()
        truth = torch.as_tensor(split.concepts[:, k])
        rows += [e[truth == v, v].mean(0) if (truth == v).any() else e[:, v].mean(0) for v in range(size)]
    model.value_prototypes = torch.stack(rows)
    return model.value_prototypes


def save_prototypes(clf: Classifier, folder: str | os.PathLike) -> None:
    """Write (or, without them, remove) ``prototypes.safetensors`` in a model folder."""
    target = Path(folder) / PROTOTYPES
    if clf.model.value_prototypes is None:
        target.unlink(missing_ok=True)
        return
    with atomic_path(target) as tmp:
        save_file({"value_prototypes": clf.model.value_prototypes.detach().float().cpu().contiguous()}, str(tmp))


def load_prototypes(folder: str | os.PathLike, model: ConceptBottleneckModel) -> torch.Tensor | None:
    """The prototypes saved in a model folder for ``model``'s label head, or None when none are."""
    path = Path(folder) / PROTOTYPES
    if not path.is_file():
        return None
    try:
        prototypes = load_file(str(path))["value_prototypes"]
    except Exception as e:  # safetensors' own error, or no such tensor
        raise ValueError(f"{path}: damaged or not a prototypes file ({e})") from None
    expected = (sum(model.concept_sizes), model.embedding_dim)
    if not model.embedding_dim or tuple(prototypes.shape) != expected:
        raise ValueError(f"{path}: prototypes of shape {tuple(prototypes.shape)} do not fit this model's label head "
                         f"(expected {expected if model.embedding_dim else 'none: it has no embedding head'})")
    return prototypes
