"""Training: one loop for every model kind, the best checkpoint by dev score.

The backbone and the heads get separate AdamW learning rates. With the joint
loss at the paper's gamma = 5 and one small rate for everything, the 12 -> 5
classifier on sigmoid activations barely moves and task accuracy stays near
chance (METHOD.md §8): Adam moves a weight about one learning rate per step,
and a classifier on (0, 1) activations needs weights of several units. The
defaults (gamma 0.5, backbone lr 1e-4, head lr 5e-2) come from the recipe
sweep (benchmarks/recipe.py, docs/decisions.md).
"""

from __future__ import annotations

import json
import logging
import os
import random
import resource
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm
from transformers import get_linear_schedule_with_warmup

from . import checkpoint
from .backbones import DEFAULT_BACKBONE, load_backbone
from .data.batching import iter_batches
from .classifier import Classifier, load
from .data import Dataset
from .files import write_text
from .model import MODEL_KINDS, POOLINGS, CBMOutput, ConceptBottleneckModel, ModelConfig, joint_loss
from .masks import sparsity
from .parallel import processes
from .pruning import PruneConfig, mine_masks, mining_gamma

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
    if pruning is not None and "gamma" in training:
        pruning["mining_gamma"] = mining_gamma(pruning.get("mining_gamma"), training["gamma"])
    return settings


@dataclass(frozen=True)
class TrainConfig:
    """Every training setting; the CLI only turns flags into one of these."""

    model: str = "cbm"  # "standard", "cbm" or "sparsecbm"
    backbone: str = DEFAULT_BACKBONE  # short name, local folder or hub id
    epochs: int = 5
    batch_size: int = 16
    lr: float = 1e-4  # backbone learning rate (the recipe sweep: docs/decisions.md)
    head_lr: float = 5e-2  # projector / classifier / head learning rate (see module doc)
    weight_decay: float = 0.01  # backbone only; heads are not decayed
    warmup: float = 0.1  # fraction of steps with a linear warm-up, then linear decay
    max_length: int = 128  # tokens per text (reviews are short; batches pad to their longest)
    gamma: float = 0.5  # weight of the concept losses (the paper's 5 starves the task head: Training notes)
    pooling: str = "mean"  # "mean" over real tokens, or "last" real token
    seed: int = 0
    max_train: int | None = None  # train on a seeded sample of this many rows (quick runs)
    max_eval: int | None = None  # score on the first this-many dev rows each epoch
    select: str = "auto"  # dev score for the best epoch: task / concepts / mean of both
    cbm_mode: str = "joint"  # joint (Eq. 1), sequential or independent (Koh et al. 2020): see train()
    grad_clip: float = 1.0
    length_groups: int = 0  # sort each run of this many batches by text length, then shuffle the batches (0: off; see docs/decisions.md)
    eval_batch_size: int = 64
    precision: str = "fp32"  # "bf16": training passes under bfloat16 autocast, float32 weights (see autocast)
    device: str = "auto"  # "auto" (cuda when present), "cpu", "cuda", ...

    def __post_init__(self) -> None:
        if self.model not in MODEL_KINDS:
            raise ValueError(f"--model must be one of {list(MODEL_KINDS)}, got {self.model!r}")
        if self.pooling not in POOLINGS:
            raise ValueError(f"--pooling must be one of {list(POOLINGS)}, got {self.pooling!r}")
        if self.cbm_mode not in CBM_MODES:
            raise ValueError(f"--cbm-mode must be one of {list(CBM_MODES)}, got {self.cbm_mode!r}")
        if self.model == "standard" and self.cbm_mode != "joint":
            raise ValueError("--cbm-mode applies to concept models (cbm, sparsecbm), not --model standard")
        if self.precision not in PRECISIONS:
            raise ValueError(f"--precision must be one of {list(PRECISIONS)}, got {self.precision!r}")
        if self.select not in SELECT:
            raise ValueError(f"--select must be one of {list(SELECT)}, got {self.select!r}")
        for name in ("epochs", "batch_size", "max_length", "eval_batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(self, name)}")
        if self.length_groups < 0:
            raise ValueError(f"--length-groups must be 0 (off) or a number of batches, got {self.length_groups}")
        for name in ("max_train", "max_eval"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"--{name.replace('_', '-')} must be at least 1, got {value}")
        for name in ("lr", "head_lr"):
            if not getattr(self, name) > 0:
                raise ValueError(f"--{name.replace('_', '-')} must be positive, got {getattr(self, name)}")
        if self.gamma < 0 or self.weight_decay < 0 or self.grad_clip < 0:
            raise ValueError("--gamma, --weight-decay and --grad-clip must not be negative")
        if not 0 <= self.warmup < 1:
            raise ValueError(f"--warmup must be in [0, 1), got {self.warmup}")

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
        raise ValueError(f"--device: unknown device {name!r}") from None


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def peak_memory_mb() -> float:
    """Peak resident memory of this process so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def check_out_dir(out: Path, overwrite: bool) -> None:
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out}: exists and is not a folder")
    if (out / "config.json").exists() and not overwrite:
        raise ValueError(f"--out {out}: already holds a model; pass --overwrite or choose another folder")


def train(
    dataset: Dataset,
    config: TrainConfig = TrainConfig(),
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
    out = Path(out) if out is not None else None
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
            raise ValueError("--resume needs --out: the folder of the interrupted run")
        point = checkpoint.load(out)
        _check_same_run(point.run, settings, out)
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
        clf = _fit(clf, train_split, dev_split, run, phase=config.model, out=out, point=point)
        return run.finish(clf)

    if init_from is not None:
        dense = load(init_from, device=run.device)
        if dense.config.kind != "cbm":
            raise ValueError(f"--init-from {init_from}: expected a dense CBM, found a {dense.config.kind!r} model")
        dense.check_schema(dataset.schema, dataset.name)
        log.info("starting from the dense CBM in %s", init_from)
    else:
        dense = new_classifier(dataset, config, "cbm", run.device)
        if point is None or point.phase == "dense":
            dense = _fit(dense, train_split, dev_split, run, phase="dense", out=out / "dense" if out else None, point=point)
    clf = _sparse_from_dense(dense, dataset, run.device)

    mined = 0
    if point is not None and point.phase in ("prune", "sparsecbm"):
        mined = point.done if point.phase == "prune" else prune.prune_steps
        if point.phase == "prune":
            clf.model.load_state_dict(point.model)
            checkpoint.set_rng_state(point.rng, run.rng)
    steps = max(1, round(prune.finetune_epochs * _steps_per_epoch(train_split, config)))

    def finetune(t: int) -> None:
        record = {"phase": "prune", "step": t, "seconds_mined": run.seconds(),
                  "sparsity": {c: sparsity(m) for c, m in clf.model.masks.items()}}
        if prune.finetune_epochs > 0:
            optimizer, scheduler = make_optimizer(clf.model, config, steps, warmup=0.0)
            left = steps
            while left > 0:  # whole epochs, then the remainder
                n = min(left, _steps_per_epoch(train_split, config))
                losses = train_epoch(clf, train_split, run, optimizer, scheduler, f"fine-tune {t}/{prune.prune_steps}", max_steps=n)
                left -= n
            record.update(losses)
        record["seconds"] = run.seconds()
        run.history.append(record)
        run.write_log()
        run.save_point("prune", t, clf.model)

    mine_masks(clf, train_split, prune, gamma=config.gamma, seed=config.seed, finetune=finetune, progress=progress,
               done=mined)
    run.prune = prune
    clf = _fit(clf, train_split, dev_split, run, phase="sparsecbm", out=out, point=point,
               epochs=prune.sparse_epochs)
    return run.finish(clf)


def _check_same_run(saved: dict[str, Any], now: dict[str, Any], out: Path) -> None:
    """A resumed run must have the settings and data it was started with (those in
    ``SPEED_ONLY`` may differ)."""
    saved, now = acting_settings(saved), acting_settings(now)
    diffs = [f"{part}.{key}: {saved.get(part, {}).get(key)!r} then, {value!r} now"
             for part in ("training", "pruning") for key, value in (now.get(part) or {}).items()
             if key not in SPEED_ONLY and (saved.get(part) or {}).get(key) != value]
    diffs += [f"{key}: {saved.get(key)!r} then, {now[key]!r} now" for key in ("init_from", "data")
              if saved.get(key) != now[key]]
    if diffs:
        raise ValueError(f"--resume: {out} was started with other settings ({'; '.join(diffs)}); "
                         "resume with the same command, or start again with --overwrite")


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


def new_classifier(dataset: Dataset, config: TrainConfig, kind: str, device: torch.device) -> Classifier:
    backbone, tokenizer = load_backbone(config.backbone)
    model_config = ModelConfig(kind=kind, backbone=config.backbone, pooling=config.pooling, schema=dataset.schema)
    model = ConceptBottleneckModel(backbone, model_config).to(device)
    return Classifier(model, tokenizer, max_length=config.max_length, data_spec=dataset.spec)


def _sparse_from_dense(dense: Classifier, dataset: Dataset, device: torch.device) -> Classifier:
    """A SparseCBM sharing the dense CBM's weights, every mask full."""
    config = replace(dense.config, kind="sparsecbm")
    model = ConceptBottleneckModel(dense.model.backbone, config)
    model.projector.load_state_dict(dense.model.projector.state_dict())
    model.classifier.load_state_dict(dense.model.classifier.state_dict())
    return Classifier(model.to(device), dense.tokenizer, max_length=dense.max_length, data_spec=dataset.spec)


def _steps_per_epoch(split, config: TrainConfig) -> int:
    return (len(split) + config.batch_size - 1) // config.batch_size


def make_optimizer(model: ConceptBottleneckModel, config: TrainConfig, total_steps: int, warmup: float):
    head = model.head_parameters()
    head_ids = {id(p) for p in head}
    optimizer = torch.optim.AdamW(
        [
            {"params": [p for p in model.parameters() if id(p) not in head_ids], "lr": config.lr,
             "weight_decay": config.weight_decay},
            {"params": head, "lr": config.head_lr, "weight_decay": 0.0},
        ]
    )
    scheduler = get_linear_schedule_with_warmup(optimizer, int(warmup * total_steps), total_steps)
    return optimizer, scheduler


def group_by_length(order: np.ndarray, texts, batch_size: int, groups: int, rng: np.random.Generator) -> np.ndarray:
    """``order`` rearranged so that batches hold texts of similar length: each run of
    ``groups`` batches is sorted by text length (characters), then the full batches
    are shuffled (the short last batch stays last, so batches stay aligned). Every
    epoch still sees new batches in a new order, with far less padding: on CEBaB's
    training split, batches of 16 pad to 1.83x the real tokens at random and to
    1.26x with runs of 8 batches (benchmarks/length_groups.py)."""
    span = batch_size * groups
    runs = [sorted(order[s : s + span], key=lambda i: len(texts[i])) for s in range(0, len(order), span)]
    batches = [r[j : j + batch_size] for r in runs for j in range(0, len(r), batch_size)]
    full = [b for b in batches if len(b) == batch_size]
    short = [b for b in batches if len(b) < batch_size]
    return np.asarray([i for j in rng.permutation(len(full)) for i in full[j]] + [i for b in short for i in b],
                      dtype=np.int64)


def train_epoch(clf: Classifier, split, run: Run, optimizer, scheduler, desc: str, max_steps: int | None = None) -> dict[str, float]:
    """One pass (or ``max_steps`` batches) of the joint loss; mean losses.
    With several processes, each runs its share of every batch (see sparsecbm.parallel)."""
    config, model, device, procs = run.config, clf.model, run.device, run.procs
    model.train()
    labels = torch.as_tensor(split.labels)
    concepts = torch.as_tensor(split.concepts)
    order = run.rng.permutation(len(split))
    if max_steps is not None:
        order = order[: max_steps * config.batch_size]
    if config.length_groups:
        order = group_by_length(order, split.texts, config.batch_size, config.length_groups, run.rng)
    total = _steps_per_epoch(order, config)
    sums = torch.zeros(4, dtype=torch.float64)  # loss, task, concepts (each times rows), rows
    batches = [batch_share(order[s : s + config.batch_size], procs) for s in range(0, len(order), config.batch_size)]
    bar = tqdm(batches, total=total, desc=desc, disable=not run.progress)
    for idx, weight in bar:
        [(idx, batch)] = list(iter_batches(clf.tokenizer, split.texts, idx, len(idx), config.max_length))
        batch = {k: v.to(device) for k, v in batch.items()}
        with autocast(config, device):
            out = model(**batch)
            loss, parts = joint_loss(out, labels[idx].to(device), concepts[idx].to(device), config.gamma,
                                     config.task_weight)
        optimizer.zero_grad(set_to_none=True)
        (loss * weight).backward()  # weight: this share's fraction of the batch (1.0 with one process)
        procs.sum_grads_(list(model.parameters()))
        if config.grad_clip:
            torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
        optimizer.step()
        scheduler.step()
        rows = len(idx) if weight else 0
        sums += torch.tensor([loss.item(), parts["task"], parts.get("concepts", 0.0), 1.0], dtype=torch.float64) * rows
        bar.set_postfix(loss=f"{sums[0] / sums[3]:.3f}")
    bar.close()
    loss_sum, task_sum, concept_sum, seen = procs.sum_(sums).tolist()
    means = {"train_loss": loss_sum / seen, "train_task_loss": task_sum / seen}
    if model.config.has_concepts:
        means["train_concept_loss"] = concept_sum / seen
    return means


def batch_share(idx: np.ndarray, procs) -> tuple[np.ndarray, float]:
    """This process's rows of one batch and their fraction of it (the weight of their
    mean loss, so that the gradients summed across processes are the batch's). A process
    left without rows runs one row at weight 0: every process must send gradients."""
    mine = procs.share(idx)
    return (mine, len(mine) / len(idx)) if len(mine) else (idx[:1], 0.0)


def _fit(clf: Classifier, train_split, dev_split, run: Run, *, phase: str, out: Path | None,
         point: checkpoint.ResumePoint | None = None, epochs: int | None = None) -> Classifier:
    """``epochs`` epochs (default ``config.epochs``); keeps (and writes to ``out``) the best by
    dev score. A resume ``point`` of this phase continues after its last finished epoch."""
    config, model = run.config, clf.model
    epochs = epochs or config.epochs
    optimizer, scheduler = make_optimizer(model, config, _steps_per_epoch(train_split, config) * epochs, config.warmup)
    best: dict[str, Any] | None = None
    best_state: dict[str, torch.Tensor] | None = None
    first = 1
    separate_head = model.config.has_concepts and config.cbm_mode != "joint"  # trained after the concept model
    if point is not None and point.phase == phase:
        model.load_state_dict(point.model)
        optimizer.load_state_dict(point.optimizer)
        scheduler.load_state_dict(point.scheduler)
        checkpoint.set_rng_state(point.rng, run.rng)
        best, best_state, first = point.best_record, point.best, point.done + 1
    for epoch in range(first, epochs + 1):
        losses = train_epoch(clf, train_split, run, optimizer, scheduler, f"{phase} epoch {epoch}/{epochs}")
        dev = clf.evaluate_outputs(dev_split, _forward(clf, dev_split.texts, run, "evaluate"))
        score = dev_score(dev, config.selection)
        improved = best is None or score > best["dev_score"]
        record = {"phase": phase, "epoch": epoch, **losses, "dev": dev, "dev_score": score,
                  "seconds": run.seconds(), "best": improved}
        run.history.append(record)
        _report_epoch(record)
        if improved:
            best = record
            best_state = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
        clf.meta = run.meta(best, epoch, epochs, head_pending=separate_head)
        if out is not None:
            if improved:
                clf.save(out, overwrite=True)  # check_out_dir has refused an unasked overwrite
            else:
                clf.save_config(out)  # epochs_done moved on
        run.write_log()
        run.save_point(phase, epoch, model, best_state=best_state, best=best, optimizer=optimizer, scheduler=scheduler)

    assert best is not None and best_state is not None  # at least one epoch ran
    model.load_state_dict(best_state)
    if separate_head:
        head = _fit_head(clf, train_split, dev_split, run, phase)
    clf.meta = run.meta(best, epochs, epochs)
    if separate_head:
        clf.meta["head"] = head
        if out is not None:
            clf.save(out, overwrite=True)
    elif out is not None:  # the final wall time and memory, next to the best weights
        clf.save_config(out)
    model.eval()
    log.info("%s: best epoch %d (dev score %.4f); %.0f s", phase, best["epoch"], best["dev_score"], run.seconds())
    return clf


def _fit_head(clf: Classifier, train_split, dev_split, run: Run, phase: str) -> dict[str, Any]:
    """Train the label head g alone on fixed inputs (sequential: the frozen concept
    model's activations; independent: gold concepts one-hot), ``epochs`` epochs of
    AdamW at ``head_lr``; keep the epoch with the best dev task accuracy on
    *predicted* activations (how the model is used)."""
    config, model = run.config, clf.model
    with torch.no_grad():
        dev_a = _forward(clf, dev_split.texts, run, "head: dev activations").activations
        if config.cbm_mode == "sequential":
            train_a = _forward(clf, train_split.texts, run, "head: train activations").activations
        else:
            train_a = torch.cat([torch.eye(len(v))[train_split.concepts[:, k]]
                                 for k, v in enumerate(model.config.schema.concept_values)], dim=1)
    head = model.classifier
    head.reset_parameters()
    device = head.weight.device
    optimizer = torch.optim.AdamW(head.parameters(), lr=config.head_lr, weight_decay=0.0)
    x, y = train_a.to(device), torch.as_tensor(train_split.labels).to(device)
    dev_y = torch.as_tensor(dev_split.labels)
    best_acc, best_state, best_epoch = -1.0, None, 0
    for epoch in range(1, config.epochs + 1):
        order = torch.as_tensor(run.rng.permutation(len(x)))
        for start in range(0, len(x), config.batch_size):
            idx = order[start : start + config.batch_size].to(device)
            loss = torch.nn.functional.cross_entropy(head(x[idx]), y[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        with torch.no_grad():
            acc = float((head(dev_a.to(device)).argmax(-1).cpu() == dev_y).float().mean())
        if acc > best_acc:
            best_acc, best_epoch = acc, epoch
            best_state = {k: v.detach().clone() for k, v in head.state_dict().items()}
    head.load_state_dict(best_state)
    record = {"phase": f"{phase} head ({config.cbm_mode})", "epoch": best_epoch, "dev_task_accuracy": best_acc,
              "seconds": run.seconds()}
    run.history.append(record)
    run.write_log()
    log.info("%s head (%s): best epoch %d, dev task acc %.1f%%", phase, config.cbm_mode, best_epoch, 100 * best_acc)
    return record


def _forward(clf: Classifier, texts: list[str], run: Run, desc: str) -> CBMOutput:
    """``clf.forward_texts`` of all ``texts``; several processes each run their share."""
    procs, n = run.procs, len(texts)
    out = clf.forward_texts(list(procs.share(np.asarray(texts, dtype=object))), batch_size=run.config.eval_batch_size,
                            progress=run.progress, desc=desc)
    if procs.world == 1:
        return out
    task = procs.gather_rows(out.task_logits, n)
    if not out.concept_logits:
        return CBMOutput(task_logits=task)
    logits = procs.gather_rows(torch.cat(out.concept_logits, dim=1), n)
    return CBMOutput(task_logits=task, concept_logits=torch.split(logits, clf.model.concept_sizes, dim=1),
                     activations=torch.sigmoid(logits))


def _report_epoch(record: dict[str, Any]) -> None:
    dev = record["dev"]
    text = f"{record['phase']} epoch {record['epoch']}: loss {record['train_loss']:.3f}  dev task acc {100 * dev['task']['accuracy']:.1f}%"
    if "concepts" in dev:
        text += f"  concepts acc {100 * dev['concepts']['mean']['accuracy']:.1f}%"
    text += f"  ({record['seconds']:.0f} s){'  * best' if record['best'] else ''}"
    log.info(text)
