"""Second-order (Optimal Brain Surgeon / oBERT) scores for concept k's subnetwork.

The m gradients are of the concept-k loss (``ConceptBottleneckModel.concept_loss``)

    L_k = CE(phi_k a_k + b, y) + gamma * CE(logits_k, c_k)

(the task term uses concept k's own share of the task logits, so one pass
through subnetwork k suffices), each over a mini-batch, taken through the
current masked subnetwork: the gradient of an already-pruned weight is 0.
They stream in chunks into the block Fisher; only diag(F^-1) is kept.

The OBS weight update is not applied: theta is shared by all concepts, so
only the masks differ between them (a design consequence; docs/method.md, "The SparseCBM pipeline").
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Iterator

import numpy as np
import torch
from tqdm.auto import tqdm

from ..data import Split
from ..data.batching import iter_batches
from ..parallel import processes
from .fisher import GRAM_DTYPE, SLICE_BLOCKS, BlockFisher, blocks_per_tensor, from_blocks, obs_scores, to_blocks

if TYPE_CHECKING:
    from ..interfaces import ClassifierLike as Classifier


def concept_loss(clf: Classifier, k: int, batch: dict, labels: torch.Tensor | None, concepts: torch.Tensor, gamma: float) -> torch.Tensor:
    """L_k on one tokenized batch, through concept k's subnetwork (the model's one definition);
    without ``labels``, its concept term only."""
    return clf.model.concept_loss(batch["input_ids"], batch["attention_mask"], k, concepts[:, k], labels, gamma=gamma)


def gradient_chunks(
    clf: Classifier,
    k: int,
    split: Split,
    names: list[str],
    *,
    n_grads: int,
    batch_size: int,
    chunk: int,
    block_size: int,
    gamma: float,
    seed: int,
    progress: bool = False,
    task_term: bool = True,
) -> Iterator[torch.Tensor]:
    """m mini-batch gradients of L_k w.r.t. the weights ``names``, as (c, n_blocks, B) chunks.
    With several processes, each computes the gradients it owns (gradient i: process i mod N)."""
    model = clf.model
    params = dict(model.backbone.named_parameters())
    weights = [params[n] for n in names]
    device = clf.device
    rng = np.random.default_rng(seed)  # the same mini-batches for every group of weights
    labels = torch.as_tensor(split.labels)
    concepts = torch.as_tensor(split.concepts)
    was_training = model.training
    model.eval()  # no dropout: the Fisher of the deterministic network
    n_blocks = sum(blocks_per_tensor([w.shape for w in weights], block_size))
    buffer = torch.empty(min(chunk, n_grads), n_blocks, block_size, device=device)  # reused for every chunk
    filled = 0
    procs = processes()
    try:
        bar = tqdm(range(n_grads), desc=f"gradients {model.config.schema.concepts[k]}",
                   disable=not (progress and procs.main), leave=False)
        for i in bar:
            idx = rng.choice(len(split), size=min(batch_size, len(split)), replace=False)  # drawn by all: same stream
            if procs.owner(i) != procs.rank:
                continue
            [(idx, batch)] = list(iter_batches(clf.tokenizer, split.texts, idx, len(idx), clf.max_length))
            batch = {key: v.to(device) for key, v in batch.items()}
            y = labels[idx].to(device) if task_term else None
            loss = concept_loss(clf, k, batch, y, concepts[idx].to(device), gamma)
            grads = torch.autograd.grad(loss, weights)
            buffer[filled] = to_blocks([g.detach() for g in grads], block_size)
            filled += 1
            if filled == len(buffer):
                yield buffer  # (c, n_blocks, B); the consumer is done with it before the next fill
                filled = 0
        if filled:
            yield buffer[:filled]
    finally:
        model.train(was_training)


def weight_groups(names: list[str], shapes: list[torch.Size], block_size: int, budget_bytes: float) -> list[list[int]]:
    """Consecutive groups of weights whose Fisher blocks (n_blocks x B x B Gram entries, float64) fit the budget."""
    groups: list[list[int]] = [[]]
    used = 0.0
    for i, n_blocks in enumerate(blocks_per_tensor(shapes, block_size)):
        need = n_blocks * block_size * block_size * GRAM_DTYPE.itemsize
        if groups[-1] and used + need > budget_bytes:
            groups.append([])
            used = 0.0
        groups[-1].append(i)
        used += need
    return groups


def _inverse_diagonal(fisher: BlockFisher, damp: float) -> torch.Tensor:
    """``fisher.inverse_diagonal``; with several processes, each holding the Gram of its own
    gradients, every slice of blocks is summed into one process, which inverts it, and the
    diagonals are then summed (each entry is non-zero in one process only, so exactly)."""
    procs = processes()
    if procs.world == 1:
        return fisher.inverse_diagonal(damp)
    fisher.count = int(procs.sum_(torch.tensor(fisher.count, dtype=torch.float64)))
    for part, start in enumerate(range(0, fisher.gram.shape[0], SLICE_BLOCKS)):
        procs.reduce_to_owner_(fisher.gram[start : start + SLICE_BLOCKS], part)
    failed = None
    try:
        diagonal = fisher.inverse_diagonal(damp, owned=lambda part: procs.owner(part) == procs.rank)
    except FloatingPointError as e:  # every process must learn of it, or the others wait forever
        failed, diagonal = e, torch.zeros(fisher.gram.shape[:2], dtype=torch.float64, device=fisher.gram.device)
    if procs.sum_(torch.tensor(float(failed is not None))) > 0:
        raise failed or FloatingPointError(f"the dampened Fisher is not positive definite (damp={damp}); raise --damp")
    return procs.sum_(diagonal)


def score(clf: Classifier, k: int, split: Split, config, gamma: float, seed: int, progress: bool = False) -> list[torch.Tensor]:
    """OBS saliency of every prunable weight of concept k (shaped like the weights).

    When the Fisher blocks of all weights exceed ``config.fisher_memory_gb``,
    the weights are taken in groups that fit, and the same m mini-batch
    gradients are recomputed for each group (time traded for memory).
    """
    model = clf.model
    concept = model.config.schema.concepts[k]
    names = list(model.masks[concept])
    params = dict(model.backbone.named_parameters())
    shapes = [params[n].shape for n in names]
    scores: list[torch.Tensor | None] = [None] * len(names)
    for group in weight_groups(names, shapes, config.block_size, config.fisher_memory_gb * 2**30):
        group_names = [names[i] for i in group]
        group_shapes = [shapes[i] for i in group]
        weight_blocks = to_blocks([params[n].detach() for n in group_names], config.block_size)
        fisher = BlockFisher(weight_blocks.shape[0], config.block_size, device=weight_blocks.device)
        for chunk in gradient_chunks(
            clf, k, split, group_names, n_grads=config.fisher_grads, batch_size=config.fisher_batch_size,
            chunk=config.grad_chunk, block_size=config.block_size, gamma=gamma, seed=seed, progress=progress,
            task_term=config.task_term,
        ):
            fisher.add(chunk)
        group_scores = obs_scores(weight_blocks, _inverse_diagonal(fisher, config.damp)).float()
        del fisher
        for i, s in zip(group, from_blocks(group_scores, group_shapes, config.block_size)):
            scores[i] = s
    return scores
