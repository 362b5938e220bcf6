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

Where the student trains under random interventions (concepts set to their true
values), a concept teacher answers the same intervention: a frozen copy of its label
head reads its cached activations and features with those concepts set, and the
student's intervened label distribution learns that answer (``interventions``). The
teacher's plain answer taught to the student's plain one lowered the concepts' share of
the label and made the intervention curve fall (docs/method.md#distillation).

A transfer set (``transfer``) extends what the student imitates beyond the training
texts as written: every training text also has one shorter copy, about half its
sentences dropped at random (drawn once, with the run's seed), labelled by the
teacher alone (TinyBERT's augmented distillation, Jiao et al. 2020). In each batch a
share of the rows is read as its copy; those rows learn the teacher's distributions
and no hard label (their gold stars and aspects may have gone with the dropped
sentences).
"""

from __future__ import annotations

import copy
import logging
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..classifier import Classifier, load
from ..data import Dataset, Split
from ..heads import LabelHead
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
    label: bool = True  # False: the label distribution is not taught (the concepts' only)
    # The transfer set: one copy of each training text (row n + i of the logits above is
    # copy i), and the share of a batch's rows read as their copy.
    transfer: tuple[str, ...] = ()
    transfer_share: float = 0.0
    # A concept teacher's label head (a frozen copy, without value prototypes, as the student's is
    # while it trains) and what it reads on every row: the teacher then answers the random
    # interventions the student is trained under. None: its plain label distribution only.
    head: LabelHead | None = None
    activations: torch.Tensor | None = None  # (n, sum C_k)
    features: tuple[torch.Tensor, ...] = ()  # K x (n, F_k)

    def task_targets(self, rows, chosen: torch.Tensor | None = None, values: torch.Tensor | None = None) -> torch.Tensor:
        """The teacher's task logits on ``rows``; with its head, the concepts ``chosen`` ((n, K)
        bool) set to ``values`` ((n, K) indices) as the student's are."""
        if self.head is None or chosen is None or not bool(chosen.any()):
            return self.task_logits[rows]
        with torch.no_grad():
            device = self.head.linear.weight.device
            a, f = self.head.set_values(self.activations[rows].to(device), tuple(x[rows].to(device) for x in self.features),
                                        values.to(device), chosen.to(device))
            return self.head.read_label(a, f).float()

    def copies(self, rng: np.random.Generator, n: int) -> np.ndarray | None:
        """Which of a batch's ``n`` rows are read as their transfer copy ((n,) bool), or None
        without a transfer set (no draw is made then, so such runs draw as before it)."""
        return rng.random(n) < self.transfer_share if self.transfer else None

    def loss(self, out: CBMOutput, rows, gamma: float, task_weight: float, chosen: torch.Tensor | None = None,
             values: torch.Tensor | None = None) -> torch.Tensor:
        """The soft term for ``out`` (the student's outputs on training ``rows``, the concepts
        ``chosen`` set to ``values`` when given), T^2-scaled."""
        device = out.task_logits.device
        total = torch.zeros((), device=device)
        if self.label or not self.concept_logits:  # a Standard teacher has only its label to teach
            targets = self.task_targets(rows, chosen, values).to(device)
            total = task_weight * _kl(out.task_logits, targets, self.temperature)
        if self.concept_logits and out.concept_logits:
            total = total + gamma * sum(_kl(s, t[rows].to(device), self.temperature)
                                        for s, t in zip(out.concept_logits, self.concept_logits))
        return self.temperature ** 2 * total

    def mix(self, hard: torch.Tensor, out: CBMOutput, rows, gamma: float, task_weight: float,
            chosen: torch.Tensor | None = None, values: torch.Tensor | None = None) -> tuple[torch.Tensor, float]:
        """``(1 - w) * hard + w * soft`` and the soft term's value (for the log)."""
        soft = self.loss(out, rows, gamma, task_weight, chosen, values)
        return (1 - self.weight) * hard + self.weight * soft, soft.item()


def _kl(student: torch.Tensor, teacher: torch.Tensor, temperature: float) -> torch.Tensor:
    """KL(softmax(teacher / T) || softmax(student / T)), the batch mean, in float32."""
    return F.kl_div(F.log_softmax(student.float() / temperature, -1), F.log_softmax(teacher.float() / temperature, -1),
                    log_target=True, reduction="batchmean")


_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


def sentence_copy(text: str, rng: np.random.Generator) -> str:
    """``text`` with each sentence kept at random (half on average), at least one kept and,
    when it has two or more, at least one dropped; a text of one sentence comes back whole."""
    sentences = [s for s in _SENTENCE_END.split(text.strip()) if s]
    if len(sentences) < 2:
        return text
    keep = rng.random(len(sentences)) < 0.5
    if keep.all() or not keep.any():  # flip one: all kept -> one dropped, none kept -> one kept
        i = rng.integers(len(sentences))
        keep[i] = not keep[i]
    return " ".join(s for s, k in zip(sentences, keep) if k)


def teacher_outputs(teacher: Classifier, split: Split, *, weight: float, temperature: float, transfer: float = 0.0,
                    label: bool = True, interventions: bool = True, seed: int = 0, batch_size: int = 64,
                    progress: bool = False) -> Teacher:
    """The teacher's logits on ``split`` (evaluation mode, float32), and with ``transfer`` > 0 on
    one sentence-dropped copy of each text too (``sentence_copy``, seeded by ``seed``). With
    ``interventions``, a concept teacher also keeps its label head and what it reads, to answer
    interventions."""
    copies = ()
    if transfer:
        rng = np.random.default_rng(seed)
        copies = tuple(sentence_copy(t, rng) for t in split.texts)
        changed = sum(c != t for c, t in zip(copies, split.texts))
        log.info("transfer set: %d of %d training texts have a shorter copy (%.0f %% of their characters kept)",
                 changed, len(copies), 100 * sum(map(len, copies)) / max(1, sum(map(len, split.texts))))
    out = teacher.forward_texts(list(split.texts) + list(copies), batch_size=batch_size, progress=progress,
                                desc="teacher outputs")
    head = None
    if label and interventions and teacher.config.has_concepts:
        head = copy.deepcopy(teacher.model.head).float().eval().requires_grad_(False)
        head.value_prototypes, head.value_shifts = None, None
    return Teacher(task_logits=out.task_logits.float().cpu(),
                   concept_logits=tuple(c.float().cpu() for c in out.concept_logits),
                   weight=weight, temperature=temperature, label=label, transfer=copies, transfer_share=transfer, head=head,
                   activations=out.activations.float().cpu() if head is not None else None,
                   features=tuple(f.float().cpu() for f in out.features) if head is not None else ())


def load_teacher(path: str | Path, dataset: Dataset, device: torch.device) -> Classifier:
    """A saved model as a teacher: same labels (and concepts, when it has them) as ``dataset``."""
    try:
        teacher = load(path, device=device)
        teacher.check_schema(dataset.schema, dataset.name)
    except (FileNotFoundError, ValueError) as e:
        raise ValueError(f"distill_from: {e}") from None
    log.info("distilling from %s (a %s model)", path, teacher.config.kind)
    return teacher
