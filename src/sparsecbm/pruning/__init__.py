"""Concept-induced sparsity mining: a gradual, per-concept mask for the backbone.

For each pruning step t = 1..T the target sparsity follows the cubic schedule
``s_t = s_f + (s_i - s_f)(1 - t/T)^3`` (s_i = 0). For every concept, each
still-kept weight is scored (``obs``: second-order; ``magnitude``; ``wanda``),
already-pruned weights score -inf, and the top ``(1 - s_t)`` fraction is kept,
globally across layers (``scope="global"``) or within each weight matrix
(``scope="layer"``). Between steps the caller fine-tunes the shared weights
under the current masks.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

import torch

from ..data import Split
from ..settings import SettingError, setting
from . import magnitude, obs, wanda

if TYPE_CHECKING:
    from ..interfaces import ClassifierLike as Classifier

log = logging.getLogger(__name__)

PRUNERS = {"obs": obs.score, "magnitude": magnitude.score, "wanda": wanda.score}
SCOPES = ("global", "layer")


@dataclass(frozen=True)
class PruneConfig:
    """Settings of the mask mining (CLI flags of the same names)."""

    # None (configs saved before 0.5 became the default) means the paper's 1 - 1/K.
    sparsity: float | None = setting(0.5, "final sparsity per concept (0.5: each concept keeps half the prunable "
                                     "weights; the paper's 1 - 1/K, 0.75 for 4 concepts, loses about a task point "
                                     "to the dense CBM: docs/decisions.md)", kind=float)
    pruner: str = setting("obs", "mask scores: obs (second-order, the default), magnitude or wanda",
                          choices=tuple(sorted(PRUNERS)))
    fisher_grads: int = setting(64, "m: mini-batch gradients per concept and step (oBERT: 1024)", metavar="M")
    fisher_batch_size: int = setting(8, "examples per gradient (and per calibration batch)")
    grad_chunk: int = setting(16, "gradients per batched Fisher update (memory: chunk x #weights x 4 B)")
    block_size: int = setting(50, "B: entries per Fisher block (oBERT: 50)", metavar="B")
    damp: float = setting(1e-7, "lambda of the dampened Fisher (oBERT: 1e-7)", metavar="LAMBDA")
    fisher_memory_gb: float = setting(4.0, "memory for Fisher blocks; larger backbones are scored in groups of "
                                      "weights")
    prune_steps: int = setting(3, "T: steps of the cubic schedule")
    scope: str = setting("global", "rank weights across all layers, or within each matrix", choices=SCOPES)
    calibration: int = setting(128, "wanda: calibration texts per concept")
    finetune_epochs: float = setting(1.0, "fine-tuning between pruning steps, in epochs")
    sparse_epochs: int | None = setting(None, "epochs under the final masks, keeping the best by dev score "
                                        "(default: --epochs)", kind=int, metavar="N")
    task_term: bool = setting(True, "L_k includes CE(task); off for sequential and independent CBMs (their "
                              "concepts never see labels)", flag=False)
    mining_gamma: float | None = setting(5.0, "weight of the concept term in the mask scores' loss L_k (default 5, "
                                         "the paper's gamma; at the training --gamma of 0.5 the task term leads "
                                         "and the masks lose concept accuracy: benchmarks/experiments/sparse_recipe.py)",
                                         kind=float, metavar="GAMMA")
    distill_from: str = setting("dense", "the teacher the sparse model learns from while it is pruned and "
                                "fine-tuned: 'dense' (this run's dense CBM, or --init-from's) or a saved model's "
                                "folder (sparsecbm.training.distill)", metavar="DIR|dense")
    distill_weight: float = setting(0.0, "w: the share of the loss that is distillation, (1 - w) hard labels + "
                                    "w teacher's distributions (default 0, off: at 0.5 the SparseCBM gains about a "
                                    "task point on CEBaB dev but its intervention curve falls; "
                                    "docs/method.md#distillation)", metavar="W")
    distill_temperature: float = setting(2.0, "T: the temperature of both distributions (oBERT: 2)", metavar="T")
    distill_label: bool = setting(True, "the label head learns the teacher's label distribution too; off: the "
                                  "concepts' distributions only")
    distill_interventions: bool = setting(True, "the teacher's label distribution is read under the random "
                                          "interventions the student trains with (its head answers them); off: "
                                          "its plain distribution only")
    distill_transfer: float = setting(0.0, "p: the share of each batch's texts read as a copy with about half "
                                      "their sentences dropped, which learns the teacher's distributions alone "
                                      "(a transfer set; 0: off)", metavar="P")

    def __post_init__(self) -> None:
        if self.pruner not in PRUNERS:
            raise SettingError("pruner", f" must be one of {sorted(PRUNERS)}, got {self.pruner!r}")
        if self.scope not in SCOPES:
            raise SettingError("scope", f" must be one of {list(SCOPES)}, got {self.scope!r}")
        if self.sparsity is not None and not 0.0 < self.sparsity < 1.0:
            raise SettingError("sparsity", f" must be in (0, 1), got {self.sparsity}")
        for name in ("fisher_grads", "fisher_batch_size", "grad_chunk", "block_size", "prune_steps", "calibration"):
            if getattr(self, name) < 1:
                raise SettingError(name, f" must be at least 1, got {getattr(self, name)}")
        if not self.fisher_memory_gb > 0:
            raise SettingError("fisher_memory_gb", f" must be positive, got {self.fisher_memory_gb}")
        if not self.damp > 0:
            raise SettingError("damp", f" must be positive, got {self.damp}")
        if self.sparse_epochs is not None and self.sparse_epochs < 1:
            raise SettingError("sparse_epochs", f" must be at least 1, got {self.sparse_epochs}")
        if self.finetune_epochs < 0:
            raise SettingError("finetune_epochs", f" must not be negative, got {self.finetune_epochs}")
        if self.mining_gamma is not None and self.mining_gamma < 0:
            raise SettingError("mining_gamma", f" must not be negative, got {self.mining_gamma}")
        if not 0.0 <= self.distill_weight <= 1.0:
            raise SettingError("distill_weight", f" must be in [0, 1], got {self.distill_weight}")
        if not self.distill_temperature > 0:
            raise SettingError("distill_temperature", f" must be positive, got {self.distill_temperature}")
        if not 0.0 <= self.distill_transfer < 1.0:
            raise SettingError("distill_transfer", f" must be in [0, 1), got {self.distill_transfer}")
        if self.distill_transfer and not self.distill_weight:
            raise SettingError("distill_transfer", " needs a teacher: set distill_weight above 0", also=("distill_weight",))
        if not self.distill_from:
            raise SettingError("distill_from", " must be 'dense' or a model folder, got an empty string")

    def target(self, n_concepts: int) -> float:
        return self.sparsity if self.sparsity is not None else 1.0 - 1.0 / n_concepts


def cubic_schedule(final: float, steps: int, initial: float = 0.0) -> list[float]:
    """Sparsity after each of ``steps`` pruning steps (the last equals ``final``)."""
    return [final + (initial - final) * (1 - t / steps) ** 3 for t in range(1, steps + 1)]


def select(scores: list[torch.Tensor], current: list[torch.Tensor], sparsity: float, scope: str) -> list[torch.Tensor]:
    """New masks keeping the best-scored weights among those ``current`` keeps.

    Exactly ``round((1 - sparsity) * total)`` weights are kept (per matrix with
    ``scope="layer"``); pruned weights stay pruned. Ties are broken by
    ``torch.topk``, which is deterministic on a given device.
    """
    ranked = [torch.where(m, s.float(), torch.tensor(float("-inf"), device=s.device)) for s, m in zip(scores, current)]
    if scope == "layer":
        return [_keep_top(r.reshape(-1), round((1 - sparsity) * r.numel()), m).reshape(m.shape) for r, m in zip(ranked, current)]
    flat = torch.cat([r.reshape(-1) for r in ranked])
    keep = round((1 - sparsity) * flat.numel())
    kept = _keep_top(flat, keep, torch.cat([m.reshape(-1) for m in current]))
    return [part.reshape(m.shape) for part, m in zip(torch.split(kept, [m.numel() for m in current]), current)]


def _keep_top(scores: torch.Tensor, n: int, current: torch.Tensor) -> torch.Tensor:
    available = int(current.sum())
    if n > available:
        raise ValueError(f"cannot keep {n} weights: only {available} are still kept (sparsity may only grow)")
    mask = torch.zeros_like(scores, dtype=torch.bool)
    mask[torch.topk(scores, n, sorted=False).indices] = True
    return mask


def prune_step(clf: Classifier, split: Split, config: PruneConfig, sparsity: float, gamma: float, seed: int,
               progress: bool = False) -> None:
    """Re-mask every concept at ``sparsity`` (in place in ``clf.model.masks``)."""
    model = clf.model
    score = PRUNERS[config.pruner]
    for k, concept in enumerate(model.config.schema.concepts):
        names = list(model.masks[concept])
        current = [model.masks[concept][n] for n in names]
        scores = score(clf, k, split, config, gamma, seed + k, progress)
        new = select(scores, current, sparsity, config.scope)
        model.encoder.set_masks(concept, dict(zip(names, new)))


def mining_gamma(setting: float | None, training_gamma: float) -> float:
    """The gamma of L_k while mining: ``setting`` (``--mining-gamma``), or the training gamma
    when it is None (as for every run before that flag existed)."""
    return training_gamma if setting is None else float(setting)


def mine_masks(
    clf: Classifier,
    split: Split,
    config: PruneConfig,
    *,
    gamma: float,
    seed: int,
    finetune: Callable[[int], None] | None = None,
    progress: bool = False,
    done: int = 0,
) -> None:
    """Gradual mining to ``config.target(K)``; ``finetune(t)`` runs after each step.
    ``done`` steps already ran (a resumed run: the masks are those of step ``done``).
    The scores' L_k weighs its concept term by ``config.mining_gamma`` when set, else
    by ``gamma`` (the training one)."""
    gamma = mining_gamma(config.mining_gamma, gamma)
    schedule = cubic_schedule(config.target(len(clf.schema.concepts)), config.prune_steps)
    for t, sparsity in enumerate(schedule, start=1):
        if t <= done:
            continue
        log.info("pruning step %d/%d: %s scores, sparsity %.3f per concept", t, len(schedule), config.pruner, sparsity)
        prune_step(clf, split, config, sparsity, gamma, seed + 1000 * t, progress)
        if finetune is not None:
            finetune(t)
