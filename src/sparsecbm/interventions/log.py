"""The edit log: undo the last edit bit for bit; save and load it with the model."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from ..files import atomic_path, write_json
from .ranking import revert
from .results import Edit

if TYPE_CHECKING:
    from ..interfaces import ClassifierLike as Classifier


LOG_JSON = "interventions.json"
LOG_TENSORS = "interventions.safetensors"


def undo(clf: Classifier) -> Edit:
    """Revert the last persisted edit exactly; returns it."""
    if not clf.interventions:
        raise ValueError("there is no intervention to undo")
    edit = clf.interventions[-1]
    # Steps are undone last-first: a bit dropped at one step and grown back at a
    # later one ends where it started.
    cuts = np.cumsum(edit.step_sizes)[:-1]
    revert(clf.model, edit.concept, np.split(edit.drop.numpy(), cuts), np.split(edit.grow.numpy(), cuts))
    clf.interventions.pop()
    return edit


def save_log(clf: Classifier, path: str | os.PathLike) -> None:
    """Write the intervention log next to the model (JSON + safetensors of flipped bits)."""
    path = Path(path)
    if not clf.interventions:
        for name in (LOG_JSON, LOG_TENSORS):
            (path / name).unlink(missing_ok=True)
        return
    tensors = {}
    for i, e in enumerate(clf.interventions):
        tensors[f"{i}.drop"] = e.drop.to(torch.int64).contiguous()
        tensors[f"{i}.grow"] = e.grow.to(torch.int64).contiguous()
    with atomic_path(path / LOG_TENSORS) as tmp:
        save_file(tensors, str(tmp), metadata={"format": "sparsecbm-interventions"})
    write_json(path / LOG_JSON, {"format": "sparsecbm-interventions", "edits": [e.to_json() for e in clf.interventions]})


def load_log(path: str | os.PathLike) -> list[Edit]:
    """The intervention log of a model folder ([] when it has none); a damaged log
    gets a ValueError naming the file."""
    path = Path(path)
    if not (path / LOG_JSON).exists():
        return []
    try:
        meta = json.loads((path / LOG_JSON).read_text(encoding="utf-8"))
        edits = meta["edits"]
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError) as e:
        raise ValueError(f"{path / LOG_JSON}: damaged intervention log ({type(e).__name__}: {e})") from None
    try:
        tensors = load_file(str(path / LOG_TENSORS))
    except Exception as e:  # missing, truncated or garbled
        raise ValueError(f"{path / LOG_TENSORS}: damaged or missing ({e}); it must match {LOG_JSON}") from None
    try:
        return [Edit.from_json(d, tensors[f"{i}.drop"], tensors[f"{i}.grow"]) for i, d in enumerate(edits)]
    except (KeyError, TypeError) as e:
        raise ValueError(f"{path / LOG_JSON}: does not match {LOG_TENSORS} ({type(e).__name__}: {e})") from None
