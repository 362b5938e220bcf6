"""Resume points of a training run: everything needed to continue it exactly.

After every epoch (and every pruning step of a SparseCBM) ``train`` writes
``OUT/resume/``: ``state.safetensors`` (the current weights and masks, the
best weights so far, the optimizer's tensors and the torch RNG) and
``state.json`` (where the run stands, the optimizer's and scheduler's
settings, the Python and numpy RNG states, the training log, the settings the
run was started with). Both are written to temporary names and renamed,
``state.json`` last; it names the ``state.safetensors`` it goes with, so a
kill between the two never pairs a new state with an old file. No pickle.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from ..files import atomic_path, write_json
from ..settings import SettingError

FOLDER = "resume"
FORMAT = "sparsecbm-resume"
FORMAT_VERSION = 2  # 1: the model's state_dict keys before 0.2.0 (CHANGELOG.md); not resumable now


@dataclass
class ResumePoint:
    """Where a run stands after a finished unit of work."""

    phase: str  # "standard", "cbm", "dense", "prune" or "sparsecbm"
    done: int  # epochs (or pruning steps) of ``phase`` finished
    model: dict[str, torch.Tensor]  # current state_dict (masks included)
    best: dict[str, torch.Tensor] | None = None  # best state_dict of ``phase`` so far
    best_record: dict[str, Any] | None = None
    optimizer: dict[str, Any] | None = None  # torch state_dicts, tensors inside
    scheduler: dict[str, Any] | None = None
    rng: dict[str, Any] = field(default_factory=dict)  # from :func:`rng_state`
    history: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0
    run: dict[str, Any] = field(default_factory=dict)  # the settings and data it was started with


def rng_state(numpy_generator: np.random.Generator) -> dict[str, Any]:
    """Every random state training draws from: Python, numpy (global and the run's
    generator), torch CPU and CUDA."""
    state = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "generator": numpy_generator.bit_generator.state,
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any], numpy_generator: np.random.Generator) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    numpy_generator.bit_generator.state = state["generator"]
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save(out: Path, point: ResumePoint) -> None:
    """Write ``out/resume/`` (see the module doc)."""
    folder = out / FOLDER
    tensors: dict[str, torch.Tensor] = {}
    meta = {
        "format": FORMAT, "format_version": FORMAT_VERSION, "phase": point.phase, "done": point.done, "best_record": point.best_record,
        "history": point.history, "seconds": point.seconds, "run": point.run,
        "optimizer": _split(point.optimizer, "optimizer", tensors),
        "scheduler": _split(point.scheduler, "scheduler", tensors),
        "rng": _split(point.rng, "rng", tensors),
    }
    for prefix, state in (("model", point.model), ("best", point.best)):
        for key, value in (state or {}).items():
            tensors[f"{prefix}/{key}"] = value.detach().to("cpu").contiguous()
    meta["has_best"] = point.best is not None
    # A fresh name per write: state.json (renamed last) points at the one it belongs to.
    number = _current_number(folder) + 1
    name = f"state-{number}.safetensors"
    with atomic_path(folder / name) as tmp:
        save_file(tensors, str(tmp))
    meta["tensors"] = name
    write_json(folder / "state.json", meta)
    for old in folder.glob("state-*.safetensors"):
        if old.name != name:
            old.unlink(missing_ok=True)


def load(out: Path) -> ResumePoint:
    """The resume point in ``out/resume/``; a clear error when there is none or it is damaged."""
    folder = out / FOLDER
    path = folder / "state.json"
    if not path.is_file():
        raise SettingError("resume", f": nothing to resume in {out} (no {FOLDER}/state.json: the run finished, "
                           "or never wrote its first epoch)")
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
        if meta.get("format") != FORMAT:
            raise ValueError(f"format {meta.get('format')!r}")
        tensors = load_file(str(folder / meta["tensors"]))
    except Exception as e:  # JSON, safetensors' own error, a missing file or key
        raise ValueError(f"{folder}: damaged resume point ({type(e).__name__}: {e})") from None
    if meta.get("format_version", 1) != FORMAT_VERSION:
        raise ValueError(f"{folder}: a resume point of another sparsecbm version (format {meta.get('format_version', 1)}, "
                         f"this one reads {FORMAT_VERSION}); start the run again without --resume")
    model = {k.split("/", 1)[1]: v for k, v in tensors.items() if k.startswith("model/")}
    best = {k.split("/", 1)[1]: v for k, v in tensors.items() if k.startswith("best/")} if meta["has_best"] else None
    return ResumePoint(
        phase=meta["phase"], done=meta["done"], model=model, best=best, best_record=meta["best_record"],
        optimizer=_join(meta["optimizer"], tensors), scheduler=_join(meta["scheduler"], tensors),
        rng=_join(meta["rng"], tensors), history=meta["history"], seconds=meta["seconds"], run=meta["run"],
    )


def remove(out: Path) -> None:
    """Drop the resume point of a finished run (it would only waste disk)."""
    folder = out / FOLDER
    if folder.is_dir():
        for f in folder.iterdir():
            f.unlink(missing_ok=True)
        folder.rmdir()


def _current_number(folder: Path) -> int:
    numbers = [int(p.stem.split("-")[1]) for p in folder.glob("state-*.safetensors") if p.stem.split("-")[1].isdigit()]
    return max(numbers, default=0)


# Nested states (lists, tuples, dicts with int keys, numpy arrays, tensors) as JSON
# plus named tensors: a tensor or array becomes {"tensor": name}, marked types keep their type.


def _split(obj: Any, name: str, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(obj, torch.Tensor):
        tensors[name] = obj.detach().to("cpu").contiguous()
        return {"__tensor__": name}
    if isinstance(obj, np.ndarray):  # numpy's RNG keys are uint32, which safetensors may not take
        tensors[name] = torch.from_numpy(np.ascontiguousarray(obj, dtype=np.int64 if obj.dtype.kind == "u" else None))
        return {"__array__": [name, obj.dtype.str]}
    if isinstance(obj, dict):
        return {"__dict__": [[_split(k, f"{name}.k{i}", tensors), _split(v, f"{name}.{i}", tensors)]
                             for i, (k, v) in enumerate(obj.items())]}
    if isinstance(obj, tuple):
        return {"__tuple__": [_split(v, f"{name}.{i}", tensors) for i, v in enumerate(obj)]}
    if isinstance(obj, list):
        return [_split(v, f"{name}.{i}", tensors) for i, v in enumerate(obj)]
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    raise TypeError(f"cannot store a {type(obj).__name__} in a resume point ({name})")


def _join(obj: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(obj, list):
        return [_join(v, tensors) for v in obj]
    if isinstance(obj, dict):
        (tag, value), = obj.items()
        if tag == "__tensor__":
            return tensors[value]
        if tag == "__array__":
            return tensors[value[0]].numpy().astype(np.dtype(value[1]))
        if tag == "__tuple__":
            return tuple(_join(v, tensors) for v in value)
        if tag == "__dict__":
            return {_join(k, tensors): _join(v, tensors) for k, v in value}
    return obj
