"""SparseCBM correctness: every concept reads its own mask (the authors' code did not)."""

import json

import pytest
import torch

from sparsecbm import TrainConfig, load, load_dataset, train
from sparsecbm.backbones import load_backbone
from sparsecbm.data import Schema
from sparsecbm.masks import jaccard, kept, load_masks, prunable_names, save_masks, summary
from sparsecbm.model import ConceptBottleneckModel, ModelConfig
from sparsecbm.pruning import PruneConfig, cubic_schedule, select
from sparsecbm.pruning.fisher import BlockFisher, from_blocks, obs_scores, to_blocks

from .conftest import CONCEPTS, TINY_SCHEMA, random_masks

SCHEMA = Schema(**TINY_SCHEMA)


@pytest.fixture
def sparse(tiny_bert):
    torch.manual_seed(0)  # the heads' initialisation
    backbone, tokenizer = load_backbone(str(tiny_bert))
    model = ConceptBottleneckModel(backbone, ModelConfig(kind="sparsecbm", schema=SCHEMA)).eval()
    model.masks = random_masks(model, seed=0)
    batch = tokenizer(["the food was cold", "a quiet room and kind staff"], padding=True, return_tensors="pt")
    return model, batch


def _concept_logits(model, batch):
    with torch.no_grad():
        return [model.concept_outputs(batch["input_ids"], batch["attention_mask"], k).logits for k in range(3)]


def test_concept_k_reads_mask_k_and_only_mask_k(sparse):
    model, batch = sparse
    before = _concept_logits(model, batch)
    # The last block's output matrix: flipping its mask moves the hidden states
    # well beyond rounding (a query matrix at init barely moves near-uniform attention).
    name = prunable_names(model.backbone)[-1]
    model.masks["service"][name] = ~model.masks["service"][name]  # change M_service only
    after = _concept_logits(model, batch)
    assert torch.equal(before[0], after[0]) and torch.equal(before[2], after[2])
    assert (before[1] - after[1]).abs().max() > 1e-5  # rounding differences are ~1e-7


def test_in_place_mask_edits_reach_prediction(sparse):
    model, batch = sparse
    before = _concept_logits(model, batch)  # fills the masked-weight cache
    for mask in model.masks["noise"].values():
        mask.zero_()  # an experiment: concept "noise" keeps nothing
    after = _concept_logits(model, batch)
    assert torch.equal(before[0], after[0])
    assert not torch.allclose(before[2], after[2])


def test_task_logits_are_the_sum_of_concept_terms(sparse):
    model, batch = sparse
    with torch.no_grad():
        out = model(batch["input_ids"], batch["attention_mask"])
        terms = model.head.concept_terms(out.activations)  # (n, K, C_y)
    assert terms.shape == (2, 3, 3)
    torch.testing.assert_close(out.task_logits, terms.sum(1) + model.head.linear.bias)
    # Eq. 3 term by term: phi_k . sigmoid(psi_k . z_k) with z_k from subnetwork k.
    for k, logits in enumerate(_concept_logits(model, batch)):
        phi_k = model.head.linear.weight[:, model.head.concept_slice(k)]
        torch.testing.assert_close(terms[:, k], torch.sigmoid(logits) @ phi_k.T)


def test_gradients_reach_weights_only_through_kept_positions(sparse):
    model, batch = sparse
    model.train()
    params = dict(model.backbone.named_parameters())
    for k, concept in enumerate(SCHEMA.concepts):
        model.zero_grad()
        model.concept_outputs(batch["input_ids"], batch["attention_mask"], k).logits.pow(2).sum().backward()
        for name, mask in model.masks[concept].items():
            grad = params[name].grad
            assert torch.all(grad[~mask] == 0), name
        assert any(params[n].grad[m].abs().sum() > 0 for n, m in model.masks[concept].items())
    # The joint loss: theta receives the sum over concepts, zero where no concept keeps a weight.
    model.zero_grad()
    out = model(batch["input_ids"], batch["attention_mask"])
    out.task_logits.sum().backward()
    for name in prunable_names(model.backbone):
        union = torch.zeros_like(model.masks["food"][name])
        for c in SCHEMA.concepts:
            union |= model.masks[c][name]
        assert torch.all(params[name].grad[~union] == 0), name


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


@pytest.fixture(scope="module")
def data(reviews):
    return load_dataset(reviews["train"], dev=reviews["dev"], test=reviews["test"], text_column="text",
                        label_column="stars", concept_columns=CONCEPTS)


QUICK = dict(epochs=1, batch_size=8, lr=1e-3, max_length=32)
PRUNE = dict(fisher_grads=6, fisher_batch_size=4, grad_chunk=4, block_size=8, damp=1e-4, prune_steps=2, finetune_epochs=0.5)


def _sparse_train(data, backbone, out=None, **prune):
    config = TrainConfig(model="sparsecbm", backbone=str(backbone), **QUICK)
    return train(data, config, prune=PruneConfig(**{**PRUNE, **prune}), out=out, progress=False)


@pytest.mark.parametrize("pruner", ["obs", "magnitude", "wanda"])
def test_pipeline_reaches_the_target_sparsity(data, tiny_bert, pruner):
    clf = _sparse_train(data, tiny_bert, pruner=pruner)
    for concept, per in clf.model.masks.items():
        total = sum(m.numel() for m in per.values())
        assert kept(per) == round((1 - 2 / 3) * total), concept  # default s = 1 - 1/K, K = 3
    if pruner == "magnitude":  # identical scores -> identical masks, the control
        assert jaccard(clf.model.masks["food"], clf.model.masks["price"]) == 1.0
    else:  # data-dependent scores give concept-specific subnetworks
        assert jaccard(clf.model.masks["food"], clf.model.masks["price"]) < 1.0


def test_same_seed_same_masks(data, tiny_bert):
    a = _sparse_train(data, tiny_bert).model.masks
    b = _sparse_train(data, tiny_bert).model.masks
    assert all(torch.equal(a[c][n], b[c][n]) for c in a for n in a[c])


@pytest.fixture(scope="module")
def saved_sparse(tmp_path_factory, data, tiny_llama):
    out = tmp_path_factory.mktemp("sparse") / "m"
    return _sparse_train(data, tiny_llama, out=out), out


def test_saved_sparsecbm_restores_masks_and_predictions(saved_sparse, data):
    clf, out = saved_sparse
    assert (out / "dense" / "config.json").exists()  # the dense phase is kept
    loaded = load(out)
    assert loaded.config.kind == "sparsecbm"
    for c, per in clf.model.masks.items():
        assert all(torch.equal(per[n].cpu(), loaded.model.masks[c][n]) for n in per)
    texts = list(data["test"].texts)
    assert torch.equal(clf.forward_texts(texts).task_logits, loaded.forward_texts(texts).task_logits)
    # Bit-packed: an eighth of a byte per weight, plus the header.
    n_bits = sum(m.numel() for per in clf.model.masks.values() for m in per.values())
    assert (out / "masks.safetensors").stat().st_size < n_bits / 8 + 20_000


def test_init_from_a_dense_cbm(tmp_path, data, tiny_bert, saved_sparse):
    train(data, TrainConfig(model="cbm", backbone=str(tiny_bert), **QUICK), out=tmp_path / "d", progress=False)
    config = TrainConfig(model="sparsecbm", backbone=str(tiny_bert), **QUICK)
    clf = train(data, config, prune=PruneConfig(**PRUNE), init_from=tmp_path / "d", out=tmp_path / "s", progress=False)
    assert clf.config.kind == "sparsecbm"
    log = [json.loads(line) for line in (tmp_path / "s" / "train_log.jsonl").read_text().splitlines()]
    assert {r["phase"] for r in log} == {"prune", "sparsecbm"}  # no dense phase: it started from the saved CBM
    assert [r["step"] for r in log if r["phase"] == "prune"] == [1, 2]
    assert not (tmp_path / "s" / "dense").exists()
    with pytest.raises(ValueError, match="expected a dense CBM"):
        train(data, config, init_from=saved_sparse[1], progress=False)


def test_mask_file_round_trip_and_summary(tmp_path, sparse):
    model, _ = sparse
    save_masks(model.masks, tmp_path / "masks.safetensors")
    again = load_masks(tmp_path / "masks.safetensors")
    assert all(torch.equal(model.masks[c][n], again[c][n]) for c in model.masks for n in model.masks[c])
    s = summary(model.masks)
    assert set(s["concepts"]) == set(SCHEMA.concepts)
    assert s["concepts"]["food"]["sparsity"] == pytest.approx(0.6, abs=0.02)
    assert set(s["jaccard"]) == {"food|service", "food|noise", "service|noise"}
    json.dumps(s)  # JSON-ready


@pytest.mark.parametrize(
    "kwargs, message",
    [({"pruner": "random"}, "pruner must be one of"), ({"sparsity": 1.0}, "sparsity must be in"),
     ({"damp": 0}, "damp must be positive"), ({"scope": "row"}, "scope must be one of")],
)
def test_bad_prune_settings(kwargs, message):
    with pytest.raises(ValueError, match=message):
        PruneConfig(**kwargs)


def test_cli_sparsecbm_train_masks_and_pathway(tmp_path, capsys, reviews, tiny_bert):
    from sparsecbm.cli import main

    out = tmp_path / "m"
    argv = ["-q", "train", "--data", str(reviews["train"]), "--dev", str(reviews["dev"]), "--test", str(reviews["test"]),
            "--text-column", "text", "--label-column", "stars", "--concept-columns", ",".join(CONCEPTS),
            "--model", "sparsecbm", "--backbone", str(tiny_bert), "--out", str(out), "--epochs", "1",
            "--batch-size", "8", "--max-length", "32", "--sparsity", "0.5", "--pruner", "obs", "--fisher-grads", "4",
            "--fisher-batch-size", "4", "--block-size", "10", "--damp", "1e-4", "--prune-steps", "2",
            "--finetune-epochs", "0.25"]
    assert main(argv) == 0
    assert "subnetwork sparsity: food 50.0%" in capsys.readouterr().out

    assert main(["-q", "masks", str(out), "--json", str(tmp_path / "masks.json")]) == 0
    printed = capsys.readouterr().out
    summary = json.loads((tmp_path / "masks.json").read_text())
    assert set(summary) == {"concepts", "jaccard"}
    assert summary["concepts"]["food"]["sparsity"] == pytest.approx(0.5, abs=1e-6)
    assert "encoder.layer.0.attention.self.query.weight" in summary["concepts"]["food"]["layers"]
    assert set(summary["jaccard"]) == {"food|service", "food|price", "service|price"}
    assert "overlap of kept weights (Jaccard)" in printed

    assert main(["-q", "evaluate", str(out), "--pathway"]) == 0
    printed = capsys.readouterr().out
    assert "predicted label" in printed and "pushed" in printed
    # A dense CBM has no masks: a clear error, exit 2.
    assert main(["-q", "train", *argv[2:argv.index("--model")], "--model", "cbm", "--backbone", str(tiny_bert),
                 "--out", str(tmp_path / "d"), "--epochs", "1", "--max-length", "32"]) == 0
    capsys.readouterr()
    assert main(["-q", "masks", str(tmp_path / "d")]) == 2
    assert "has no concept masks" in capsys.readouterr().err


def test_obs_scores_do_not_depend_on_the_fisher_memory_budget(saved_sparse, data):
    """Grouped scoring (a small budget: one weight matrix at a time) gives the same scores."""
    from sparsecbm.pruning import obs

    clf, _ = saved_sparse
    config = PruneConfig(**PRUNE)
    whole = obs.score(clf, 1, data["train"], config, gamma=5.0, seed=3)
    grouped = obs.score(clf, 1, data["train"], PruneConfig(**PRUNE, fisher_memory_gb=1e-9), gamma=5.0, seed=3)
    for a, b in zip(whole, grouped):
        torch.testing.assert_close(a, b)


def _split_of(texts, n_concepts=3, seed=0):
    from sparsecbm.data import Split

    g = torch.Generator().manual_seed(seed)
    return Split(tuple(texts), torch.randint(3, (len(texts),), generator=g).numpy(),
                 torch.randint(3, (len(texts), n_concepts), generator=g).numpy())


TEXTS = ("the food was cold", "a quiet room and kind staff who smiled a lot", "prices fine",
         "the soup was awful but the waiter was lovely and quick", "ok", "noisy , slow and far too expensive")


def test_obs_scores_equal_an_independent_inverse_fisher_of_real_gradients(sparse_clf):
    """Scores from obs.score against the definition: per mini-batch, the gradient of
    L_k (via the model's full forward and backward) w.r.t. theta, a block Fisher
    damp I + G^T G / m inverted in float64, score = theta^2 / (2 [F^-1]_qq)."""
    import numpy as np
    import torch.nn.functional as F

    from sparsecbm.pruning import obs

    clf, k, gamma, seed = sparse_clf, 1, 5.0, 7
    split = _split_of(TEXTS)
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


def test_wanda_norms_count_real_tokens_only(sparse_clf):
    """Calibrating text by text (no padding) or in one padded batch gives the same scores."""
    from sparsecbm.pruning import wanda

    split = _split_of(TEXTS)
    alone = wanda.score(sparse_clf, 0, split, PruneConfig(fisher_batch_size=1, calibration=6), gamma=5.0, seed=0)
    padded = wanda.score(sparse_clf, 0, split, PruneConfig(fisher_batch_size=6, calibration=6), gamma=5.0, seed=0)
    for a, b in zip(alone, padded):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


def test_fisher_groups_budget_the_float64_gram_as_allocated():
    """The budget counts what BlockFisher really holds: n_blocks x B x B float64 entries."""
    from sparsecbm.pruning import obs
    from sparsecbm.pruning.fisher import BlockFisher

    shapes = [torch.Size((40, 50))] * 4  # 40 blocks of B = 50 each
    one = BlockFisher(40, 50).gram
    per_weight = one.numel() * one.element_size()  # 800,000 bytes
    assert obs.weight_groups(["a", "b", "c", "d"], shapes, 50, 2 * per_weight) == [[0, 1], [2, 3]]
    assert obs.weight_groups(["a", "b", "c", "d"], shapes, 50, 2 * per_weight - 1) == [[0], [1], [2], [3]]


def test_mining_gamma_weighs_the_concept_term_of_the_mask_scores(sparse_clf):
    """--mining-gamma g mines the masks that a training gamma of g would, and other masks than
    the training gamma's (here 5) when g differs; by default masks are mined at gamma 5 whatever
    the training gamma."""
    import copy

    from sparsecbm.masks import full_masks
    from sparsecbm.pruning import mine_masks

    split = _split_of(TEXTS)
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
