"""Knowledge distillation from a dense teacher while a SparseCBM is pruned and fine-tuned.

Per concept k, subnetwork k's concept logits learn the teacher's concept-k
distribution, and the label head learns the teacher's label distribution, both
at temperature T (Hinton et al. 2015), beside the hard labels:

    loss = (1 - w) * hard + w * T^2 * (task_weight * KL(task) + gamma * sum_k KL(concept k))

with ``hard`` the joint loss (Eq. 1) and each KL(teacher || student) a batch mean,
so the soft terms are weighted as the hard ones are. oBERT's recipe (Kurtic et al.
2022) distils the same way throughout pruning and fine-tuning (its GLUE recipes:
hardness 1.0, temperature 2.0). The teacher is fixed, so its outputs on the
training split are computed once, before the first pruning step changes the
weights it shares with the student, and looked up by row.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from ..classifier import Classifier, load
from ..data import Dataset, Split
from ..outputs import CBMOutput

log = logging.getLogger(__name__)

DENSE = "dense"  # the teacher is the pipeline's own dense CBM


@dataclass(frozen=True, kw_only=True)
class Teacher:
    """A teacher's logits on every row of the training split (CPU, float32)."""

    task_logits: torch.Tensor  # (n, L)
    concept_logits: tuple[torch.Tensor, ...]  # K x (n, C_k); empty for a Standard teacher
    weight: float
    temperature: float

    def loss(self, out: CBMOutput, rows, gamma: float, task_weight: float) -> torch.Tensor:
        """The soft term for ``out`` (the student's outputs on training ``rows``), T^2-scaled."""
        device = out.task_logits.device
        total = task_weight * _kl(out.task_logits, self.task_logits[rows].to(device), self.temperature)
        if self.concept_logits and out.concept_logits:
            total = total + gamma * sum(_kl(s, t[rows].to(device), self.temperature)
                                        for s, t in zip(out.concept_logits, self.concept_logits))
        return self.temperature ** 2 * total

    def mix(self, hard: torch.Tensor, out: CBMOutput, rows, gamma: float, task_weight: float) -> tuple[torch.Tensor, float]:
        """``(1 - w) * hard + w * soft`` and the soft term's value (for the log)."""
        soft = self.loss(out, rows, gamma, task_weight)
        return (1 - self.weight) * hard + self.weight * soft, soft.item()


def _kl(student: torch.Tensor, teacher: torch.Tensor, temperature: float) -> torch.Tensor:
    """KL(softmax(teacher / T) || softmax(student / T)), the batch mean, in float32."""
    return F.kl_div(F.log_softmax(student.float() / temperature, -1), F.log_softmax(teacher.float() / temperature, -1),
                    log_target=True, reduction="batchmean")


def teacher_outputs(teacher: Classifier, split: Split, *, weight: float, temperature: float,
                    batch_size: int = 64, progress: bool = False) -> Teacher:
    """The teacher's logits on ``split`` (evaluation mode, float32)."""
    out = teacher.forward_texts(split.texts, batch_size=batch_size, progress=progress, desc="teacher outputs")
    return Teacher(task_logits=out.task_logits.float().cpu(),
                   concept_logits=tuple(c.float().cpu() for c in out.concept_logits),
                   weight=weight, temperature=temperature)


def load_teacher(path: str | Path, dataset: Dataset, device: torch.device) -> Classifier:
    """A saved model as a teacher: same labels (and concepts, when it has them) as ``dataset``."""
    try:
        teacher = load(path, device=device)
        teacher.check_schema(dataset.schema, dataset.name)
    except (FileNotFoundError, ValueError) as e:
        raise ValueError(f"distill_from: {e}") from None
    log.info("distilling from %s (a %s model)", path, teacher.config.kind)
    return teacher
