"""The training settings: one frozen dataclass, validated when made, and which settings a resume may change."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any

from ..backbones import DEFAULT_BACKBONE
from ..encoder import POOLINGS
from ..heads import BOTTLENECKS, check_head
from ..model import MODEL_KINDS
from ..pruning import mining_gamma
from ..settings import SettingError, setting

log = logging.getLogger(__name__)


SELECT = ("auto", "task", "concepts", "mean")
CBM_MODES = ("joint", "sequential", "independent")
PRECISIONS = ("fp32", "bf16")
# Settings that change how fast a run goes or how much memory it takes, not what it learns
# (up to float rounding): a resumed run or a stored benchmark result may differ in them.
SPEED_ONLY = frozenset({"device", "eval_batch_size", "grad_chunk", "fisher_memory_gb"})


def acting_settings(settings: dict[str, Any]) -> dict[str, Any]:
    """``settings`` (a run's ``{"training": ..., "pruning": ...}``, as saved) with each value as it
    acted, for comparing runs: a mining gamma of None, or not saved (versions before
    ``--mining-gamma``), is the training gamma; a precision not saved (versions before
    ``--precision``) is fp32. A JSON copy: tuples become lists."""
    settings = json.loads(json.dumps(settings))
    pruning, training = settings.get("pruning"), settings.get("training") or {}
    if settings.get("training") is not None:
        training.setdefault("precision", "fp32")  # versions before --precision trained in float32
        training.setdefault("intervention_prob", 0.0)  # versions before --intervention-prob trained without
        training.setdefault("bottleneck", "soft")  # and before --bottleneck / --residual, a soft head alone
        training.setdefault("residual", 0)
        training.setdefault("embedding_dim", 16)
        training.setdefault("side_dropout", 0.0)
    if pruning is not None:  # versions before --distill-weight distilled nothing
        pruning.setdefault("distill_from", "dense")
        pruning.setdefault("distill_weight", 0.0)
        pruning.setdefault("distill_temperature", 2.0)
    if pruning is not None and "gamma" in training:
        pruning["mining_gamma"] = mining_gamma(pruning.get("mining_gamma"), training["gamma"])
    return settings


@dataclass(frozen=True)
class TrainConfig:
    """Every training setting; the CLI only turns flags into one of these."""

    model: str = setting("cbm", "standard, cbm (a concept bottleneck) or sparsecbm (concept subnetworks)",
                         choices=MODEL_KINDS)
    backbone: str = setting(DEFAULT_BACKBONE, "'minilm' (default), 'mpnet' (after make mpnet), 'smollm2-135m' "
                            "(after convert-gguf), a model folder or a hub id")
    epochs: int = setting(5, "training epochs")
    batch_size: int = setting(16, "texts per training batch")
    lr: float = setting(1e-4, "backbone learning rate (the recipe sweep: docs/decisions.md)")
    head_lr: float = setting(5e-2, "learning rate of the projector, classifier and heads (larger than --lr: they start from scratch)")
    weight_decay: float = setting(0.01, "AdamW weight decay of the backbone (the heads are not decayed)")
    warmup: float = setting(0.1, "fraction of steps with a linear warm-up, then linear decay")
    max_length: int = setting(128, "tokens per text (batches pad to their longest)")
    gamma: float = setting(0.5, "weight of the concept losses (the paper's 5 starves the task head: docs/decisions.md)")
    pooling: str = setting("mean", "mean over real tokens, or the last real token (decoders)", choices=POOLINGS)
    seed: int = setting(0, "seed of every random draw")
    max_train: int | None = setting(None, "train on a seeded sample of N rows (quick runs)", kind=int, metavar="N")
    max_eval: int | None = setting(None, "score each epoch on the first N dev rows", kind=int, metavar="N")
    select: str = setting("auto", "dev score that picks the best epoch (auto: task for standard, mean of task and "
                          "concepts for a joint cbm, concepts for the others)", choices=SELECT)
    cbm_mode: str = setting("joint", "joint (default: concepts and label together), sequential (label head on the "
                            "frozen concept model's predictions) or independent (label head on gold concepts); the "
                            "last two never let the label reach the concept model (Koh et al. 2020)",
                            choices=CBM_MODES)
    intervention_prob: float | None = setting(None, "train with random interventions: each concept's activations "
                                              "are replaced by its true value (0/1) with this probability before "
                                              "the label head reads them (Concept Embedding Models' RandInt; 0: off; "
                                              "default 0.5 for a joint concept model, else 0; "
                                              "docs/interventions.md#label-heads)", kind=float, metavar="P")
    bottleneck: str | None = setting(None, "what the label head reads of each concept: embedding (a learned "
                                     "embedding per value, read from the text and mixed by the activations, as "
                                     "Concept Embedding Models), soft (its sigmoid activations, the paper's) or hard "
                                     "(its predicted value, straight-through gradient); default embedding for a joint "
                                     "concept model, else soft", choices=BOTTLENECKS, kind=str)
    residual: int = setting(0, "R unnamed side-channel numbers from the text straight to the label head, shown "
                            "in every explanation as 'not explained by the concepts' (0: none)", metavar="R")
    side_dropout: float = setting(0.0, "with --residual: the probability that a training text's side channel is "
                                  "left out, so that the concepts alone must give its label (0: off)", metavar="Q")
    embedding_dim: int = setting(16, "numbers per concept-value embedding (--bottleneck embedding)", metavar="M")
    grad_clip: float = setting(1.0, "gradient norm clipping", flag=False)
    length_groups: int = setting(0, "sort each run of G batches by text length, then shuffle the batches: less "
                                 "padding, faster epochs (0: plain random batches; default 0; docs/decisions.md)",
                                 metavar="G")
    eval_batch_size: int = setting(64, "texts per batch when scoring", flag=False)
    precision: str = setting("fp32", "bf16: training passes under bfloat16 autocast (float32 weights and "
                             "optimizer; evaluation and mask mining stay float32): faster on CPUs with AVX512-BF16 "
                             "or AMX and on GPUs", choices=PRECISIONS)
    device: str = setting("auto", "auto (cuda when present), cpu, cuda, ...")

    def __post_init__(self) -> None:
        # The label head's defaults depend on the model: the chosen head (docs/interventions.md#label-heads)
        # for a joint concept model; a Standard model has no concepts, and a sequential or independent
        # head is fitted on soft activations or gold values alone.
        joint_concepts = self.model != "standard" and self.cbm_mode == "joint"
        if self.bottleneck is None:
            object.__setattr__(self, "bottleneck", "embedding" if joint_concepts else "soft")
        if self.intervention_prob is None:
            object.__setattr__(self, "intervention_prob", 0.5 if joint_concepts else 0.0)
        if self.model not in MODEL_KINDS:
            raise SettingError("model", f" must be one of {list(MODEL_KINDS)}, got {self.model!r}")
        if self.pooling not in POOLINGS:
            raise SettingError("pooling", f" must be one of {list(POOLINGS)}, got {self.pooling!r}")
        if self.cbm_mode not in CBM_MODES:
            raise SettingError("cbm_mode", f" must be one of {list(CBM_MODES)}, got {self.cbm_mode!r}")
        if self.model == "standard" and self.cbm_mode != "joint":
            raise SettingError("cbm_mode", " applies to concept models (cbm, sparsecbm), not model standard", also=["model"])
        if self.precision not in PRECISIONS:
            raise SettingError("precision", f" must be one of {list(PRECISIONS)}, got {self.precision!r}")
        if self.select not in SELECT:
            raise SettingError("select", f" must be one of {list(SELECT)}, got {self.select!r}")
        for name in ("epochs", "batch_size", "max_length", "eval_batch_size"):
            if getattr(self, name) < 1:
                raise SettingError(name, f" must be at least 1, got {getattr(self, name)}")
        if self.length_groups < 0:
            raise SettingError("length_groups", f" must be 0 (off) or a number of batches, got {self.length_groups}")
        for name in ("max_train", "max_eval"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise SettingError(name, f" must be at least 1, got {value}")
        for name in ("lr", "head_lr"):
            if not getattr(self, name) > 0:
                raise SettingError(name, f" must be positive, got {getattr(self, name)}")
        for name in ("gamma", "weight_decay", "grad_clip"):
            if getattr(self, name) < 0:
                raise SettingError(name, f" must not be negative, got {getattr(self, name)}")
        if not 0 <= self.intervention_prob < 1:
            raise SettingError("intervention_prob", f" must be in [0, 1), got {self.intervention_prob}")
        if self.intervention_prob and self.model == "standard":
            raise SettingError("intervention_prob", " applies to concept models (cbm, sparsecbm), not model standard",
                               also=["model"])
        check_head(self.model, self.bottleneck, self.residual, self.embedding_dim)
        if not 0 <= self.side_dropout < 1:
            raise SettingError("side_dropout", f" must be in [0, 1), got {self.side_dropout}")
        if self.side_dropout and not self.residual:
            raise SettingError("side_dropout", " leaves out the side channel; it needs residual R", also=["residual"])
        if self.cbm_mode != "joint" and (self.bottleneck != "soft" or self.residual):
            raise SettingError("bottleneck", " and residual train with the concepts (cbm_mode joint); a sequential or "
                               "independent head is fitted on soft activations or gold values alone",
                               also=["residual", "cbm_mode"])
        if not 0 <= self.warmup < 1:
            raise SettingError("warmup", f" must be in [0, 1), got {self.warmup}")

    @property
    def selection(self) -> str:
        if self.select != "auto":
            return self.select
        if self.model == "standard":
            return "task"
        return "mean" if self.cbm_mode == "joint" else "concepts"  # the concept model never sees the label

    @property
    def task_weight(self) -> float:
        """Weight of CE(task) while the backbone trains: 0 unless joint."""
        return 1.0 if self.cbm_mode == "joint" else 0.0
