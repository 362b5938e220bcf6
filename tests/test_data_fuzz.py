"""Property-based fuzz of the table loader: any file gets a Dataset or one DataError naming it."""

import csv
import io
import json
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from sparsecbm.data import DataError, load_table

NAMES = st.sampled_from(["text", "label", "food", "service", "", " text", "Text", "label ", "x,y", 'q"q', "é"])
CELLS = st.one_of(
    st.sampled_from(["", " ", "Positive", "Negative", "unknown", "1", "2", "a \"quoted\" review", "line\nbreak",
                     "comma, inside", "ünïcödé", "\t", "NaN", "None"]),
    st.text(max_size=12),
)
ENCODINGS = st.sampled_from(["utf-8", "utf-8-sig", "latin-1", "utf-16", "cp1252"])


@st.composite
def tables(draw):
    """Anything (random headers and ragged rows), or a nearly valid table with a few bad cells."""
    if draw(st.booleans()):
        header = draw(st.lists(NAMES, min_size=0, max_size=6))
        n_rows = draw(st.integers(0, 6))
        return header, [draw(st.lists(CELLS, min_size=0, max_size=len(header) + 1)) for _ in range(n_rows)]
    header = draw(st.permutations(["text", "label", "food"])) + draw(st.lists(NAMES, max_size=2))
    good = {"text": st.sampled_from(["good food", "rude waiter, cold soup", "ünïcödé \"quoted\" text"]),
            "label": st.sampled_from(["1", "2"]), "food": st.sampled_from(["Positive", "Negative", "unknown"])}
    rows = []
    for _ in range(draw(st.integers(2, 12))):
        bad = draw(st.integers(0, 12))  # mostly clean rows
        rows.append([draw(CELLS) if i == bad else draw(good.get(name, CELLS)) for i, name in enumerate(header)])
    return header, rows


def _csv_bytes(header, rows, encoding, delimiter=","):
    buf = io.StringIO()
    writer = csv.writer(buf, delimiter=delimiter)
    if header:
        writer.writerow(header)
    writer.writerows(rows)
    try:
        return buf.getvalue().encode(encoding)
    except UnicodeEncodeError:
        return buf.getvalue().encode("utf-8", errors="replace")


def _jsonl_bytes(header, rows, encoding):
    lines = [json.dumps(dict(zip(header, row))) if row else "" for row in rows]
    return "\n".join(lines).encode("utf-8") if encoding != "utf-16" else "\n".join(lines).encode("utf-16")


def _check(path: Path, data: bytes):
    path.write_bytes(data)
    try:
        dataset = load_table(path, text_column="text", label_column="label", concept_columns=("food",))
    except DataError as e:
        assert str(path) in str(e) or path.name in str(e), str(e)  # names the file
        event("DataError")
        return
    event("loaded")
    # Loaded: every split is consistent with its schema.
    for split in dataset.splits.values():
        assert len(split.texts) == len(split.labels) == len(split.concepts)
        assert all(isinstance(t, str) and t.strip() for t in split.texts)
        assert ((0 <= split.labels) & (split.labels < len(dataset.schema.labels))).all()
        assert ((0 <= split.concepts) & (split.concepts < len(dataset.schema.concept_values[0]))).all()


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(table=tables(), encoding=ENCODINGS, kind=st.sampled_from(["csv", "tsv", "jsonl"]))
def test_table_loader_never_raises_anything_but_a_named_data_error(table, encoding, kind):
    header, rows = table
    data = (_jsonl_bytes(header, rows, encoding) if kind == "jsonl"
            else _csv_bytes(header, rows, encoding, "\t" if kind == "tsv" else ","))
    with tempfile.TemporaryDirectory() as tmp:
        _check(Path(tmp) / f"train.{kind}", data)


@settings(max_examples=100, deadline=None)
@given(data=st.binary(max_size=200))
def test_arbitrary_bytes_get_a_data_error(data):
    with tempfile.TemporaryDirectory() as tmp:
        _check(Path(tmp) / "train.csv", data)
