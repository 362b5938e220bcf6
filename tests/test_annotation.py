"""sparsecbm annotate: the concept file, clause scoring, calibration, the written file and the CLI.

Scoring is tested with a bag-of-words encoder (cosine = shared words), so what should match does;
the real MiniLM is checked once on three obvious reviews.
"""

from __future__ import annotations

import csv
import json
from dataclasses import replace

import numpy as np
import pytest

from sparsecbm.annotation import SentenceEncoder, annotate, clauses, read_concept_file, read_labelled, score_texts
from sparsecbm.annotation.calibration import ClausePolarity, calibrate, fit_calibrator
from sparsecbm.annotation.concept_file import concept_file_from_dict
from sparsecbm.annotation.scoring import ConceptScores
from sparsecbm.cli import main
from sparsecbm.data import DataError

from .annotation_support import CONCEPT_FILE, REVIEWS, BagOfWords, write_csv


def test_concept_file_values_put_not_mentioned_last(concept_file):
    assert concept_file.names == ("food", "service")
    assert concept_file.values(0) == ("Positive", "Negative", "not said")
    assert concept_file.concepts[0].about == ("the food",)
    assert concept_file.threshold == 0.3


@pytest.mark.parametrize("text, message", [
    ("[food\nPositive = 1", "not a valid TOML"),
    ("unknown = 'u'", "no concepts"),
    ("[food]\nPositive = 3", "[food] Positive: expected a list of phrases"),
    ("[food]\nPositive = ['  ']", "[food] Positive: no phrases"),
    ("[food]\nunknown = ['x']\nPositive = ['good']", "takes no phrases"),
    ("[food]\nabout = ['food']", "[food] lists no values"),
    ("threshold = 2\n[food]\nPositive = ['good']", "'threshold' must be a cosine similarity"),
    ("food = 'good'", "'food' is not a concept table"),
    ("[room]\nabuot = ['the room']\nPositive = ['nice room']", "[room] abuot: 'abuot' looks like a misspelt 'about'"),
    ("[room]\nAbout = ['the room']\nPositive = ['nice room']", "looks like a misspelt 'about'"),
    ("[room]\nPositive = ['Nice room.']\nNegative = ['nice  room.']", "[room] Negative: the phrase 'nice  room.' is also "
                                                                        "listed under 'Positive'"),
])
def test_concept_file_errors_name_the_file_and_key(tmp_path, text, message):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(DataError, match="bad.toml") as e:
        read_concept_file(path)
    assert message in str(e.value)


def test_clauses_split_sentences_contrasts_commas_and_and():
    assert clauses("Best dumplings in town! The waiter was rude, but the room was quiet.") == [
        "Best dumplings in town!", "The waiter was rude", "the room was quiet."]
    assert clauses("Lovely quiet room, great pasta and a rude waiter.") == [
        "Lovely quiet room", "great pasta", "a rude waiter."]
    assert clauses("no stop at all") == ["no stop at all"]


def test_scoring_reads_each_concept_at_its_own_clause(concept_file):
    scores = score_texts([t for t, _ in REVIEWS], concept_file, BagOfWords())
    food, service = (s.values for s in scores)
    values = [concept_file.values(0)[v] for v in food], [concept_file.values(1)[v] for v in service]
    assert values == (["Positive", "Negative", "not said"], ["Negative", "Positive", "not said"])
    assert scores[0].evidence[0] == "The food was delicious"
    assert scores[1].evidence[0] == "the waiter was rude."
    assert scores[0].evidence[2] == ""
    for s in scores:
        assert ((s.confidence >= 0) & (s.confidence <= 1)).all()
        assert s.features.shape[0] == 3 and np.isfinite(s.features).all()


def test_a_clause_counts_for_the_concept_it_is_most_about(concept_file):
    # "staff" words belong to service only: food must stay unmentioned although the clause is
    # somewhat similar to the food phrases ("dishes" is absent; "quick attentive" are service's).
    scores = score_texts(["Quick attentive staff."], concept_file, BagOfWords())
    assert concept_file.values(0)[scores[0].values[0]] == "not said"
    assert concept_file.values(1)[scores[1].values[0]] == "Positive"


def test_a_text_alone_gets_the_same_values_as_in_a_small_file(concept_file):
    texts = [t for t, _ in REVIEWS]
    together = score_texts(texts, concept_file, BagOfWords())
    for i, text in enumerate(texts):
        alone = score_texts([text], concept_file, BagOfWords())
        assert [s.values[0] for s in alone] == [s.values[i] for s in together]


def test_annotate_writes_the_rows_back_with_values_and_confidences(tmp_path, concept_file):
    data = write_csv(tmp_path / "reviews.csv", ["id", "text", "stars"], [(i, t, s) for i, (t, s) in enumerate(REVIEWS)])
    ann = annotate(data, concept_file, encoder=BagOfWords())
    out = ann.write(tmp_path / "out.tsv")
    rows = list(csv.DictReader(out.open(encoding="utf-8"), delimiter="\t"))
    assert list(rows[0]) == ["id", "text", "stars", "food", "food_confidence", "service", "service_confidence"]
    assert [r["food"] for r in rows] == ["Positive", "Negative", "not said"]
    assert [r["stars"] for r in rows] == ["5", "1", "3"]
    jsonl = ann.write(tmp_path / "out.jsonl", prefix="auto_")
    first = json.loads(jsonl.read_text().splitlines()[0])
    assert first["auto_service"] == "Negative" and 0 <= first["auto_service_confidence"] <= 1
    summary = ann.summary(least=2)
    assert summary["concepts"]["food"]["counts"] == {"Positive": 1, "Negative": 1, "not said": 1}
    assert len(summary["least_confident"]) == 2 and summary["method"] == "zero-label"
    assert summary["least_confident"][0]["confidence"] <= summary["least_confident"][1]["confidence"]


def test_the_least_confident_list_names_each_decision_once_with_its_rows(tmp_path, concept_file, capsys, tiny_bert):
    """Ten rows decided by one clause are one entry with ten rows, not the same sentence ten times."""
    rows = [(f"The food was delicious, visit {i}.", "5") for i in range(10)] + [("Bland food.", "1")]
    data = write_csv(tmp_path / "many.csv", ["text", "stars"], rows)
    summary = annotate(data, concept_file, encoder=BagOfWords()).summary(least=3)
    decisions = [(w["concept"], w["value"], w["evidence"]) for w in summary["least_confident"]]
    assert len(decisions) == len(set(decisions)) == 3
    grouped = [w for w in summary["least_confident"] if len(w["rows"]) > 1]
    assert grouped and all(w["rows"] == sorted(w["rows"]) and w["row"] in w["rows"] for w in grouped)
    (tmp_path / "c.toml").write_text(CONCEPT_FILE)
    assert main(["-q", "annotate", str(data), "--concepts", str(tmp_path / "c.toml"), "--annotator", str(tiny_bert)]) == 0
    out = capsys.readouterr().out
    listed = out.split("least confident", 1)[1].splitlines()[1:]
    assert "rows numbered as in" in out and "the header being row 1" in out
    assert len(listed) == len(set(listed)) and any("rows 2, 3" in line for line in listed), out


def test_the_task_label_is_never_read(tmp_path, concept_file):
    a = write_csv(tmp_path / "a.csv", ["text", "stars"], REVIEWS)
    b = write_csv(tmp_path / "b.csv", ["text", "stars"], [(t, "9") for t, _ in REVIEWS])
    first, second = (annotate(p, concept_file, encoder=BagOfWords()) for p in (a, b))
    assert np.array_equal(first.values, second.values) and np.array_equal(first.confidence, second.confidence)


def test_a_column_clash_is_refused_and_nothing_is_written(tmp_path, concept_file):
    data = write_csv(tmp_path / "r.csv", ["text", "food"], [(t, "x") for t, _ in REVIEWS])
    ann = annotate(data, concept_file, encoder=BagOfWords())
    with pytest.raises(DataError, match=r"r.csv: already has column\(s\) \['food'\]; choose another name with --prefix"):
        ann.write(tmp_path / "out.csv")
    assert not list(tmp_path.glob("*out.csv*"))


def test_labelled_rows_are_checked_and_calibrate(tmp_path, concept_file, capsys, tiny_bert):
    rng = np.random.default_rng(0)
    rows, texts = [], []
    for i in range(40):
        f, s = rng.integers(3), rng.integers(3)
        parts = [["tasty dishes", "cold soggy dishes", ""][f], ["friendly waiter", "rude waiter", ""][s], f"visit {i}"]
        text = ". ".join(p for p in parts if p) + "."
        rows.append((text, ["Positive", "Negative", "not said"][f], ["Positive", "Negative", "NOT SAID"][s]))
        texts.append(text)
    labelled = write_csv(tmp_path / "gold.csv", ["text", "food", "service"], rows)
    gold_texts, gold = read_labelled(labelled, concept_file)
    assert gold_texts == texts and gold.shape == (40, 2) and gold[:, 1].max() == 2  # "NOT SAID" tidied
    ann = annotate(texts, concept_file, encoder=BagOfWords(), labelled=labelled)
    assert ann.method == "calibrated on 40 labelled rows"
    for name in ("food", "service"):
        assert ann.agreement[name]["calibrated_cross_validated"] >= 0.9
    # The report names each method once, and "using" names one of those.
    (tmp_path / "c.toml").write_text(CONCEPT_FILE)
    data = write_csv(tmp_path / "texts.csv", ["text"], [(t,) for t in texts])
    assert main(["-q", "annotate", str(data), "--concepts", str(tmp_path / "c.toml"), "--labelled", str(labelled),
                 "--annotator", str(tiny_bert)]) == 0
    report = [line for line in capsys.readouterr().out.splitlines() if "; using " in line]
    assert len(report) == 2
    for line in report:
        listed, used = line.split("; using ")
        assert used in ("zero-label", "similarity features", "clause polarity") and used in listed, line
    bad = write_csv(tmp_path / "bad.csv", ["text", "food", "service"], [("nice", "Positive", "great")])
    with pytest.raises(DataError, match=r"bad.csv: row 2: column 'service': value 'great' is not one of"):
        read_labelled(bad, concept_file)
    with pytest.raises(DataError, match=r"missing column\(s\) \['service'\]"):
        read_labelled(write_csv(tmp_path / "m.csv", ["text", "food"], [("x", "Positive")]), concept_file)


def test_calibrator_of_one_value_and_of_too_few_rows():
    features = np.random.default_rng(0).normal(size=(6, 3))
    calibrator, cv = fit_calibrator(features, np.zeros(6, dtype=np.int64))
    assert cv is None and calibrator.predict(features)[0].tolist() == [0] * 6
    calibrator, cv = fit_calibrator(features, np.array([0, 1, 0, 1, 0, 1]))
    assert cv is None  # under 2 rows per fold: no held-out agreement to report
    values, confidence = calibrator.predict(features)
    assert set(values) <= {0, 1} and ((confidence >= 0.5) & (confidence <= 1)).all()


def _clause_scores(stated: np.ndarray, rule: np.ndarray, rng) -> ConceptScores:
    """Scores whose deciding clause's embedding says the ``stated`` value (0 Positive, 1 Negative,
    2 not mentioned) plainly, while the zero-label rule says ``rule``."""
    clause = np.where((stated < 2)[:, None], np.stack([1.0 - 2 * (stated == 1), rng.normal(0, 0.3, len(stated))], 1), 0)
    n = len(stated)
    return ConceptScores(values=rule, confidence=np.full(n, 0.5, np.float32), evidence=("x",) * n,
                         features=rng.normal(size=(n, 3)).astype(np.float32), mention=np.full(n, 0.9, np.float32),
                         clause=clause.astype(np.float32))


def test_clause_polarity_learns_values_across_concepts_and_keeps_mentions():
    rng = np.random.default_rng(0)
    mentioned = [("Positive", "Negative"), ("Positive", "Negative")]
    food = rng.integers(3, size=60)
    service = np.where(rng.random(60) < 0.5, 0, 2)  # the labelled rows never say a service was bad
    gold = np.stack([food, service], 1)
    # The rule finds every mention but always reads Positive.
    labelled = [_clause_scores(g, np.where(g < 2, 0, 2), rng) for g in (food, service)]
    truth = rng.integers(3, size=30)
    target = [_clause_scores(truth, np.where(truth < 2, 0, 2), rng) for _ in range(2)]
    values, confidence, record = calibrate(labelled, gold, target, mentioned)
    assert record[0]["used"] == "clause polarity" and record[0]["clause_polarity_cross_validated"] == 1.0
    assert record[0]["zero_label"] < 0.9 and record[0]["calibrated_cross_validated"] < 0.9
    assert (values[:, 0] == truth).all()  # "not mentioned" stays the rule's
    assert ((confidence[:, 0] > 0.45) & (confidence[:, 0] <= 0.9)).all()  # the mention's 0.9 times the value's
    # Service's rows never showed a bad service: the rule ties the classifier there and is kept...
    assert record[1]["used"] == "zero-label" and (values[:, 1] == target[1].values).all()
    # ...while the classifier, having learnt Negative from food's rows, reads service's Negative clauses.
    polarity = ClausePolarity.fit(labelled, gold, mentioned)
    assert (polarity.predict(1, target[1])[0] == truth).all()
    without_clauses = [replace(s, clause=None) for s in labelled]
    assert ClausePolarity.fit(without_clauses, gold, mentioned) is None  # a decoder alone has no clause


def test_sentence_encoder_rows_are_unit_length_in_input_order(tiny_bert):
    from sparsecbm.backbones import load_backbone

    encoder = SentenceEncoder.from_model(*load_backbone(str(tiny_bert)), batch_size=2)
    texts = ["short", "a much longer text than the others here", "mid length text"]
    together = encoder.encode(texts)
    assert together.shape == (3, 32) and np.allclose(np.linalg.norm(together, axis=1), 1, atol=1e-5)
    assert np.allclose(together[1], encoder.encode([texts[1]])[0], atol=1e-5)


def test_cli_annotates_refuses_to_overwrite_and_reports(tmp_path, capsys, tiny_bert):
    concepts = tmp_path / "c.toml"
    concepts.write_text(CONCEPT_FILE)
    data = write_csv(tmp_path / "reviews.csv", ["text", "stars"], REVIEWS)
    argv = ["-q", "annotate", str(data), "--concepts", str(concepts), "--annotator", str(tiny_bert),
            "--summary", str(tmp_path / "summary.json")]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "annotated 3 texts with 2 concepts (zero-label" in out and "least confident" in out
    written = tmp_path / "reviews.annotated.csv"
    assert len(list(csv.DictReader(written.open()))) == 3
    assert json.loads((tmp_path / "summary.json").read_text())["rows"] == 3
    assert main(argv) == 2
    assert "reviews.annotated.csv exists; pass --overwrite" in capsys.readouterr().err
    assert main([*argv, "--overwrite"]) == 0
    bad = tmp_path / "bad.toml"
    bad.write_text("[food]\nPositive = 3")
    assert main(["-q", "annotate", str(data), "--concepts", str(bad), "--out", str(tmp_path / "x.csv")]) == 2
    assert "bad.toml: [food] Positive: expected a list of phrases" in capsys.readouterr().err
    assert not (tmp_path / "x.csv").exists()
    assert main(["-q", "annotate", str(data), "--concepts", str(concepts), "--out", str(tmp_path / "x.parquet")]) == 2
    assert "x.parquet: write annotations to a .csv, .tsv, .jsonl or .json file" in capsys.readouterr().err
    clash = write_csv(tmp_path / "clash.csv", ["text", "food"], [("Tasty dishes.", "x")])
    assert main(["-q", "annotate", str(clash), "--concepts", str(concepts), "--annotator", "no-such-folder/x"]) == 2
    assert "clash.csv: already has column(s) ['food']; choose another name with --prefix" in capsys.readouterr().err


def test_concept_file_from_dict_needs_values():
    with pytest.raises(DataError, match="no concepts"):
        concept_file_from_dict({})


@pytest.mark.slow
def test_minilm_annotates_obvious_reviews(concept_file):
    ann = annotate(["The food was delicious and the waiter was friendly.",
                    "The food was bland and the waiter was rude.",
                    "We parked across the street."], concept_file, annotator="minilm")
    assert ann.column(0)[:2] == ["Positive", "Negative"] and ann.column(1)[:2] == ["Positive", "Negative"]
    assert ann.column(0)[2] == ann.column(1)[2] == "not said"
