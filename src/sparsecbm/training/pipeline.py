"""``train``: a Standard model, a CBM (joint, sequential, independent) or the whole SparseCBM pipeline."""

from __future__ import annotations

import logging
import os
from dataclasses import asdict, replace
from pathlib import Path

import torch

from ..backbones import load_backbone
from ..classifier import Classifier, load
from ..data import Dataset, Split
from ..files import sole_training_run
from ..masks import sparsity
from ..model import ConceptBottleneckModel, ModelConfig, check_concepts
from ..parallel import processes
from ..pruning import PruneConfig, mine_masks
from ..settings import SettingError
from . import checkpoint
from .config import TrainConfig
from .distill import DENSE, Teacher, load_teacher, teacher_outputs
from .epochs import fit, make_optimizer, steps_per_epoch, train_epoch
from .run import Run, check_out_dir, check_same_run, seed_everything

log = logging.getLogger(__name__)


def train(
    dataset: Dataset,
    config: TrainConfig | None = None,
    *,
    prune: PruneConfig | None = None,
    init_from: str | os.PathLike | None = None,
    out: str | os.PathLike | None = None,
    overwrite: bool = False,
    progress: bool = True,
    resume: bool = False,
) -> Classifier:
    """Train a model on ``dataset``'s train split, choosing the epoch by dev score.

    ``config.model == "sparsecbm"`` runs the whole pipeline: a dense joint CBM
    (or the one saved in ``init_from``), gradual per-concept mask mining
    (``prune``), then fine-tuning of the shared weights under the fixed masks.

    With ``out``, the best checkpoint is written there as soon as it is found,
    marked unfinished (``"finished": false`` in its config) until its last epoch
    ran, together with ``train_log.jsonl``; a SparseCBM run also keeps its dense
    phase in ``out/dense``. After every epoch and pruning step a resume point is
    written to ``out/resume/``; ``resume=True`` continues an interrupted run from
    it with the same settings, giving the same model as an uninterrupted run. The
    resume point is removed when the run finishes. Returns the classifier with
    the best epoch's weights.

    Launched as several processes (``accelerate launch``, see
    :mod:`sparsecbm.parallel`), each computes its share of every batch and of
    the Fisher gradients; only the first writes to ``out``.

    ``config.cbm_mode`` (Koh et al. 2020): ``joint`` trains concepts and label
    together (Eq. 1); ``sequential`` trains the concept model on the concept
    loss alone, then the label head on its frozen predicted activations;
    ``independent`` trains the label head on the gold concepts (one-hot) and
    uses it on predicted ones. In the last two the label never reaches the
    backbone (mask mining then ranks weights by the concept term of L_k only).
    """
    config = config if config is not None else TrainConfig()
    out = Path(out) if out is not None else None
    if out is None or not processes().main:
        return _train(dataset, config, prune, init_from, out, overwrite, progress, resume)
    with sole_training_run(out):  # a second run on the same folder is refused here, at its start
        return _train(dataset, config, prune, init_from, out, overwrite, progress, resume)


def _train(dataset: Dataset, config: TrainConfig, prune: PruneConfig | None, init_from, out: Path | None,
           overwrite: bool, progress: bool, resume: bool) -> Classifier:
    check_concepts(config.model, dataset.schema)
    if config.model != "sparsecbm" and (prune is not None or init_from is not None):
        raise ValueError("pruning settings and --init-from apply to --model sparsecbm only")
    if config.model == "sparsecbm":
        prune = prune or PruneConfig()
        if config.cbm_mode != "joint":
            prune = replace(prune, task_term=False)
    settings = {"training": {k: v for k, v in asdict(config).items() if k != "device"},
                "pruning": asdict(prune) if prune is not None else None,
                "init_from": str(init_from) if init_from is not None else None, "data": dataset.spec}
    point = None
    if resume:
        if out is None:
            raise SettingError("resume", " needs out: the folder of the interrupted run", also=["out"])
        point = checkpoint.load(out)
        check_same_run(point.run, settings, out)
    elif out is not None:
        check_out_dir(out, overwrite)
        if processes().main:
            checkpoint.remove(out)  # a fresh run: an older run's resume point must not be continued later
    seed_everything(config.seed)
    if not processes().main:
        out = None  # one writer; the others compute their shares
    run = Run(config, out, progress and processes().main, settings)
    if point is not None:
        run.history, run.start = point.history, run.start - point.seconds
        log.info("resuming %s after %s %d", out, "pruning step" if point.phase == "prune" else f"{point.phase} epoch", point.done)
    train_split = dataset["train"].sample(config.max_train, config.seed)
    dev_split = dataset["dev"].head(config.max_eval)
    log.info(
        "training a %s model on %s: %d train / %d dev rows, backbone %s, device %s",
        config.model, dataset.name, len(train_split), len(dev_split), config.backbone, run.device,
    )
    if config.model != "sparsecbm":
        clf = new_classifier(dataset, config, config.model, run.device)
        clf = fit(clf, train_split, dev_split, run, phase=config.model, out=out, point=point)
        return run.finish(_finished(clf, train_split, dev_split, out, run))

    # A teacher of its own is read (and checked) now, not after the minutes of the dense phase.
    own_teacher = None
    if prune.distill_weight and prune.distill_from != DENSE:
        own_teacher = load_teacher(prune.distill_from, dataset, run.device)
    if init_from is not None:
        dense = load(init_from, device=run.device)
        if dense.config.kind != "cbm":
            raise SettingError("init_from", f" {init_from}: expected a dense CBM, found a {dense.config.kind!r} model")
        dense.check_schema(dataset.schema, dataset.name)
        log.info("starting from the dense CBM in %s", init_from)
    else:
        dense = new_classifier(dataset, config, "cbm", run.device)
        if point is None or point.phase == "dense":
            dense = fit(dense, train_split, dev_split, run, phase="dense", out=out / "dense" if out else None, point=point)
        elif prune.distill_weight and prune.distill_from == DENSE:  # resumed after the dense phase: its saved best
            dense = load(out / "dense", device=run.device)
    teacher = _teacher(prune, own_teacher or dense, train_split, run)  # before a weight it shares with the student moves
    clf = _sparse_from_dense(dense, dataset, run.device)

    mined = 0
    if point is not None and point.phase in ("prune", "sparsecbm"):
        mined = point.done if point.phase == "prune" else prune.prune_steps
        if point.phase == "prune":
            clf.model.load_state_dict(point.model)
            checkpoint.set_rng_state(point.rng, run.rng)
    steps = max(1, round(prune.finetune_epochs * steps_per_epoch(train_split, config)))

    def finetune(t: int) -> None:
        record = {"phase": "prune", "step": t, "seconds_mined": run.seconds(),
                  "sparsity": {c: sparsity(m) for c, m in clf.model.masks.items()}}
        if prune.finetune_epochs > 0:
            optimizer, scheduler = make_optimizer(clf.model, config, steps, warmup=0.0)
            left = steps
            while left > 0:  # whole epochs, then the remainder
                n = min(left, steps_per_epoch(train_split, config))
                losses = train_epoch(clf, train_split, run, optimizer, scheduler, f"fine-tune {t}/{prune.prune_steps}",
                                     max_steps=n, teacher=teacher)
                left -= n
            record.update(losses)
        record["seconds"] = run.seconds()
        run.history.append(record)
        run.write_log()
        run.save_point("prune", t, clf.model)

    mine_masks(clf, train_split, prune, gamma=config.gamma, seed=config.seed, finetune=finetune, progress=progress,
               done=mined)
    run.prune = prune
    clf = fit(clf, train_split, dev_split, run, phase="sparsecbm", out=out, point=point,
              epochs=prune.sparse_epochs, teacher=teacher)
    return run.finish(_finished(clf, train_split, dev_split, out, run))


def _teacher(prune: PruneConfig, model: Classifier, train_split: Split, run: Run) -> Teacher | None:
    """The distillation teacher's outputs on the training split, or None when ``distill_weight`` is 0."""
    if not prune.distill_weight:
        return None
    return teacher_outputs(model, train_split, weight=prune.distill_weight, temperature=prune.distill_temperature,
                           transfer=prune.distill_transfer, label=prune.distill_label,
                           interventions=prune.distill_interventions,
                           seed=run.config.seed,
                           batch_size=run.config.eval_batch_size, progress=run.progress)


def fit_value_prototypes(clf: Classifier, split: Split, *, progress: bool = False) -> torch.Tensor | None:
    """Set (and return) an embedding head's value prototypes from ``split`` (the training
    split; ``LabelHead.fit_prototypes``). None for other heads."""
    if not clf.config.has_concepts or not clf.model.head.embedding_dim:
        return None
    out = clf.forward_texts(split.texts, progress=progress, desc="value prototypes")
    return clf.model.head.fit_prototypes(out.features, split.concepts)


def fit_missing_value_shifts(clf: Classifier, split: Split, *, progress: bool = False) -> bool:
    """Fit the value shifts (with the prototypes) from ``split`` (the training split) when the model
    has an embedding head without them (a folder saved before they existed); whether it did."""
    if not clf.config.has_concepts or not clf.model.head.embedding_dim or clf.model.head.value_shifts is not None:
        return False
    fit_value_prototypes(clf, split, progress=progress)
    return True


def _finished(clf: Classifier, train_split: Split, dev_split: Split, out: Path | None, run: Run) -> Classifier:
    """The best weights made ready for use, and saved beside them: an embedding head's value
    prototypes from the training texts, and the label temperature fitted on the dev texts
    (``Classifier.calibrate``; no prediction changes)."""
    if fit_value_prototypes(clf, train_split, progress=run.progress) is not None and out is not None:
        clf.model.head.save_prototypes(out)
    c = clf.calibrate(dev_split, batch_size=run.config.eval_batch_size, progress=run.progress)
    log.info("label temperature %.2f (dev ECE %.1f -> %.1f %%)", c["temperature"], 100 * c["before"]["ece"],
             100 * c["after"]["ece"])
    if out is not None:
        clf.save_config(out)
    return clf


def new_classifier(dataset: Dataset, config: TrainConfig, kind: str, device: torch.device) -> Classifier:
    backbone, tokenizer = load_backbone(config.backbone)
    head = {} if kind == "standard" else {"bottleneck": config.bottleneck, "residual": config.residual,
                                          "embedding_dim": config.embedding_dim}
    model_config = ModelConfig(kind=kind, backbone=config.backbone, pooling=config.pooling, schema=dataset.schema,
                               **head)
    model = ConceptBottleneckModel(backbone, model_config).to(device)
    return Classifier(model, tokenizer, max_length=config.max_length, data_spec=dataset.spec)


def _sparse_from_dense(dense: Classifier, dataset: Dataset, device: torch.device) -> Classifier:
    """A SparseCBM sharing the dense CBM's weights, every mask full."""
    config = replace(dense.config, kind="sparsecbm")
    model = ConceptBottleneckModel(dense.model.backbone, config)
    for name, child in dense.model.named_children():  # the projector and the label head
        if name != "encoder":
            getattr(model, name).load_state_dict(child.state_dict())
    return Classifier(model.to(device), dense.tokenizer, max_length=dense.max_length, data_spec=dataset.spec)
