"""The command line: a real run on a tiny backbone, and every promised error path."""

import json
import re
import subprocess
import sys

import pytest

from sparsecbm.cli import main

from .conftest import CONCEPTS, table_args


def _run(capsys, *argv):
    code = main(["-q", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_train_evaluate_predict(tmp_path, capsys, reviews, tiny_bert):
    out = tmp_path / "m"
    code, stdout, stderr = _run(capsys, "train", *table_args(reviews), "--model", "cbm", "--backbone", str(tiny_bert),
                                "--out", str(out), "--epochs", "2", "--batch-size", "8", "--max-length", "32")
    assert code == 0
    assert "Loading weights" not in stderr  # -q hides transformers' bars too
    assert "saved the best epoch" in stdout and "concepts (mean)" in stdout
    assert len((out / "train_log.jsonl").read_text().splitlines()) == 2

    code, stdout, _ = _run(capsys, "evaluate", str(out), "--split", "test", "--json", str(tmp_path / "s.json"))
    assert code == 0, stdout
    scores = json.loads((tmp_path / "s.json").read_text())
    assert set(scores) == {"task", "concepts", "n", "hard_concepts_task_accuracy", "concept_share", "leakage_gap",
                           "single_fixes", "calibration"}
    assert set(scores["calibration"]) == {"temperature", "ece", "nll"}
    assert set(scores["single_fixes"]) == {"pairs", "fixed", "broken", "net"}
    assert scores["n"] == 16
    assert set(scores["concepts"]) == {"mean", *CONCEPTS}
    assert f"{100 * scores['task']['accuracy']:.1f}" in stdout  # the table shows the JSON's numbers
    assert "from true concepts" in stdout

    code, stdout, _ = _run(capsys, "predict", str(out), "the food was lovely", "--json", str(tmp_path / "p.json"))
    assert code == 0
    [pred] = json.loads((tmp_path / "p.json").read_text())
    assert set(pred["concepts"]) == set(CONCEPTS)


@pytest.mark.parametrize(
    "argv, message",
    [
        (["train", "--data", "missing.csv", "--text-column", "t", "--label-column", "y", "--out", "o"],
         "missing.csv: no such file"),
        (["train", "--data", "{train}", "--text-column", "body", "--label-column", "stars", "--out", "o"],
         r"train.csv: missing column\(s\) \['body'\]"),
        (["train", "--data", "{train}", "--text-column", "text", "--out", "o"],
         "a data file needs --label-column"),
        (["train", "--data", "{train}", "--text-column", "text", "--label-column", "stars", "--labels", "good,fine",
          "--out", "o"], r"train.csv: row \d+: column 'stars': label 'bad' is not one of \['good', 'fine'\]"),
        (["train", "--data", "cebab", "--data-dir", "/nonexistent", "--out", "o"], "data folder /nonexistent: no such folder"),
        (["train", "--data", "notes.txt", "--out", "o"], "unknown data 'notes.txt'"),
        (["train", "--data", "cebab", "--backbone", "./no-such-model", "--out", "o"], "backbone folder no-such-model: no such folder"),
        (["evaluate", "{tmp}"], "no config.json"),
        (["predict", "{tmp}"], "no texts given"),
        (["predict", "{tmp}", "hello", "--json", "{tmp}"], "--json .*: is a folder; give a file name"),
        (["predict", "{tmp}", "\u200b\u200c\ufeff"], "text argument 1 is empty .*invisible"),
    ],
)
def test_errors_are_one_clear_line(tmp_path, capsys, reviews, argv, message):
    argv = [a.format(train=reviews["train"], tmp=tmp_path) for a in argv]
    code, _, err = _run(capsys, *argv)
    assert code == 2
    assert err.startswith("sparsecbm: error: ") and err.count("\n") == 1, err
    assert "Traceback" not in err
    assert re.search(message, err), err


def test_data_errors_from_a_real_process(tmp_path):
    """Empty text and non-UTF-8 input through the installed entry point: exit 2, one line."""
    bad = tmp_path / "bad.csv"
    bad.write_text("text,y\nhello,a\n,b\n", encoding="utf-8")
    latin = tmp_path / "latin.csv"
    latin.write_bytes("text,y\nhello,a\ncaf\u00e9,b\n".encode("latin-1"))
    for path, message in ((bad, "bad.csv: row 3: column 'text': empty text"), (latin, "latin.csv: line 3: not valid UTF-8")):
        proc = subprocess.run(
            [sys.executable, "-m", "sparsecbm.cli", "train", "--data", str(path), "--text-column", "text",
             "--label-column", "y", "--model", "standard", "--out", str(tmp_path / "o")],
            capture_output=True, text=True, timeout=120,
        )
        assert proc.returncode == 2
        assert message in proc.stderr and "Traceback" not in proc.stderr
        assert not (tmp_path / "o").exists()  # nothing half-written


def test_bad_flag_values(capsys):
    with pytest.raises(SystemExit) as e:
        main(["train", "--data", "cebab", "--out", "o", "--epochs", "zero"])
    assert e.value.code == 2
    assert "--epochs: expected a whole number, got 'zero'" in capsys.readouterr().err


@pytest.fixture(scope="module")
def carved_model(tmp_path_factory, reviews, tiny_bert):
    """A tiny CBM trained on one file, its dev split carved out of it (no --dev)."""
    out = tmp_path_factory.mktemp("carved") / "m"
    assert main(["-q", "train", "--data", str(reviews["train"]), "--text-column", "text", "--label-column", "stars",
                 "--concept-columns", ",".join(CONCEPTS), "--model", "cbm", "--backbone", str(tiny_bert),
                 "--out", str(out), "--epochs", "1", "--max-length", "32"]) == 0
    return out


LONG = " ".join(["the food was lovely and the service awful"] * 80)  # over 32 tokens and the tokenizer's 512


def test_predict_and_explain_say_when_a_text_is_cut(tmp_path, capfd, carved_model):
    code = main(["-q", "predict", str(carved_model), "the food was lovely", LONG, "--json", str(tmp_path / "p.json")])
    out, err = capfd.readouterr()
    assert code == 0
    assert [p["truncated"] for p in json.loads((tmp_path / "p.json").read_text())] == [False, True]
    assert out.count("[cut]") == 1 and "note: 1 text(s) longer than the model reads (32 tokens) were cut" in err
    assert "text 2" in err and "indexing errors" not in err and "Token indices" not in err
    assert main(["-q", "explain", str(carved_model), LONG]) == 0
    out, err = capfd.readouterr()
    assert "it was cut and later words were not read" in out and "indexing errors" not in err


def test_predict_file_is_a_table_or_lines_with_clear_errors(tmp_path, capsys, carved_model):
    table = tmp_path / "reviews.csv"
    table.write_text("id,body\n7,the food was lovely\n8,service awful\n", encoding="utf-8")
    code, _, _ = _run(capsys, "predict", str(carved_model), "--file", str(table), "--text-column", "body",
                      "--json", str(tmp_path / "p.json"))
    assert code == 0
    preds = json.loads((tmp_path / "p.json").read_text())
    assert [(p["text"], p["row"]) for p in preds] == [("the food was lovely", 2), ("service awful", 3)]
    jsonl = tmp_path / "reviews.jsonl"
    jsonl.write_text('{"text": "the food was lovely"}\n', encoding="utf-8")
    assert _run(capsys, "predict", str(carved_model), "--file", str(jsonl))[0] == 0
    (tmp_path / "empty.txt").write_text("", encoding="utf-8")
    (tmp_path / "blank.txt").write_text("\n  \n", encoding="utf-8")
    (tmp_path / "header.csv").write_text("text\n", encoding="utf-8")
    for argv, message in (
        (["--file", str(table)], r"reviews.csv: no column 'text'; it has \['body', 'id'\] \(choose one with --text-column\)"),
        (["--file", str(tmp_path / "empty.txt")], "empty.txt: the file is empty"),
        (["--file", str(tmp_path / "blank.txt")], "blank.txt: only blank lines"),
        (["--file", str(tmp_path / "header.csv")], "header.csv: the file has no rows"),
        (["hello", "--text-column", "body"], "--text-column names the text column of a CSV/TSV/JSONL --file"),
    ):
        code, _, err = _run(capsys, "predict", str(carved_model), *argv)
        assert code == 2 and re.search(message, err), err


def test_predict_streams_its_output_with_progress(tmp_path, capsys, carved_model, monkeypatch):
    """A long --file prints each chunk as soon as it is predicted (not all at the end), shows a
    progress bar, and writes the --json list as it goes, complete and valid at the end."""
    import sparsecbm.cli.commands as commands
    from sparsecbm.classifier import Classifier

    monkeypatch.setattr(commands, "PREDICT_CHUNK", 2)
    lines = [f"the food was lovely {i}" for i in range(5)]
    (tmp_path / "many.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    printed_before = []
    predict = Classifier.predict

    def watched(self, texts, **kw):
        printed_before.append(capsys.readouterr().out.count("<-"))  # lines out before this chunk ran
        return predict(self, texts, **kw)

    monkeypatch.setattr(Classifier, "predict", watched)
    code = main(["predict", str(carved_model), "--file", str(tmp_path / "many.txt"), "--json", str(tmp_path / "p.json")])
    out, err = capsys.readouterr()
    assert code == 0 and printed_before == [0, 2, 2]  # chunks of 2: the earlier lines were already out
    assert "predict" in err and "5/5" in err  # the progress bar
    preds = json.loads((tmp_path / "p.json").read_text())
    assert [(p["index"], p["line"], p["text"]) for p in preds] == [(i, i + 1, t) for i, t in enumerate(lines)]


def test_evaluate_says_what_was_held_out(tmp_path, capsys, carved_model, reviews):
    code, out, _ = _run(capsys, "evaluate", str(carved_model), "--split", "train", "--json", str(tmp_path / "s.json"))
    assert code == 0
    scores = json.loads((tmp_path / "s.json").read_text())
    assert scores["n"] == 43 and "train is the other 43 rows: 5 of the 48 rows of" in out
    assert scores["note"] in out and "seed 0" in scores["note"]
    code, out, _ = _run(capsys, "evaluate", str(carved_model), "--split", "dev")
    assert code == 0 and "dev: 5 of the 48 rows" in out and "n = 5 examples" in out


def test_flags_come_from_the_configs_with_their_defaults_and_help(capsys, monkeypatch):
    """Each setting's default and help is written once, in its dataclass; the CLI reads it."""
    import dataclasses

    from sparsecbm.cli import build_parser
    from sparsecbm.interventions import EditSettings, Guard
    from sparsecbm.pruning import PruneConfig
    from sparsecbm.training import TrainConfig

    monkeypatch.setenv("COLUMNS", "10000")  # help on one line a flag: no words broken at hyphens
    parser = build_parser()
    commands = {"train": (["--data", "cebab", "--out", "o"], (TrainConfig, PruneConfig)),
                "correct": (["m", "--concept", "food"], (Guard, EditSettings)), "intervene": (["m"], (Guard, EditSettings)),
                "serve": (["m"], (Guard,))}
    for command, (needed, classes) in commands.items():
        parsed = vars(parser.parse_args([command, *needed]))
        with pytest.raises(SystemExit):
            parser.parse_args([command, "--help"])
        shown = " ".join(capsys.readouterr().out.split())
        for cls in classes:
            for f in dataclasses.fields(cls):
                if "help" not in f.metadata:
                    continue
                flag = f"--{f.name.replace('_', '-')}"
                if not f.metadata["flag"]:
                    assert f.name not in parsed and flag not in shown, (command, f.name)
                    continue
                assert parsed[f.name] == f.default, (command, f.name)
                assert " ".join(f.metadata["help"].split()) in shown, (command, f.name)
    # A bad value is refused as the flag is parsed, with the message the Python API gives.
    for argv, message in ((["correct", "m", "--concept", "food", "--tolerance", "2"], "tolerance must be a fraction"),
                          (["intervene", "m", "--confidence", "1"], "confidence must be a probability in [0, 1)"),
                          (["serve", "m", "--caution", "-1"], "caution must be a finite number >= 0"),
                          (["train", "--data", "cebab", "--out", "o", "--epochs", "x"], "expected a whole number")):
        with pytest.raises(SystemExit):
            parser.parse_args(argv)
        assert message in capsys.readouterr().err
    # The library names its parameters (epochs, residual); the command line names the flags.
    assert main(["-q", "train", "--data", "cebab", "--out", "o", "--epochs", "0"]) == 2
    assert "--epochs must be at least 1, got 0" in capsys.readouterr().err
    assert main(["-q", "train", "--data", "cebab", "--out", "o", "--side-dropout", "0.5"]) == 2
    assert "error: --side-dropout leaves out the side channel; it needs --residual R\n" in capsys.readouterr().err
