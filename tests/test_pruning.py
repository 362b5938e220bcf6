"""Mask mining (pruning/__init__.py, wanda.py): the schedule, the selection, the settings, the scores' loss."""


import pytest
import torch

from sparsecbm.pruning import PruneConfig, cubic_schedule, select

from .pruning_support import TEXTS, split_of


@pytest.mark.parametrize("scope", ["global", "layer"])
def test_select_keeps_exactly_the_schedule_and_never_regrows(scope):
    torch.manual_seed(0)
    shapes = [(40, 30), (30,), (17, 5)]
    masks = [torch.ones(s, dtype=torch.bool) for s in shapes]
    for sparsity in cubic_schedule(0.75, 4):
        new = select([torch.randn(s) for s in shapes], masks, sparsity, scope)
        if scope == "global":
            assert sum(int(m.sum()) for m in new) == round((1 - sparsity) * sum(m.numel() for m in new))
        else:
            assert [int(m.sum()) for m in new] == [round((1 - sparsity) * m.numel()) for m in new]
        assert all(not torch.any(n & ~o) for n, o in zip(new, masks))  # pruned stay pruned
        masks = new


def test_cubic_schedule_every_step():
    # s_t = s_f + (s_i - s_f)(1 - t/T)^3 with s_f = 0.75, s_i = 0, T = 4, by hand:
    # 0.75 (1 - 0.421875), 0.75 (1 - 0.125), 0.75 (1 - 0.015625), 0.75.
    assert cubic_schedule(0.75, 4) == pytest.approx([0.43359375, 0.65625, 0.73828125, 0.75])
    assert cubic_schedule(0.5, 2, initial=0.1) == pytest.approx([0.5 - 0.4 * 0.125, 0.5])


def test_default_sparsity_is_half_and_old_configs_keep_the_papers_rule():
    assert PruneConfig().target(4) == 0.5
    assert PruneConfig(sparsity=None).target(4) == 0.75  # a config saved when 1 - 1/K was the default
    assert PruneConfig(sparsity=0.9).target(4) == 0.9


@pytest.mark.parametrize(
    "kwargs, message",
    [({"pruner": "random"}, "pruner must be one of"), ({"sparsity": 1.0}, "sparsity must be in"),
     ({"damp": 0}, "damp must be positive"), ({"scope": "row"}, "scope must be one of")],
)
def test_bad_prune_settings(kwargs, message):
    with pytest.raises(ValueError, match=message):
        PruneConfig(**kwargs)


def test_wanda_norms_count_real_tokens_only(sparse_clf):
    """Calibrating text by text (no padding) or in one padded batch gives the same scores."""
    from sparsecbm.pruning import wanda

    split = split_of(TEXTS)
    alone = wanda.score(sparse_clf, 0, split, PruneConfig(fisher_batch_size=1, calibration=6), gamma=5.0, seed=0)
    padded = wanda.score(sparse_clf, 0, split, PruneConfig(fisher_batch_size=6, calibration=6), gamma=5.0, seed=0)
    for a, b in zip(alone, padded):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


def test_mining_gamma_weighs_the_concept_term_of_the_mask_scores(sparse_clf):
    """--mining-gamma g mines the masks that a training gamma of g would, and other masks than
    the training gamma's (here 5) when g differs; by default masks are mined at gamma 5 whatever
    the training gamma."""
    import copy

    from sparsecbm.masks import full_masks
    from sparsecbm.pruning import mine_masks

    split = split_of(TEXTS)
    sparse_clf.model.masks = full_masks(sparse_clf.model.backbone, sparse_clf.schema.concepts)
    settings = dict(fisher_grads=4, fisher_batch_size=3, grad_chunk=2, block_size=16, damp=1e-3, prune_steps=1)

    def mined(gamma, **extra):
        clf = copy.deepcopy(sparse_clf)
        mine_masks(clf, split, PruneConfig(**settings, **extra), gamma=gamma, seed=0)
        return clf.model.masks

    def same(a, b):
        return all(torch.equal(a[c][n], b[c][n]) for c in a for n in a[c])

    override = mined(5.0, mining_gamma=0.0)
    assert same(override, mined(0.0, mining_gamma=None))  # None: the training gamma
    assert not same(override, mined(5.0, mining_gamma=None))
    assert same(mined(0.5), mined(5.0, mining_gamma=None))  # the default mines at the paper's gamma 5
