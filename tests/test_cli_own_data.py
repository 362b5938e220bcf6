"""The command line and the Python API as a first-time user with their own data meets them
(issue 38): every rough edge found then, each with the behaviour promised instead."""

import csv
import json
import shutil
import time

import pytest

from sparsecbm import load, load_dataset
from sparsecbm.cli import main
from sparsecbm.files import sole_training_run

from .conftest import CONCEPTS


def _run(capsys, *argv):
    code = main(["-q", *argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def own_model(tmp_path_factory, reviews, tiny_bert):
    """A tiny CBM trained on a copy of the review files (so that a test may move them)."""
    folder = tmp_path_factory.mktemp("own")
    for name, path in reviews.items():
        shutil.copy(path, folder / f"{name}.csv")
    out = folder / "m"
    assert main(["-q", "train", "--data", str(folder / "train.csv"), "--dev", str(folder / "dev.csv"),
                 "--test", str(folder / "test.csv"), "--text-column", "text", "--label-column", "stars",
                 "--concept-columns", ",".join(CONCEPTS), "--model", "cbm", "--backbone", str(tiny_bert),
                 "--out", str(out), "--epochs", "1", "--max-length", "32"]) == 0
    return out


def test_a_second_train_on_the_same_out_is_refused_at_its_start(tmp_path, capsys, reviews):
    out = tmp_path / "race"
    with sole_training_run(out):  # the first run, still training
        start = time.perf_counter()
        code, stdout, err = _run(capsys, "train", "--data", str(reviews["train"]), "--text-column", "text",
                                 "--label-column", "stars", "--concept-columns", ",".join(CONCEPTS), "--out", str(out))
        assert code == 2 and "another training run is writing this folder now" in err, err
        assert time.perf_counter() - start < 30 and "training a" not in stdout + err
    assert not out.exists()  # the refused run left no folder behind


def test_train_refuses_missing_concepts_before_it_starts(tmp_path, capsys, reviews):
    code, out, err = main(["train", "--data", str(reviews["train"]), "--text-column", "text", "--label-column",
                           "stars", "--model", "cbm", "--out", str(tmp_path / "o")]), *capsys.readouterr()
    assert code == 2 and "needs concept annotations" in err and "training a" not in out + err
    assert not (tmp_path / "o").exists()


def test_json_lines_saved_as_json_is_a_table_and_a_json_config_is_one_object(tmp_path, reviews):
    rows = list(csv.DictReader(reviews["train"].open(encoding="utf-8")))
    lines = tmp_path / "reviews.json"
    lines.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    data = load_dataset(lines, text_column="text", label_column="stars", concept_columns=CONCEPTS)
    assert len(data["train"]) + len(data["dev"]) == len(rows)
    config = tmp_path / "data.json"
    config.write_text(json.dumps({"train": "reviews.json", "text_column": "text", "label_column": "stars",
                                  "concept_columns": list(CONCEPTS)}), encoding="utf-8")
    assert load_dataset(config)["train"].texts == data["train"].texts


def test_python_errors_and_printing(tmp_path, reviews):
    with pytest.raises(ValueError, match=r"train.csv: a data file needs text_column and label_column .*load_dataset\("):
        load_dataset(reviews["train"])
    with pytest.raises(FileNotFoundError) as e:
        load_dataset("cebab", data_dir=tmp_path / "nowhere")
    assert "data_dir" in str(e.value)
    data = load_dataset(reviews["train"], text_column="text", label_column="stars", concept_columns=CONCEPTS)
    shown = repr(data)
    assert len(shown) < 300 and "train 43" in shown and data["train"].texts[1] not in shown
    assert repr(data["train"]).count("the food") == 1 and "43 rows" in repr(data["train"])


def test_evaluate_after_the_data_moved(tmp_path, capsys, own_model):
    moved = own_model.parent / "moved"
    moved.mkdir(exist_ok=True)
    (own_model.parent / "test.csv").rename(moved / "test.csv")
    try:
        code, _, err = _run(capsys, "evaluate", str(own_model))
        assert code == 2 and "the data recorded in" in err and "config.json is missing" in err and "--data" in err
    finally:
        (moved / "test.csv").rename(own_model.parent / "test.csv")


def test_evaluate_says_when_the_concepts_are_annotations(tmp_path, capsys, own_model):
    folder = own_model.parent
    for name in ("train", "dev", "test"):  # as sparsecbm annotate writes them: a confidence beside each value
        rows = list(csv.DictReader((folder / f"{name}.csv").open(encoding="utf-8")))
        with (tmp_path / f"{name}.csv").open("w", newline="", encoding="utf-8") as f:
            w = csv.DictWriter(f, [*rows[0], *(c + "_confidence" for c in CONCEPTS)])
            w.writeheader()
            w.writerows({**r, **{c + "_confidence": 0.9 for c in CONCEPTS}} for r in rows)
    code, out, _ = _run(capsys, "evaluate", str(own_model), "--data", str(tmp_path / "train.csv"), "--dev",
                        str(tmp_path / "dev.csv"), "--test", str(tmp_path / "test.csv"), "--text-column", "text",
                        "--label-column", "stars", "--concept-columns", ",".join(CONCEPTS))
    assert code == 0 and "from annotated concepts" in out and "annotated-concept ceiling" in out
    assert "true concepts" not in out and "gold" not in out
    code, out, _ = _run(capsys, "evaluate", str(own_model))
    assert "from true concepts" in out and "gold-concept ceiling" in out


def test_correct_takes_a_value_in_any_letter_case(tmp_path, capsys, tiny_bert, reviews):
    from .conftest import train_tiny_sparsecbm

    _, out = train_tiny_sparsecbm(tmp_path / "s", reviews, tiny_bert)
    code, stdout, err = _run(capsys, "correct", str(out), "the food was awful", "--concept", "food",
                             "--value", " positive ", "--dry-run", "--keep-unfixed")
    assert code == 0, err
    assert "food" in stdout and "-> " in stdout


def test_a_config_of_an_unknown_format_version_is_refused(tmp_path, own_model):
    copy = tmp_path / "m"
    shutil.copytree(own_model, copy)
    config = json.loads((copy / "config.json").read_text())
    for version in (0, None, "1", True):
        (copy / "config.json").write_text(json.dumps({**config, "format_version": version}))
        with pytest.raises(ValueError, match=f"format_version {version!r} is not one sparsecbm wrote"):
            load(copy)


def test_reading_a_model_leaves_nothing_beside_its_folder(tmp_path, capsys, own_model):
    copy = tmp_path / "m"
    shutil.copytree(own_model, copy)
    before = sorted(p.name for p in tmp_path.iterdir())
    assert _run(capsys, "evaluate", str(copy))[0] == 0
    assert _run(capsys, "predict", str(copy), "the food was lovely")[0] == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == before == ["m"]


def test_help_does_not_load_torch():
    """`sparsecbm --help` answers before torch and transformers are imported (it took 4.7 s)."""
    import subprocess
    import sys

    code = ("import sys; from sparsecbm.cli import main\n"
            "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
            "print(sorted(m for m in ('torch', 'transformers') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "train" in out and "serve" in out and out.strip().endswith("[]"), out
