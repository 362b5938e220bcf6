"""The training loop: batches, the optimizer, one epoch, and fitting with the best epoch kept by dev score."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm
from transformers import get_linear_schedule_with_warmup

from ..classifier import Classifier
from ..data.batching import iter_batches
from ..model import ConceptBottleneckModel, joint_loss
from ..outputs import CBMOutput
from . import checkpoint
from .config import TrainConfig
from .distill import Teacher
from .run import Run, autocast, dev_score

log = logging.getLogger(__name__)
IGNORE = -100  # cross_entropy's ignore_index: a row without hard labels


def steps_per_epoch(split, config: TrainConfig) -> int:
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
    1.26x with runs of 8 batches (benchmarks/experiments/length_groups.py)."""
    span = batch_size * groups
    runs = [sorted(order[s : s + span], key=lambda i: len(texts[i])) for s in range(0, len(order), span)]
    batches = [r[j : j + batch_size] for r in runs for j in range(0, len(r), batch_size)]
    full = [b for b in batches if len(b) == batch_size]
    short = [b for b in batches if len(b) < batch_size]
    return np.asarray([i for j in rng.permutation(len(full)) for i in full[j]] + [i for b in short for i in b],
                      dtype=np.int64)


def train_epoch(clf: Classifier, split, run: Run, optimizer, scheduler, desc: str, max_steps: int | None = None,
                teacher: Teacher | None = None) -> dict[str, float]:
    """One pass (or ``max_steps`` batches) of the joint loss, mixed with a ``teacher``'s
    distributions when given (rows of ``split``); mean losses. With several processes,
    each runs its share of every batch (see sparsecbm.parallel)."""
    config, model, device, procs = run.config, clf.model, run.device, run.procs
    model.train()
    labels = torch.as_tensor(split.labels)
    concepts = torch.as_tensor(split.concepts)
    order = run.rng.permutation(len(split))
    if max_steps is not None:
        order = order[: max_steps * config.batch_size]
    if config.length_groups:
        order = group_by_length(order, split.texts, config.batch_size, config.length_groups, run.rng)
    total = steps_per_epoch(order, config)
    sums = torch.zeros(5, dtype=torch.float64)  # loss, task, concepts, distillation (each times rows), rows
    texts = split.texts + teacher.transfer if teacher is not None else split.texts  # rows n.. are transfer copies
    batches = [order[s : s + config.batch_size] for s in range(0, len(order), config.batch_size)]
    bar = tqdm(batches, total=total, desc=desc, disable=not run.progress)
    for full in bar:
        idx, weight = batch_share(full, procs)
        rows_of = batch_share(np.arange(len(full)), procs)[0]  # their rows in the batch: draws are per batch,
        draws = random_draws(run.rng, config, len(full), len(model.concept_sizes))[:, rows_of]  # as with one process
        copied = teacher.copies(run.rng, len(full)) if teacher is not None else None
        copied = np.zeros(len(idx), bool) if copied is None else _keep_one_original(copied[rows_of])
        [(read, batch)] = list(iter_batches(clf.tokenizer, texts, idx + len(split) * copied, len(idx), config.max_length))
        batch = {k: v.to(device) for k, v in batch.items()}
        gold_labels, gold_concepts = labels[idx].clone(), concepts[idx].clone()
        gold_labels[copied], gold_concepts[copied] = IGNORE, IGNORE  # a copy learns from the teacher alone
        with autocast(config, device):
            out = plain = model(**batch)
            chosen = None
            if config.intervention_prob and model.config.has_concepts:
                chosen = torch.from_numpy((draws[: len(model.concept_sizes)].T < config.intervention_prob)
                                          & ~copied[:, None]).to(device)  # (n, K)
                out = model.intervened(out, chosen, concepts[idx].to(device))
            intervened = out
            if config.side_dropout and model.config.residual:  # these texts' labels from the concepts alone
                dropped = draws[-1] < config.side_dropout
                side = model.head.side_term(out.features) * torch.from_numpy(dropped).to(device)[:, None]
                out = CBMOutput(task_logits=out.task_logits - side, concept_logits=out.concept_logits,
                                activations=out.activations, features=out.features)
            loss, parts = joint_loss(out, gold_labels.to(device), gold_concepts.to(device), config.gamma,
                                     config.task_weight)
            if teacher is not None:  # a teacher with a head answers the same interventions; no side dropout
                student, setting = (intervened, (chosen, concepts[idx])) if teacher.head is not None else (plain, (None, None))
                loss, parts["distill"] = teacher.mix(loss, student, read, config.gamma, config.task_weight, *setting)
        optimizer.zero_grad(set_to_none=True)
        (loss * weight).backward()  # weight: this share's fraction of the batch (1.0 with one process)
        procs.sum_grads_(list(model.parameters()))
        if config.grad_clip:
            torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
        optimizer.step()
        scheduler.step()
        rows = len(idx) if weight else 0
        sums += torch.tensor([loss.item(), parts["task"], parts.get("concepts", 0.0), parts.get("distill", 0.0), 1.0],
                             dtype=torch.float64) * rows
        bar.set_postfix(loss=f"{sums[0] / sums[-1]:.3f}")
    bar.close()
    loss_sum, task_sum, concept_sum, distill_sum, seen = procs.sum_(sums).tolist()
    means = {"train_loss": loss_sum / seen, "train_task_loss": task_sum / seen}
    if model.config.has_concepts:
        means["train_concept_loss"] = concept_sum / seen
    if teacher is not None:
        means["train_distill_loss"] = distill_sum / seen
    return means


def _keep_one_original(copied: np.ndarray) -> np.ndarray:
    """``copied`` with its first row read as written when every row was to be a copy: the hard
    labels' mean needs a row."""
    if copied.all():
        copied = copied.copy()
        copied[0] = False
    return copied


def random_draws(rng: np.random.Generator, config: TrainConfig, n: int, n_concepts: int) -> np.ndarray:
    """Uniform draws for one batch of n texts, (rows, n): K rows for random interventions
    (when on), then one for side-channel dropout (when on); none when both are off, so such
    runs draw exactly as before them."""
    rows = (n_concepts if config.intervention_prob and n_concepts else 0) + (1 if config.side_dropout else 0)
    if not rows:
        return np.zeros((0, n))
    draws = np.empty((rows, n))
    if config.intervention_prob and n_concepts:
        draws[:n_concepts] = rng.random((n, n_concepts)).T  # the draw of the first version: (n, K)
    if config.side_dropout:
        draws[-1] = rng.random(n)
    return draws


def batch_share(idx: np.ndarray, procs) -> tuple[np.ndarray, float]:
    """This process's rows of one batch and their fraction of it (the weight of their
    mean loss, so that the gradients summed across processes are the batch's). A process
    left without rows runs one row at weight 0: every process must send gradients."""
    mine = procs.share(idx)
    return (mine, len(mine) / len(idx)) if len(mine) else (idx[:1], 0.0)


def fit(clf: Classifier, train_split, dev_split, run: Run, *, phase: str, out: Path | None,
        point: checkpoint.ResumePoint | None = None, epochs: int | None = None, teacher: Teacher | None = None) -> Classifier:
    """``epochs`` epochs (default ``config.epochs``), distilling from ``teacher`` when given; keeps
    (and writes to ``out``) the best by dev score. A resume ``point`` of this phase continues after
    its last finished epoch."""
    config, model = run.config, clf.model
    epochs = epochs or config.epochs
    optimizer, scheduler = make_optimizer(model, config, steps_per_epoch(train_split, config) * epochs, config.warmup)
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
        losses = train_epoch(clf, train_split, run, optimizer, scheduler, f"{phase} epoch {epoch}/{epochs}", teacher=teacher)
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
    head = model.head.linear
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
    features = ()
    if out.features:
        features = torch.split(procs.gather_rows(torch.cat(out.features, dim=1), n), clf.model.head.feature_sizes, dim=1)
    return CBMOutput(task_logits=task, concept_logits=torch.split(logits, clf.model.concept_sizes, dim=1),
                     activations=torch.sigmoid(logits), features=features)


def _report_epoch(record: dict[str, Any]) -> None:
    dev = record["dev"]
    text = f"{record['phase']} epoch {record['epoch']}: loss {record['train_loss']:.3f}  dev task acc {100 * dev['task']['accuracy']:.1f}%"
    if "concepts" in dev:
        text += f"  concepts acc {100 * dev['concepts']['mean']['accuracy']:.1f}%"
    text += f"  ({record['seconds']:.0f} s){'  * best' if record['best'] else ''}"
    log.info(text)
