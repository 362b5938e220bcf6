"""The block Fisher and the OBS scores (pruning/fisher.py, pruning/obs.py) against their definitions."""


import pytest
import torch

from sparsecbm.pruning import PruneConfig
from sparsecbm.pruning.fisher import BlockFisher, from_blocks, obs_scores, to_blocks

from .pruning_support import TEXTS, split_of


@pytest.mark.parametrize("slice_blocks, threads", [(1024, 1), (2, 3)])  # one slice; slices shared by threads
def test_block_fisher_matches_direct_float64_inverse(slice_blocks, threads):
    torch.manual_seed(0)
    shapes = [torch.Size([7, 9]), torch.Size([13])]  # 63 + 13 weights, B = 10 -> padded blocks
    B, m, damp = 10, 24, 1e-3
    grads = [[torch.randn(s) for s in shapes] for _ in range(m)]
    weights = [torch.randn(s) for s in shapes]
    fisher = BlockFisher(n_blocks=to_blocks(weights, B).shape[0], block_size=B)
    for start in range(0, m, 5):  # chunks of 5, the last one shorter
        fisher.add(torch.stack([to_blocks(g, B) for g in grads[start : start + 5]]), slice_blocks=slice_blocks)
    inv_diag = fisher.inverse_diagonal(damp, slice_blocks=slice_blocks, threads=threads)
    scores = from_blocks(obs_scores(to_blocks(weights, B), inv_diag), shapes, B)

    G = torch.stack([to_blocks(g, B) for g in grads]).double()  # (m, n_blocks, B)
    w = to_blocks(weights, B).double()
    for b in range(G.shape[1]):
        F = damp * torch.eye(B, dtype=torch.float64) + G[:, b].T @ G[:, b] / m
        direct = torch.linalg.inv(F).diagonal()
        torch.testing.assert_close(inv_diag[b], direct, rtol=1e-5, atol=0)
        torch.testing.assert_close(obs_scores(w[b], direct), obs_scores(w[b], inv_diag[b]), rtol=1e-5, atol=0)
    assert [s.shape for s in scores] == shapes


def test_block_fisher_names_every_block_that_fails_to_factorise():
    """Blocks in two slices, inverted by two threads, are not positive definite: one error counts both."""
    fisher = BlockFisher(n_blocks=6, block_size=4)
    fisher.add(torch.randn(8, 6, 4))
    fisher.gram[[1, 4]] = -torch.eye(4, dtype=torch.float64) * 1e3  # slices of 3 blocks: one bad block in each
    with pytest.raises(FloatingPointError, match=r"not positive definite in 2 block\(s\) \(damp=0.001\)"):
        fisher.inverse_diagonal(1e-3, slice_blocks=3, threads=2)
    assert torch.get_num_threads() == _THREADS  # restored after the threads' work


_THREADS = torch.get_num_threads()


def test_obs_scores_do_not_depend_on_the_fisher_memory_budget(sparse_clf):
    """Grouped scoring (a small budget: one weight matrix at a time) gives the same scores."""
    from sparsecbm.pruning import obs

    settings = dict(fisher_grads=6, fisher_batch_size=4, grad_chunk=4, block_size=8, damp=1e-4)
    split = split_of(TEXTS)
    whole = obs.score(sparse_clf, 1, split, PruneConfig(**settings), gamma=5.0, seed=3)
    grouped = obs.score(sparse_clf, 1, split, PruneConfig(**settings, fisher_memory_gb=1e-9), gamma=5.0, seed=3)
    assert len(whole) > 1  # several weight matrices: the small budget scores them in separate groups
    for a, b in zip(whole, grouped):
        torch.testing.assert_close(a, b)


def test_obs_scores_equal_an_independent_inverse_fisher_of_real_gradients(sparse_clf):
    """Scores from obs.score against the definition: per mini-batch, the gradient of
    L_k (via the model's full forward and backward) w.r.t. theta, a block Fisher
    damp I + G^T G / m inverted in float64, score = theta^2 / (2 [F^-1]_qq)."""
    import numpy as np
    import torch.nn.functional as F

    from sparsecbm.pruning import obs

    clf, k, gamma, seed = sparse_clf, 1, 5.0, 7
    split = split_of(TEXTS)
    config = PruneConfig(fisher_grads=5, fisher_batch_size=3, grad_chunk=2, block_size=16, damp=1e-3)
    scores = obs.score(clf, k, split, config, gamma=gamma, seed=seed)

    model = clf.model.eval()
    names = list(model.masks["service"])
    params = dict(model.backbone.named_parameters())
    rng = np.random.default_rng(seed)  # the mini-batches obs draws (its documented sampling)
    rows = []
    for _ in range(config.fisher_grads):
        idx = rng.choice(len(split), size=3, replace=False)
        batch = clf.tokenizer([split.texts[i] for i in idx], padding=True, return_tensors="pt")
        model.zero_grad()
        out = model(batch["input_ids"], batch["attention_mask"])
        logits_k = out.concept_logits[k]
        task = torch.sigmoid(logits_k) @ model.head.linear.weight[:, model.head.concept_slice(k)].T + model.head.linear.bias
        loss = F.cross_entropy(task, torch.as_tensor(split.labels[idx])) + gamma * F.cross_entropy(
            logits_k, torch.as_tensor(split.concepts[idx, k]))
        loss.backward()
        rows.append(torch.cat([params[n].grad.reshape(-1) for n in names]).double())
    G = torch.stack(rows)  # (m, N)
    theta = torch.cat([params[n].detach().reshape(-1) for n in names]).double()
    B, N = config.block_size, theta.numel()
    pad = (-N) % B
    G, theta = F.pad(G, (0, pad)), F.pad(theta, (0, pad))
    expected = []
    for b in range(0, N + pad, B):
        g = G[:, b : b + B]
        inv = torch.linalg.inv(config.damp * torch.eye(B, dtype=torch.float64) + g.T @ g / config.fisher_grads)
        expected.append(theta[b : b + B] ** 2 / (2 * inv.diagonal()))
    expected = torch.cat(expected)[:N]
    got = torch.cat([s.reshape(-1) for s in scores]).double()
    torch.testing.assert_close(got, expected, rtol=2e-3, atol=1e-9)
    # and not trivially: the scores are not the magnitude ranking
    assert not torch.equal(got.argsort()[-50:].sort().values, (theta[:N] ** 2).argsort()[-50:].sort().values)


def test_fisher_groups_budget_the_float64_gram_as_allocated():
    """The budget counts what BlockFisher really holds: n_blocks x B x B float64 entries."""
    from sparsecbm.pruning import obs
    from sparsecbm.pruning.fisher import BlockFisher

    shapes = [torch.Size((40, 50))] * 4  # 40 blocks of B = 50 each
    one = BlockFisher(40, 50).gram
    per_weight = one.numel() * one.element_size()  # 800,000 bytes
    assert obs.weight_groups(["a", "b", "c", "d"], shapes, 50, 2 * per_weight) == [[0, 1], [2, 3]]
    assert obs.weight_groups(["a", "b", "c", "d"], shapes, 50, 2 * per_weight - 1) == [[0], [1], [2], [3]]
