"""Reliability: silent wrong results refused, damaged model folders named in one line."""

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

from sparsecbm import load
from sparsecbm.cli import main
from sparsecbm.data import DataError, load_table
from sparsecbm.masks import load_masks, save_masks
from sparsecbm.pruning.fisher import BlockFisher

from .conftest import table_args


def _run(capsys, *argv):
    code = main(["-q", *argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def saved(tmp_path, sparse_clf):
    return sparse_clf.save(tmp_path / "m")


def test_a_duplicated_column_name_is_refused_naming_it(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text("text,label,food,service,food\ngood food,pos,P,N,N\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"d.csv: row 1: duplicated column name\(s\) \['food'\]"):
        load_table(path, text_column="text", label_column="label", concept_columns=["food", "service"])


def test_predict_keeps_one_record_per_input_line(tmp_path, capsys, saved):
    texts = tmp_path / "t.txt"
    texts.write_text("the food was lovely\n\nservice awful\n", encoding="utf-8")
    code, _, err = _run(capsys, "predict", str(saved), "--file", str(texts), "--json", str(tmp_path / "p.json"))
    assert code == 2 and "line 2 is blank" in err and not (tmp_path / "p.json").exists()
    code, _, _ = _run(capsys, "predict", str(saved), "first", "--file", str(texts), "--skip-blank",
                      "--json", str(tmp_path / "p.json"))
    records = json.loads((tmp_path / "p.json").read_text())
    assert code == 0
    assert [(r["index"], r["text"], r.get("line")) for r in records] == [
        (0, "first", None), (1, "the food was lovely", 1), (2, "service awful", 3)]


def test_a_truncated_or_miscounted_mask_file_is_refused(tmp_path, sparse_clf):
    path = tmp_path / "masks.safetensors"
    save_masks(sparse_clf.model.masks, path)
    tensors = load_file(str(path))
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata()
    key = next(iter(tensors))
    short = dict(tensors, **{key: tensors[key][: tensors[key].numel() // 2].clone()})
    save_file(short, str(tmp_path / "short.safetensors"), metadata=meta)
    with pytest.raises(ValueError, match="short.safetensors: mask .* holds .* bits for a .* the file is damaged"):
        load_masks(tmp_path / "short.safetensors")
    flipped = tensors[key].clone()
    flipped[0] ^= 1  # one bit more or less, right length
    save_file(dict(tensors, **{key: flipped}), str(tmp_path / "count.safetensors"), metadata=meta)
    with pytest.raises(ValueError, match="count.safetensors: mask .* keeps .* its metadata says"):
        load_masks(tmp_path / "count.safetensors")


def test_save_rewrites_the_tokenizer(tmp_path, sparse_clf, saved):
    (saved / "tokenizer" / "stale.txt").write_text("from another backbone")
    sparse_clf.save(saved)
    assert not (saved / "tokenizer" / "stale.txt").exists() and load(saved).tokenizer is not None


def test_fisher_of_fewer_gradients_than_block_size_factorises():
    """m = 16 < B = 50: the Gram is singular; accumulated in float32 every block
    failed with damp 1e-7 (rounding leaves negative eigenvalues)."""
    torch.manual_seed(0)
    fisher = BlockFisher(200, 50)
    fisher.add(torch.randn(16, 200, 50))
    inv = fisher.inverse_diagonal(1e-7)
    assert torch.isfinite(inv).all() and (inv > 0).all()


def truncate_file(path):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


@pytest.mark.parametrize("damage, message", [
    (lambda m: truncate_file(m / "model.safetensors"), r"model.safetensors: damaged or not a safetensors file"),
    (lambda m: truncate_file(m / "masks.safetensors"), r"masks.safetensors: damaged or not a safetensors file"),
    (lambda m: (m / "config.json").write_text("[]"), r"config.json: expected a JSON object, got list"),
    (lambda m: (m / "config.json").write_text("{not json"), r"config.json: not valid JSON"),
    (lambda m: (m / "config.json").write_text(json.dumps(
        {k: v for k, v in json.loads((m / "config.json").read_text()).items() if k != "backbone_config"})),
     r"config.json: missing key\(s\) \['backbone_config'\]"),
    (lambda m: (m / "config.json").write_text(json.dumps(edit_labels(json.loads((m / "config.json").read_text())))),
     r"model.safetensors: does not match config.json"),
    (lambda m: shutil.rmtree(m / "tokenizer"), r"tokenizer: missing; the model folder is incomplete"),
    (lambda m: (m / "interventions.json").write_text("{}"), r"interventions.json: damaged intervention log"),
])
def test_a_damaged_model_folder_gets_one_line_naming_the_file(capsys, saved, damage, message):
    damage(saved)
    code, out, err = _run(capsys, "predict", str(saved), "the food was lovely")
    errors = [line for line in err.splitlines() if line.startswith("sparsecbm: error:")]
    assert code == 2 and "Traceback" not in err and len(errors) == 1, err
    assert str(saved) in errors[0] and re_search(message, errors[0]), err


def edit_labels(config):
    config["model"]["schema"]["labels"] = config["model"]["schema"]["labels"] + ["extra"]
    return config


def re_search(pattern, text):
    import re

    return re.search(pattern, text) is not None


def test_an_unknown_backbone_fails_at_once_offline(tmp_path, capsys, reviews):

    code, _, err = _run(capsys, "train", *table_args(reviews), "--backbone", "no-such-org/no-such-model",
                        "--out", str(tmp_path / "m"))
    assert code == 2 and "no-such-org/no-such-model" in err and not (tmp_path / "m").exists()


def test_a_stale_save_is_refused_and_another_models_folder_needs_overwrite(tmp_path, sparse_clf, saved):
    a, b = load(saved), load(saved)
    a.save()
    with pytest.raises(ValueError, match=r"saved by someone else since this copy was loaded \(revision 2, this copy is based on 1\)"):
        b.save()
    other = tmp_path / "other"
    sparse_clf.save(other)
    with pytest.raises(ValueError, match="already holds a model"):
        load(saved).save(other)
    load(saved).save(other, overwrite=True)
    assert load(other).revision == 2


def test_cli_save_to_an_existing_model_needs_overwrite(tmp_path, capsys, saved, sparse_clf):
    other = sparse_clf.save(tmp_path / "other")
    code, _, err = _run(capsys, "correct", str(saved), "the food was lovely", "--concept", "food", "--value", "N",
                        "--save-to", str(other))
    assert code == 2 and "--save-to" in err and "already holds a model" in err


def test_temporaries_of_a_killed_save_are_removed_on_the_next_load(saved):
    orphan = saved / ".model.safetensors.abc123.tmp"
    orphan.write_bytes(b"x" * 1000)
    (saved / ".tokenizer.def456.tmp").mkdir()
    load(saved)
    assert not orphan.exists() and not (saved / ".tokenizer.def456.tmp").exists()


STRESS = '''
import sys, time, torch
sys.path.insert(0, sys.argv[4])
from sparsecbm import load
from tests.conftest import random_masks
role, folder, seconds = sys.argv[1], sys.argv[2], float(sys.argv[3])
end, n, bad = time.time() + seconds, 0, 0
while time.time() < end:
    clf = load(folder)
    seed = clf.meta.get("stamp", -1)
    want = random_masks(clf.model, seed) if seed >= 0 else None
    if want is not None and not all(torch.equal(want[c][k], clf.model.masks[c][k]) for c in want for k in want[c]):
        bad += 1
    if role == "writer":
        seed = int(torch.randint(0, 10**6, ()))
        clf.model.masks = random_masks(clf.model, seed)
        clf.meta["stamp"] = seed
        try:
            clf.save()
        except ValueError as e:  # another writer saved in between: refused, never mixed
            assert "saved by someone else" in str(e)
    n += 1
print(role, n, bad)
'''


def test_two_writers_and_a_reader_never_see_a_torn_folder(tmp_path, saved):
    import subprocess
    import sys
    from pathlib import Path

    script = tmp_path / "stress.py"
    script.write_text(STRESS)
    root = str(Path(__file__).resolve().parents[1])
    procs = [subprocess.Popen([sys.executable, str(script), role, str(saved), "12", root], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for role in ("writer", "writer", "reader")]
    results = []
    for p in procs:
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err[-2000:]
        results.append(out.split())
    assert all(int(n) > 0 for _, n, _ in results), results
    assert [bad for _, _, bad in results] == ["0", "0", "0"], results


def test_a_model_loaded_under_inference_mode_predicts_like_one_loaded_normally(saved):
    texts = ["the food was lovely", "service awful"]
    want = load(saved).forward_texts(texts).task_logits
    with torch.inference_mode():
        clf = load(saved)
        inside = clf.forward_texts(texts).task_logits
    assert torch.equal(inside, want) and torch.equal(clf.forward_texts(texts).task_logits, want)
    r = clf.intervene("the food was lovely", "food", "N", max_ratio=0.3)  # mask edits need version counters
    assert r.n >= 0
