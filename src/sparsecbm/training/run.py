"""One training run's state and surroundings: its folder, device, seeds, precision, memory and dev score."""

from __future__ import annotations

import json
import logging
import random
import resource
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..classifier import Classifier
from ..files import write_text
from ..model import ConceptBottleneckModel
from ..parallel import processes
from ..pruning import PruneConfig
from ..settings import SettingError
from . import checkpoint
from .config import SPEED_ONLY, TrainConfig, acting_settings

log = logging.getLogger(__name__)


def autocast(config: TrainConfig, device: torch.device):
    """The context of a training pass: bfloat16 autocast for ``--precision bf16`` (matrix
    products in bfloat16, losses, softmax and norms in float32; the weights, their
    gradients and AdamW stay float32), nothing for fp32. Evaluation always runs in float32."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=config.precision == "bf16")


def dev_score(result: dict[str, Any], selection: str) -> float:
    """The number the best epoch is chosen by (higher is better)."""
    task = result["task"]["accuracy"]
    if "concepts" not in result or selection == "task":
        return task
    concepts = result["concepts"]["mean"]["accuracy"]
    return concepts if selection == "concepts" else (task + concepts) / 2


def pick_device(name: str) -> torch.device:
    if name == "auto":
        if processes().device is not None:  # one of several processes: Accelerate's device for it
            return processes().device
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        return torch.device(name)
    except RuntimeError:
        raise SettingError("device", f": unknown device {name!r}") from None


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def peak_memory_mb() -> float:
    """Peak resident memory of this process so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def check_out_dir(out: Path, overwrite: bool) -> None:
    if (out / "config.json").exists() and not overwrite:
        raise SettingError("out", f" {out}: already holds a model; pass overwrite or choose another folder",
                           also=["overwrite"])


def check_same_run(saved: dict[str, Any], now: dict[str, Any], out: Path) -> None:
    """A resumed run must have the settings and data it was started with (those in
    ``SPEED_ONLY`` may differ)."""
    saved, now = acting_settings(saved), acting_settings(now)
    diffs = [f"{part}.{key}: {saved.get(part, {}).get(key)!r} then, {value!r} now"
             for part in ("training", "pruning") for key, value in (now.get(part) or {}).items()
             if key not in SPEED_ONLY and (saved.get(part) or {}).get(key) != value]
    diffs += [f"{key}: {saved.get(key)!r} then, {now[key]!r} now" for key in ("init_from", "data")
              if saved.get(key) != now[key]]
    if diffs:
        raise SettingError("resume", f": {out} was started with other settings ({'; '.join(diffs)}); "
                           "resume with the same settings, or start again with overwrite", also=["overwrite"])


class Run:
    """What the phases of one training run share: settings, clock, device, log, resume points."""

    def __init__(self, config: TrainConfig, out: Path | None, progress: bool, settings: dict[str, Any]) -> None:
        self.config = config
        self.out = out
        self.procs = processes()
        self.progress = progress
        self.settings = settings
        self.device = pick_device(config.device)
        self.start = time.perf_counter()
        self.history: list[dict[str, Any]] = []
        self.rng = np.random.default_rng(config.seed)
        self.prune: PruneConfig | None = None

    def seconds(self) -> float:
        return round(time.perf_counter() - self.start, 1)

    def meta(self, best: dict[str, Any], epochs_done: int, epochs: int, head_pending: bool = False) -> dict[str, Any]:
        """What config.json says of the phase being trained: ``epochs_done`` of its ``epochs``."""
        meta = {
            "training": asdict(self.config),
            "finished": epochs_done == epochs and not head_pending,
            "epochs_done": epochs_done,
            "epochs": epochs,
            "best_epoch": best["epoch"],
            "best_dev": best["dev"],
            "wall_seconds": self.seconds(),
            "peak_memory_mb": round(peak_memory_mb(), 1),
        }
        if self.prune is not None:
            meta["pruning"] = asdict(self.prune)
        return meta

    def write_log(self) -> None:
        if self.out is not None:
            write_text(self.out / "train_log.jsonl", "".join(json.dumps(r) + "\n" for r in self.history))

    def save_point(self, phase: str, done: int, model: ConceptBottleneckModel, *, best_state=None, best=None,
                   optimizer=None, scheduler=None) -> None:
        """Write the resume point after ``done`` epochs (or pruning steps) of ``phase``."""
        if self.out is None:
            return
        checkpoint.save(self.out, checkpoint.ResumePoint(
            phase=phase, done=done, model=model.state_dict(), best=best_state, best_record=best,
            optimizer=optimizer.state_dict() if optimizer is not None else None,
            scheduler=scheduler.state_dict() if scheduler is not None else None,
            rng=checkpoint.rng_state(self.rng), history=self.history, seconds=self.seconds(), run=self.settings))

    def finish(self, clf: Classifier) -> Classifier:
        if self.out is not None:
            checkpoint.remove(self.out)
        return clf
