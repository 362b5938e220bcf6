import json
import logging

import numpy as np
import pytest

from sparsecbm.data import (
    IMDBC_CONCEPTS,
    SENTIMENT,
    DataError,
    load_cebab,
    load_dataset,
    load_imdbc,
    load_table,
)

from .conftest import CONCEPTS, WORDS


def test_cebab_follows_the_paper_protocol(shared_data):
    data = load_cebab(shared_data)
    assert {s: len(data[s]) for s in ("train", "dev", "test")} == {"train": 1463, "dev": 1673, "test": 1685}
    assert data.schema.labels == ("1", "2", "3", "4", "5")
    assert data.schema.concepts == ("food", "ambiance", "service", "noise")
    assert data.schema.concept_values == (SENTIMENT,) * 4
    raw = json.loads((shared_data / "cebab" / "test.json").read_text())
    test = data["test"]
    # Row i of the split is row i of the file; label = rating - 1; "" -> unknown.
    for i in (0, 100, 1684):
        assert test.texts[i] == raw[i]["description"].strip()
        assert test.labels[i] == int(raw[i]["review_majority"]) - 1
        cell = raw[i]["noise_aspect_majority"]
        expected = SENTIMENT.index(cell) if cell in SENTIMENT else SENTIMENT.index("unknown")
        assert test.concepts[i, 3] == expected
    assert len(load_cebab(shared_data, test_rows=None)["test"]) == 1689


def test_imdbc_normalises_messy_cells_and_says_so(shared_data, caplog):
    with caplog.at_level(logging.INFO, logger="sparsecbm"):
        data = load_imdbc(shared_data)
    assert {s: len(data[s]) for s in ("train", "dev", "test")} == {"train": 100, "dev": 50, "test": 50}
    assert data.schema.concepts == IMDBC_CONCEPTS
    assert data.schema.labels == ("Negative", "Positive")
    messages = " ".join(r.getMessage() for r in caplog.records)
    assert "normalised 3 cell(s) in column 'acting': 'Negative ' -> 'Negative'" in messages
    assert "normalised 1 cell(s) in column 'storyline': 'Unkown' -> 'unknown'" in messages


def test_unknown_split_is_a_clear_error(shared_data):
    with pytest.raises(DataError, match="no split 'validation'"):
        load_imdbc(shared_data)["validation"]


def test_table_infers_values_and_holds_out_dev(reviews):
    data = load_table(reviews["train"], text_column="text", label_column="stars", concept_columns=CONCEPTS)
    assert data.schema.labels == ("bad", "good")
    assert data.schema.concept_values == (("Negative", "Positive", "unknown"),) * 3
    assert len(data["train"]) + len(data["dev"]) == 48
    assert len(data["dev"]) == 5  # 10 % of 48, rounded
    assert data["train"].concepts.shape == (43, 3)
    assert data["dev"].concepts.shape == (5, 3)


def test_table_with_declared_values_and_all_splits(reviews):
    data = load_table(
        reviews["train"], dev=reviews["dev"], test=reviews["test"], text_column="text",
        label_column="stars", concept_columns=["food"], labels=["bad", "good", "great"],
        concept_values={"food": ["Positive", "Negative", "unknown"]},
    )
    assert data.schema.labels == ("bad", "good", "great")
    assert data.schema.concept_values == (("Positive", "Negative", "unknown"),)
    assert [len(data[s]) for s in ("train", "dev", "test")] == [48, 16, 16]
    # Indices follow the declared order: the text's food word matches the value.
    for text, food in zip(data["train"].texts, data["train"].concepts[:, 0]):
        value = data.schema.concept_values[0][food]
        assert text.startswith(f"the food was {WORDS[value]} ")


def _write(path, text, encoding="utf-8"):
    path.write_bytes(text.encode(encoding))
    return path


def test_numeric_labels_sort_numerically(tmp_path):
    f = _write(tmp_path / "d.csv", "text,y\n" + "".join(f"t{i},{i % 11}\n" for i in range(30)))
    assert load_table(f, text_column="text", label_column="y").schema.labels == tuple(str(i) for i in range(11))


def test_case_and_space_variants_are_merged_and_counted(tmp_path, caplog):
    f = _write(tmp_path / "d.csv", "text,y,c\na,pos,Yes\nb,neg, yes\nc,pos,no\nd,Pos,NO \n")
    with caplog.at_level(logging.INFO, logger="sparsecbm"):
        data = load_table(f, text_column="text", label_column="y", concept_columns=["c"])
    assert data.schema.labels == ("neg", "pos")
    assert data.schema.concept_values == (("Yes", "no"),)
    assert sum("normalised" in r.getMessage() for r in caplog.records) == 3


@pytest.mark.parametrize(
    "content, message",
    [
        ("text,y,c\nhello,a,x\n", r"missing column\(s\) \['stars'\]"),
        ("text,stars,c\nhello,a,x\n  ,b,y\n", r"d\.csv: row 3: column 'text': empty text"),
        ("text,stars,c\nhello,a,x\nbye,b,y,extra\n", r"d\.csv: row 3: more cells"),
        ("", r"d\.csv: empty file"),
    ],
)
def test_malformed_csv_names_file_row_and_column(tmp_path, content, message):
    f = _write(tmp_path / "d.csv", content)
    with pytest.raises(DataError, match=message):
        load_table(f, text_column="text", label_column="stars", concept_columns=["c"])


def test_label_outside_declared_set(tmp_path):
    f = _write(tmp_path / "d.csv", "text,stars\nhi,good\nyo,great\n")
    with pytest.raises(DataError, match=r"d\.csv: row 3: column 'stars': label 'great' is not one of \['good', 'bad'\]"):
        load_table(f, text_column="text", label_column="stars", labels=["good", "bad"])


def test_value_unseen_in_training_is_an_error_in_other_splits(tmp_path):
    train = _write(tmp_path / "train.csv", "text,y,c\na,p,x\nb,n,y\nc,p,x\n")
    test = _write(tmp_path / "test.csv", "text,y,c\na,p,x\nb,n,z\n")
    with pytest.raises(DataError, match=r"test\.csv: row 3: column 'c': value 'z' is not one of \['x', 'y'\]"):
        load_table(train, test=test, text_column="text", label_column="y", concept_columns=["c"])


def test_non_utf8_file_names_the_line(tmp_path):
    f = _write(tmp_path / "d.csv", "text,y\nfine,a\ncaf\u00e9,b\n", encoding="latin-1")
    with pytest.raises(DataError, match=r"d\.csv: line 3: not valid UTF-8"):
        load_table(f, text_column="text", label_column="y")


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.csv: no such file"):
        load_dataset(tmp_path / "nope.csv", text_column="t", label_column="y")


def test_jsonl_errors_use_line_numbers(tmp_path):
    f = _write(tmp_path / "d.jsonl", '{"t": "a", "y": "p"}\n{"t": "b", "y": "n"}\n{"t": "", "y": "n"}\n')
    with pytest.raises(DataError, match=r"d\.jsonl: line 3: column 't': empty text"):
        load_table(f, text_column="t", label_column="y")
    bad = _write(tmp_path / "e.jsonl", '{"t": "a", "y": "p"}\n{"t": "b", \n')
    with pytest.raises(DataError, match=r"e\.jsonl: line 2: not valid JSON"):
        load_table(bad, text_column="t", label_column="y")


def test_toml_config(tmp_path, reviews):
    conf = tmp_path / "data.toml"
    conf.write_text(
        f'train = "{reviews["train"]}"\ntest = "{reviews["test"]}"\ntext_column = "text"\n'
        'label_column = "stars"\nconcept_columns = ["food", "service"]\n'
    )
    data = load_dataset(conf)
    assert data.schema.concepts == ("food", "service")
    assert len(data["test"]) == 16
    conf.write_text('train = "x.csv"\ntext_colum = "text"\n')
    with pytest.raises(DataError, match=r"unknown key\(s\) \['text_colum'\]"):
        load_dataset(conf)


def test_sample_is_seeded_and_subsets():
    from sparsecbm.data import Split

    split = Split(tuple(f"t{i}" for i in range(20)), np.arange(20), np.zeros((20, 1), dtype=np.int64))
    a, b = split.sample(5, seed=3), split.sample(5, seed=3)
    assert a.texts == b.texts and len(a) == 5
    assert all(split.texts[int(label)] == text for text, label in zip(a.texts, a.labels))
