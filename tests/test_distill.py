"""Distillation from the dense CBM while a SparseCBM is pruned and fine-tuned (training/distill.py)."""

import dataclasses
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from sparsecbm import TrainConfig, load, load_dataset, train
from sparsecbm.outputs import CBMOutput
from sparsecbm.pruning import PruneConfig
from sparsecbm.training import distill, epochs

from .conftest import CONCEPTS

QUICK = dict(epochs=1, batch_size=8, lr=1e-3, max_length=32)
PRUNE = dict(pruner="magnitude", prune_steps=2, finetune_epochs=0.5)


def _teacher(weight=0.5, temperature=2.0, n=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    return distill.Teacher(task_logits=torch.randn(n, 5, generator=g),
                           concept_logits=tuple(torch.randn(n, 3, generator=g) for _ in range(2)),
                           weight=weight, temperature=temperature)


def test_the_soft_term_is_zero_when_the_student_matches_and_the_scaled_kl_otherwise():
    teacher = _teacher()
    rows = torch.tensor([2, 0])
    same = CBMOutput(task_logits=teacher.task_logits[rows], concept_logits=tuple(c[rows] for c in teacher.concept_logits))
    assert float(teacher.loss(same, rows, gamma=0.5, task_weight=1.0)) == pytest.approx(0.0, abs=1e-6)

    student = CBMOutput(task_logits=torch.zeros(2, 5), concept_logits=(torch.zeros(2, 3), torch.zeros(2, 3)))
    T = 2.0

    def kl(t):  # by hand: sum p log(p / q) over values, mean over rows; q uniform
        p = (t / T).softmax(-1)
        return float((p * (p.log() - torch.log(torch.tensor(1 / t.shape[1])))).sum(-1).mean())

    expected = T**2 * (1.0 * kl(teacher.task_logits[rows]) + 0.5 * sum(kl(c[rows]) for c in teacher.concept_logits))
    assert float(teacher.loss(student, rows, gamma=0.5, task_weight=1.0)) == pytest.approx(expected, rel=1e-5)
    hard = torch.tensor(3.0)
    mixed, soft = teacher.mix(hard, student, rows, gamma=0.5, task_weight=1.0)
    assert float(mixed) == pytest.approx(0.5 * 3.0 + 0.5 * expected, rel=1e-5) and soft == pytest.approx(expected, rel=1e-5)


def test_gradients_of_the_soft_term_reach_every_concepts_logits():
    teacher = _teacher(weight=1.0)
    rows = torch.arange(4)
    concept = tuple(torch.zeros(4, 3, requires_grad=True) for _ in range(2))
    task = torch.zeros(4, 5, requires_grad=True)
    teacher.loss(CBMOutput(task_logits=task, concept_logits=concept), rows, gamma=0.5, task_weight=1.0).backward()
    assert all(float(c.grad.abs().sum()) > 0 for c in (task, *concept))
    # The gradient of T^2 KL in the student's logits is T (softmax(s / T) - softmax(t / T)) per row / n.
    expected = 2.0 * (F.softmax(task.detach() / 2, -1) - F.softmax(teacher.task_logits / 2, -1)) / 4
    assert torch.allclose(task.grad, expected, atol=1e-6)


def test_the_pipeline_distils_from_its_own_dense_phase_as_trained(data, tiny_bert, tmp_path, monkeypatch):
    seen = []
    real = distill.teacher_outputs

    def spy(model, split, **kw):
        targets = real(model, split, **kw)
        seen.append((targets, list(split.texts)))
        return targets

    monkeypatch.setattr("sparsecbm.training.pipeline.teacher_outputs", spy)
    out = tmp_path / "m"
    config = TrainConfig(model="sparsecbm", backbone=str(tiny_bert), **QUICK)
    train(data, config, prune=PruneConfig(**PRUNE, distill_weight=0.7), out=out, progress=False)
    [(targets, texts)] = seen
    assert texts == list(data["train"].texts) and (targets.weight, targets.temperature) == (0.7, 2.0)
    log = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    sparse_records = [r for r in log if r["phase"] in ("prune", "sparsecbm")]
    assert sparse_records and all(r["train_distill_loss"] > 0 for r in sparse_records)
    assert all("train_distill_loss" not in r for r in log if r["phase"] == "dense")  # the teacher does not distil
    # The targets were the dense phase's best model (saved in out/dense), read before pruning moved the
    # weights it shares with the student.
    dense = load(out / "dense").forward_texts(texts)
    assert torch.allclose(targets.task_logits, dense.task_logits, atol=1e-5)
    assert all(torch.allclose(t, d, atol=1e-5) for t, d in zip(targets.concept_logits, dense.concept_logits, strict=True))
    assert load(out).meta["pruning"]["distill_weight"] == 0.7


def test_a_saved_model_can_teach_and_a_mismatched_one_is_refused(data, reviews, tiny_bert, tmp_path):
    train(data, TrainConfig(model="standard", backbone=str(tiny_bert), **QUICK), out=tmp_path / "std", progress=False)
    config = TrainConfig(model="sparsecbm", backbone=str(tiny_bert), **QUICK)
    clf = train(data, config, prune=PruneConfig(**PRUNE, distill_weight=1.0, distill_from=str(tmp_path / "std")),
                progress=False)
    assert clf.config.kind == "sparsecbm"  # a Standard teacher: the label distribution alone
    fewer = load_dataset(reviews["train"], dev=reviews["dev"], text_column="text", label_column="stars",
                         concept_columns=CONCEPTS[:2])
    train(fewer, TrainConfig(model="cbm", backbone=str(tiny_bert), **QUICK), out=tmp_path / "two", progress=False)
    for folder, message in (("none", "no such folder"), ("two", "does not match the model")):
        with pytest.raises(ValueError, match=f"distill_from: .*{message}"):  # refused before the dense phase
            train(data, config, prune=PruneConfig(**PRUNE, distill_weight=0.5, distill_from=str(tmp_path / folder)),
                  progress=False)


def test_without_a_weight_nothing_is_distilled_and_the_run_is_unchanged(data, tiny_bert):
    config = TrainConfig(model="sparsecbm", backbone=str(tiny_bert), **QUICK)
    assert PruneConfig().distill_weight == 0.0  # off by default; at 0 the temperature is never read
    a = train(data, config, prune=PruneConfig(**PRUNE, distill_weight=0.0), progress=False)
    b = train(data, config, prune=PruneConfig(**PRUNE, distill_weight=0.0, distill_temperature=5.0), progress=False)
    sa, sb = a.model.state_dict(), b.model.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.mark.parametrize("kwargs, message", [
    ({"distill_weight": 1.5}, "distill_weight must be in"), ({"distill_weight": -0.1}, "distill_weight must be in"),
    ({"distill_temperature": 0}, "distill_temperature must be positive"), ({"distill_from": ""}, "distill_from"),
])
def test_bad_distillation_settings(kwargs, message):
    with pytest.raises(ValueError, match=message):
        PruneConfig(**kwargs)


def test_a_sentence_copy_keeps_some_sentences_and_drops_others_in_order():
    rng = np.random.default_rng(0)
    text = "The food was great. Service was slow! Was it loud? Yes, very loud."
    sentences = ["The food was great.", "Service was slow!", "Was it loud?", "Yes, very loud."]
    for _ in range(50):
        copy = distill.sentence_copy(text, rng)
        parts = [s for s in sentences if s in copy]
        assert 1 <= len(parts) < len(sentences) and copy == " ".join(parts), copy
    assert distill.sentence_copy("One sentence, no more", rng) == "One sentence, no more"
    a, b = np.random.default_rng(3), np.random.default_rng(3)
    assert [distill.sentence_copy(text, a) for _ in range(5)] == [distill.sentence_copy(text, b) for _ in range(5)]


def test_transfer_copies_are_read_in_training_and_learn_from_the_teacher_alone(reviews, tiny_bert, tmp_path, monkeypatch):
    two = tmp_path / "two_sentences.csv"  # the suite's reviews as two sentences each, so that copies differ
    two.write_text(reviews["train"].read_text(encoding="utf-8").replace(" , prices", ". Prices"), encoding="utf-8")
    data = load_dataset(two, dev=reviews["dev"], text_column="text", label_column="stars", concept_columns=CONCEPTS)
    real_batches, real_loss = epochs.iter_batches, epochs.joint_loss
    read, hard = [], []

    def batches(tokenizer, texts, order, *args):
        read.extend(texts[i] for i in order)
        return real_batches(tokenizer, texts, order, *args)

    def loss(out, labels, concepts, *args):
        hard.append((labels.clone(), concepts.clone()))
        return real_loss(out, labels, concepts, *args)

    monkeypatch.setattr(epochs, "iter_batches", batches)
    monkeypatch.setattr(epochs, "joint_loss", loss)
    config = TrainConfig(model="sparsecbm", backbone=str(tiny_bert), **QUICK)
    train(data, config, prune=PruneConfig(**PRUNE, distill_weight=0.5, distill_transfer=0.5), progress=False)
    originals = set(data["train"].texts)
    copies = [t for t in read if t not in originals]
    assert copies and len(copies) < len(read)  # the dense phase and the sparse phases read originals too
    assert all(any(t in o for o in originals) for t in copies)  # each copy is part of a training text
    ignored = [(labels == epochs.IGNORE).sum().item() for labels, _ in hard]
    assert sum(ignored) == len(copies)  # one ignored hard label per copy read, and its concepts too
    assert all(bool(((labels == epochs.IGNORE)[:, None] == (concepts == epochs.IGNORE)).all()) for labels, concepts in hard)
    assert all(n < len(labels) for n, (labels, _) in zip(ignored, hard))  # every batch keeps a hard-labelled row


def test_a_transfer_set_needs_a_teacher():
    with pytest.raises(ValueError, match="distill_transfer needs a teacher"):
        PruneConfig(distill_weight=0.0, distill_transfer=0.3)
    with pytest.raises(ValueError, match="distill_transfer must be in"):
        PruneConfig(distill_transfer=1.0)


def test_a_concept_teacher_answers_the_interventions_the_student_is_trained_under(data, tiny_bert, tmp_path):
    train(data, TrainConfig(model="cbm", backbone=str(tiny_bert), **QUICK), out=tmp_path / "cbm", progress=False)
    dense = load(tmp_path / "cbm")
    split = data["train"]
    teacher = distill.teacher_outputs(dense, split, weight=0.5, temperature=2.0)
    rows = torch.arange(6)
    assert torch.equal(teacher.task_targets(rows), teacher.task_logits[rows])  # no intervention: the plain logits
    values = torch.as_tensor(split.concepts[:6])
    chosen = torch.zeros(6, len(CONCEPTS), dtype=torch.bool)
    assert torch.equal(teacher.task_targets(rows, chosen, values), teacher.task_logits[rows])
    chosen[:, 0], chosen[3:, 2] = True, True
    dense.model.head.value_prototypes = None  # as a student's head while it trains
    out = dense.forward_texts(list(split.texts[:6]))
    expected = dense.model.intervened(out, chosen, values).task_logits
    got = teacher.task_targets(rows, chosen, values)
    assert torch.allclose(got, expected, atol=1e-5) and not torch.allclose(got, teacher.task_logits[rows], atol=1e-3)
    plain = distill.teacher_outputs(dense, split, weight=0.5, temperature=2.0, interventions=False)
    assert plain.head is None and torch.equal(plain.task_targets(rows, chosen, values), plain.task_logits[rows])


def test_the_pipeline_distils_the_teachers_answers_under_interventions_unless_told_not_to(data, tiny_bert):
    config = TrainConfig(model="sparsecbm", backbone=str(tiny_bert), intervention_prob=0.5, **QUICK)
    assert PruneConfig().distill_interventions
    a = train(data, config, prune=PruneConfig(**PRUNE, distill_weight=0.5), progress=False)
    b = train(data, config, prune=PruneConfig(**PRUNE, distill_weight=0.5, distill_interventions=False), progress=False)
    sa, sb = a.model.state_dict(), b.model.state_dict()
    assert not all(torch.equal(sa[k], sb[k]) for k in sa)  # the same draws, other targets: other weights
    assert a.meta["pruning"]["distill_interventions"] and not b.meta["pruning"]["distill_interventions"]


def test_without_the_label_term_only_the_concepts_distributions_are_taught():
    teacher = dataclasses.replace(_teacher(), label=False)
    rows = torch.tensor([1, 3])
    same_concepts = CBMOutput(task_logits=torch.zeros(2, 5), concept_logits=tuple(c[rows] for c in teacher.concept_logits))
    assert float(teacher.loss(same_concepts, rows, gamma=0.5, task_weight=1.0)) == pytest.approx(0.0, abs=1e-6)
    other = CBMOutput(task_logits=torch.zeros(2, 5), concept_logits=(torch.zeros(2, 3), torch.zeros(2, 3)))
    assert float(teacher.loss(other, rows, gamma=0.5, task_weight=1.0)) > 0
    standard = distill.Teacher(task_logits=teacher.task_logits, concept_logits=(), weight=0.5, temperature=2.0, label=False)
    assert float(standard.loss(other, rows, gamma=0.5, task_weight=1.0)) > 0  # a Standard teacher still teaches its label
