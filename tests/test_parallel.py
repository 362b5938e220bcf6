"""Two data-parallel CPU processes (accelerate launch, gloo) train the model one process trains."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import BertConfig, BertModel

from sparsecbm import load
from sparsecbm.masks import jaccard

from .conftest import save_tiny

ACCELERATE = shutil.which("accelerate", path=str(Path(sys.executable).parent)) or shutil.which("accelerate")


@pytest.fixture(scope="module")
def tiny_bert_no_dropout(tmp_path_factory) -> Path:
    """Dropout draws differ when the rows of a batch are split over processes; without it
    the two runs may differ by float rounding only."""
    torch.manual_seed(0)
    config = BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=37, max_position_embeddings=128,
                        hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    return save_tiny(BertModel(config), tmp_path_factory.mktemp("tiny-bert-no-dropout"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _train(launcher: list[str], args: list[str], out: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([*launcher, "-m", "sparsecbm", "-q", *args, "--out", str(out)], env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


@pytest.mark.skipif(ACCELERATE is None, reason="accelerate is a dependency; its launcher is missing")
@pytest.mark.parametrize("model", [["--model", "sparsecbm", "--prune-steps", "2", "--fisher-grads", "7",
                                    "--fisher-batch-size", "4", "--finetune-epochs", "1"],
                                   ["--model", "cbm", "--cbm-mode", "sequential"]], ids=["sparsecbm", "sequential"])
def test_two_processes_match_one(reviews, tiny_bert_no_dropout, tmp_path, model):
    # 48 training rows in batches of 16, but a last batch of 5 rows (--max-train 37) and an odd
    # number of Fisher gradients (7): the processes' shares are uneven.
    args = ["train", "--data", str(reviews["train"]), "--dev", str(reviews["dev"]), "--test", str(reviews["test"]),
            "--text-column", "text", "--label-column", "stars", "--concept-columns", "food,service,price",
            "--backbone", str(tiny_bert_no_dropout), "--epochs", "2", "--max-length", "32", "--max-train", "37",
            *model]
    _train([sys.executable], args, tmp_path / "one")
    two = _train([ACCELERATE, "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
                  "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(_free_port())],
                 args, tmp_path / "two")
    assert two.stdout.count("saved the best epoch") == 1  # one process reports (and writes)

    one, two = load(tmp_path / "one"), load(tmp_path / "two")
    a, b = one.model.state_dict(), two.model.state_dict()
    assert a.keys() == b.keys()
    for name in a:
        if a[name].dtype.is_floating_point:
            torch.testing.assert_close(b[name], a[name], rtol=1e-4, atol=5e-5, msg=lambda m: f"{name}: {m}")  # float sums in another order
    assert one.meta["best_epoch"] == two.meta["best_epoch"]
    assert one.meta["best_dev"] == two.meta["best_dev"]  # the dev split was shared out and gathered back
    if one.model.masks is not None:
        for concept in one.model.masks:
            assert jaccard(one.model.masks[concept], two.model.masks[concept]) >= 0.99


def test_shares_cover_each_batch_once_with_weights_that_sum_to_one():
    from sparsecbm.parallel import Processes
    from sparsecbm.training import batch_share

    for n in (1, 2, 5, 16):
        idx = np.arange(100, 100 + n)
        shares = [batch_share(idx, Processes(rank=r, world=2)) for r in range(2)]
        counted = [i for rows, weight in shares if weight for i in rows]
        assert sorted(counted) == list(idx)  # every row once, in one process
        assert sum(weight for _, weight in shares) == pytest.approx(1.0)
        for rows, weight in shares:
            assert weight == pytest.approx(len(rows) / n) or (weight == 0 and len(rows) == 1)


def test_an_empty_share_of_texts_gives_empty_outputs(sparse_clf):
    out = sparse_clf.forward_texts([])  # a process whose share of a tiny dev split is empty
    assert out.task_logits.shape == (0, 3)
    assert [c.shape for c in out.concept_logits] == [(0, 3)] * 3
