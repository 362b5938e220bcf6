"""Tiny backbones built from a config and small data files: the suite needs no download."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import pytest
import torch
from starlette.testclient import TestClient
from transformers import AutoTokenizer, BertConfig, BertModel, LlamaConfig, LlamaModel

from sparsecbm import backbones, load, load_dataset
from sparsecbm.annotation import ConceptFile, read_concept_file
from sparsecbm.data import find_data_dir
from sparsecbm.explorer import Explorer, create_app
from sparsecbm.interventions.gradients import tokenize

from .annotation_support import CONCEPT_FILE
from .explorer_support import LOCAL, running

torch.set_num_threads(2)

CONCEPTS = ("food", "service", "price")
VALUES = ("Negative", "Positive", "unknown")
WORDS = {"Negative": "awful", "Positive": "lovely", "unknown": "some"}


def save_tiny(model, folder: Path) -> Path:
    tokenizer = AutoTokenizer.from_pretrained(backbones.minilm_dir())
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def build_tiny_bert(folder: Path) -> Path:
    """A 2-layer BERT (hidden 32) from a seeded config, saved with the MiniLM tokenizer."""
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=37, max_position_embeddings=128,
    )
    return save_tiny(BertModel(config), folder)


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory) -> Path:
    return build_tiny_bert(tmp_path_factory.mktemp("tiny-bert"))


@pytest.fixture(scope="session")
def tiny_llama(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=30522, hidden_size=48, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128, pad_token_id=0,
    )
    return save_tiny(LlamaModel(config), tmp_path_factory.mktemp("tiny-llama"))


def table_args(reviews, **extra):
    args = ["--data", str(reviews["train"]), "--dev", str(reviews["dev"]), "--test", str(reviews["test"]),
            "--text-column", "text", "--label-column", "stars", "--concept-columns", ",".join(CONCEPTS)]
    for key, value in extra.items():
        args += [f"--{key.replace('_', '-')}", str(value)]
    return args


def same_tree(a, b, path: str = "") -> None:
    """Two JSON-like trees are equal, floats to 1e-5; a failure names the path that differs."""
    if isinstance(a, float) or isinstance(b, float):
        assert a == pytest.approx(b, abs=1e-5), path
    elif isinstance(a, dict):
        assert set(a) == set(b), f"{path}: keys {sorted(set(a) ^ set(b))}"
        for k in a:
            same_tree(a[k], b[k], f"{path}.{k}")
    elif isinstance(a, list):
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b)):
            same_tree(x, y, f"{path}[{i}]")
    else:
        assert a == b, f"{path}: {a!r} != {b!r}"


def review(food: str, service: str, price: str) -> str:
    return f"the food was {WORDS[food]} and the service {WORDS[service]} , prices {WORDS[price]} ."


def write_reviews(path: Path, n: int, seed: int = 0) -> Path:
    """A CSV of ``n`` synthetic reviews whose label is the number of positive concepts."""
    rng = torch.Generator().manual_seed(seed)
    with path.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["text", "stars", *CONCEPTS])
        for _ in range(n):
            vals = [VALUES[int(torch.randint(3, (1,), generator=rng))] for _ in CONCEPTS]
            stars = "good" if vals.count("Positive") >= 2 else "bad"
            w.writerow([review(*vals), stars, *vals])
    return path


def write_review_splits(folder: Path) -> dict[str, Path]:
    """The train (48), dev (16) and test (16) review files the suite trains on."""
    return {
        "train": write_reviews(folder / "train.csv", 48, seed=1),
        "dev": write_reviews(folder / "dev.csv", 16, seed=2),
        "test": write_reviews(folder / "test.csv", 16, seed=3),
    }


@pytest.fixture(scope="session")
def reviews(tmp_path_factory) -> dict[str, Path]:
    return write_review_splits(tmp_path_factory.mktemp("reviews"))


def review_dataset(reviews: dict[str, Path]):
    """The small review files as a Dataset: train, dev and test, three concepts."""
    return load_dataset(reviews["train"], dev=reviews["dev"], test=reviews["test"], text_column="text",
                        label_column="stars", concept_columns=CONCEPTS)


@pytest.fixture(scope="session")
def data(reviews):
    return review_dataset(reviews)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    return find_data_dir()


def random_masks(model, seed: int, keep: float = 0.4) -> dict:
    """Random concept masks keeping about ``keep`` of every prunable weight."""
    g = torch.Generator().manual_seed(seed)
    return {
        c: {n: torch.rand(m.shape, generator=g) < keep for n, m in per.items()}
        for c, per in model.masks.items()
    }


def copy_masks(clf) -> dict:
    """A copy of a classifier's concept masks, to compare with later."""
    return {c: {n: m.clone() for n, m in per.items()} for c, per in clf.model.masks.items()}


def same_masks(a: dict, b: dict) -> bool:
    return all(torch.equal(a[c][n], b[c][n]) for c in a for n in a[c])


TINY_SCHEMA = dict(labels=("a", "b", "c"), concepts=("food", "service", "noise"), concept_values=(("N", "P", "u"),) * 3)


@pytest.fixture
def sparse_clf(tiny_bert):
    """An untrained tiny SparseCBM classifier with random masks (fast, no training)."""
    from sparsecbm import Classifier
    from sparsecbm.data import Schema
    from sparsecbm.model import ConceptBottleneckModel, ModelConfig

    torch.manual_seed(0)
    backbone, tokenizer = backbones.load_backbone(str(tiny_bert))
    model = ConceptBottleneckModel(backbone, ModelConfig(kind="sparsecbm", schema=Schema(**TINY_SCHEMA))).eval()
    model.masks = random_masks(model, seed=0)
    return Classifier(model, tokenizer, max_length=32)


POISED_TEXT = "the food was awful and the service lovely"


def predicted_of(clf, texts, concept: str) -> list[str]:
    """The model's value of ``concept`` for each text (the tiny schema's N, P, u)."""
    return [p.concepts[concept].value for p in clf.predict(texts)]


def wrong_of(clf, texts, concept: str) -> list[str]:
    """For each text, a value of ``concept`` the model does not predict."""
    return [next(v for v in ("N", "P", "u") if v != p) for p in predicted_of(clf, texts, concept)]


@pytest.fixture
def poised(sparse_clf):
    """The tiny SparseCBM made sensitive and just decided on POISED_TEXT: every concept predicts
    'u' there, by margins of 1 and 2 logits, so a correction needs tens of bits."""
    model = sparse_clf.model
    with torch.no_grad():
        model.projector.weight.mul_(30)
        b = tokenize(sparse_clf, [POISED_TEXT])[0][1]
        for k, concept in enumerate(model.config.schema.concepts):
            z = model.encode(b["input_ids"], b["attention_mask"], concept)[0]
            cols = model.head.concept_slice(k)
            model.projector.bias[cols] = -(model.projector.weight[cols] @ z) + torch.tensor([0.0, 1.0, 2.0])
    return sparse_clf


def train_tiny_sparsecbm(out: Path, reviews: dict[str, Path], tiny_bert: Path,
                         extra: list[str] | tuple[str, ...] = ()) -> tuple[list[str], Path]:
    """Train a tiny SparseCBM on the review files through the CLI (one epoch, magnitude
    masks unless ``extra`` flags say otherwise); returns the data flags and the model folder."""
    from sparsecbm.cli import main

    data = ["--data", str(reviews["train"]), "--dev", str(reviews["dev"]), "--test", str(reviews["test"]),
            "--text-column", "text", "--label-column", "stars", "--concept-columns", "food,service,price"]
    assert main(["-q", "train", *data, "--model", "sparsecbm", "--backbone", str(tiny_bert), "--out", str(out),
                 "--epochs", "1", "--max-length", "32", "--prune-steps", "1", "--pruner", "magnitude",
                 "--finetune-epochs", "0", *extra]) == 0
    return data, out


@pytest.fixture
def concept_file(tmp_path) -> ConceptFile:
    path = tmp_path / "concepts.toml"
    path.write_text(CONCEPT_FILE)
    return read_concept_file(path)


# ---------------------------------------------------------------- the explorer's fixtures


@pytest.fixture(scope="module")
def trained(tmp_path_factory, reviews, tiny_bert):
    # The paper's head, undistilled: on this tiny model it leaves corrections that rewiring can fix
    # (the default head's, or a distilled, tiny model fixes almost none; the real model's rate: docs/interventions.md).
    _, out = train_tiny_sparsecbm(tmp_path_factory.mktemp("explorer") / "m", reviews, tiny_bert,
                                  extra=["--bottleneck", "soft", "--intervention-prob", "0", "--distill-weight", "0"])
    return out


@pytest.fixture
def model_dir(trained, tmp_path):
    folder = tmp_path / "m"
    shutil.copytree(trained, folder)
    return folder


def make_explorer(model_dir: Path, reviews) -> Explorer:
    return Explorer(load(model_dir), review_dataset(reviews)["dev"], "reviews dev", max_ratio=0.3)


@pytest.fixture
def client(model_dir, reviews):
    explorer = make_explorer(model_dir, reviews)
    with TestClient(create_app(explorer), base_url=LOCAL) as c:
        c.explorer = explorer
        yield c


@pytest.fixture
def server(model_dir, reviews):
    """The explorer under a real uvicorn server on loopback: (explorer, base URL)."""
    explorer = make_explorer(model_dir, reviews)
    with running(create_app(explorer)) as base:
        yield explorer, base
