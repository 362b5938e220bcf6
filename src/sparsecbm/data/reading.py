"""Reading the user's files: rows of CSV/TSV/JSONL/JSON, cells checked and normalised, texts and corrections."""

from __future__ import annotations

import csv
import io
import json
import logging
import os
import unicodedata
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping, Sequence

import numpy as np

from .schema import UNKNOWN, DataError, Schema, Split, value_key

log = logging.getLogger(__name__)

# Misspellings seen in the real files, mapped only when the target value is declared.
_TYPOS = {"unkown": UNKNOWN, "unknwon": UNKNOWN, "unknow": UNKNOWN}
TABLE_SUFFIXES = (".csv", ".tsv", ".jsonl", ".json")
CONFIDENCE_SUFFIX = "_confidence"  # sparsecbm annotate's column beside each concept's values
_INVISIBLE = {"Zs", "Zl", "Zp", "Cc", "Cf"}  # Unicode categories of spaces, controls and formatting marks


# --------------------------------------------------------------------------- values


def is_blank(text: str) -> bool:
    """Whether ``text`` shows nothing to read: only spaces, control characters and
    invisible formatting marks (zero-width spaces and joiners, byte-order marks)."""
    return all(unicodedata.category(ch) in _INVISIBLE for ch in text)


class Normaliser:
    """Maps raw cells onto declared values and counts what it had to tidy."""

    def __init__(self) -> None:
        self.counts: Counter[tuple[str, str, str, str]] = Counter()

    @staticmethod
    def key(raw: str) -> str:
        k = value_key(raw)
        return _TYPOS.get(k, k)

    def __call__(self, raw: str, allowed: Sequence[str], where: tuple[str, str]) -> str | None:
        if raw in allowed:
            return raw
        by_key = {self.key(v): v for v in allowed}
        value = by_key.get(self.key(raw))
        if value is not None:
            self.counts[(where[0], where[1], raw, value)] += 1
        return value

    def report(self) -> None:
        for (file, column, raw, value), n in sorted(self.counts.items()):
            log.info("%s: normalised %d cell(s) in column %r: %r -> %r", file, n, column, raw, value)

    @property
    def total(self) -> int:
        return sum(self.counts.values())


def infer_values(cells: Iterable[str]) -> tuple[str, ...]:
    """Distinct values of a column, spellings that differ only in case/space/typo merged."""
    spellings: dict[str, Counter[str]] = {}
    for cell in cells:
        cell = " ".join(cell.split())
        if cell:
            spellings.setdefault(Normaliser.key(cell), Counter())[cell] += 1
    values = [c.most_common(1)[0][0] for c in spellings.values()]
    if all(v.lstrip("-").isdigit() for v in values):
        return tuple(sorted(values, key=int))
    return tuple(sorted(values))


# --------------------------------------------------------------------------- reading files


def read_file_text(path: Path) -> str:
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file")
    if path.is_dir():
        raise DataError(f"{path}: is a folder, expected a data file")
    raw = path.read_bytes()
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        raise DataError(
            f"{path}: line {line}: not valid UTF-8 (byte 0x{raw[e.start]:02x}); "
            "re-save the file as UTF-8"
        ) from None


def iter_rows(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """(row number as a person would count it, record) for CSV/TSV/JSONL/JSON files."""
    text = read_file_text(path)
    suffix = path.suffix.lower()
    if suffix in (".csv", ".tsv"):
        reader = csv.DictReader(io.StringIO(text, newline=""), delimiter="\t" if suffix == ".tsv" else ",")
        if not reader.fieldnames:
            raise DataError(f"{path}: empty file, expected a header row")
        seen, dupes = set(), []
        for name in reader.fieldnames:
            if name in seen and name not in dupes:
                dupes.append(name)
            seen.add(name)
        if dupes:  # DictReader would silently keep the last one's cells
            raise DataError(f"{path}: row 1: duplicated column name(s) {dupes}; rename or remove the repeats")
        # Spreadsheet numbering (a quoted cell may span lines): the header is
        # row 1, the first example row 2.
        for row, record in enumerate(reader, start=2):
            if None in record:
                raise DataError(
                    f"{path}: row {row}: more cells than the {len(reader.fieldnames)} "
                    "header columns (an unquoted comma?)"
                )
            yield row, record
    elif suffix == ".jsonl":
        for lineno, line in enumerate(text.splitlines(), start=1):
            if line.strip():
                yield lineno, _json_object(_json(line, path, lineno), path, f"line {lineno}")
    elif suffix == ".json":
        records = _json_list(text, path)
        if not isinstance(records, list):
            raise DataError(f"{path}: expected a JSON list of objects (or JSON Lines: one object a line)")
        for i, record in enumerate(records):
            yield i, _json_object(record, path, f"item {i}")
    else:
        raise DataError(f"{path}: unsupported file type {suffix!r}; use .csv, .tsv, .jsonl or .json")


def _json_list(text: str, path: Path) -> Any:
    """A .json file's content; JSON Lines saved under .json (one object a line) is read as
    the list of its objects, items numbered from 0 as in a JSON list."""
    try:
        return _json(text, path)
    except DataError:
        lines = [line for line in text.splitlines() if line.strip()]
        try:
            records = [json.loads(line) for line in lines]
        except json.JSONDecodeError:
            records = None
        if len(lines) < 2 or records is None or not all(isinstance(r, dict) for r in records):
            raise
        log.info("%s: read as JSON Lines (one object a line; %d objects)", path, len(records))
        return records


def _json(text: str, path: Path, line: int | None = None) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise DataError(f"{path}: line {line or e.lineno}: not valid JSON ({e.msg})") from None


def _json_object(value: Any, path: Path, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise DataError(f"{path}: {where}: expected a JSON object")
    return value


def row_label(path: Path, row: int) -> str:
    return f"{path}: {'item' if path.suffix.lower() == '.json' else 'row' if path.suffix.lower() in ('.csv', '.tsv') else 'line'} {row}"


def cell_text(record: Mapping[str, Any], column: str, path: Path, row: int) -> str:
    if column not in record:
        raise DataError(f"{row_label(path, row)}: no column {column!r}; it has {sorted(record)}")
    value = record[column]
    if value is None:
        return ""
    if not isinstance(value, (str, int, float)):
        raise DataError(f"{row_label(path, row)}: column {column!r}: expected text, got {value!r}")
    return str(value)


def check_columns(path: Path, rows: list[tuple[int, dict]], columns: Sequence[str]) -> None:
    if not rows:
        raise DataError(f"{path}: no examples")
    present = set(rows[0][1])
    missing = [c for c in columns if c not in present]
    if missing:
        raise DataError(f"{path}: missing column(s) {missing}; the file has {sorted(present)}")


@dataclass(frozen=True)
class Columns:
    text: str
    label: str
    concepts: tuple[str, ...]  # source columns, in schema order
    # Cells that mean "unknown" for a concept (CEBaB: "" and "no majority").
    concept_aliases: Mapping[str, str] = field(default_factory=dict)
    drop_labels: tuple[str, ...] = ()  # rows with these labels are dropped (CEBaB train)
    group: str | None = None  # the column naming each row's family (Split.groups), if any


def parse_rows(
    path: Path,
    rows: list[tuple[int, dict]],
    cols: Columns,
    schema: Schema,
    norm: Normaliser,
) -> Split:
    check_columns(path, rows, (cols.text, cols.label, *cols.concepts))
    texts, labels, concepts, groups = [], [], [], []
    dropped = 0
    for row, record in rows:
        where = row_label(path, row)
        label_raw = cell_text(record, cols.label, path, row)
        if label_raw.strip() in cols.drop_labels:
            dropped += 1
            continue
        text = cell_text(record, cols.text, path, row).strip()
        if not text:
            raise DataError(f"{where}: column {cols.text!r}: empty text")
        label = norm(label_raw, schema.labels, (str(path), cols.label))
        if label is None:
            raise DataError(
                f"{where}: column {cols.label!r}: label {label_raw!r} is not one of {list(schema.labels)}"
            )
        values = []
        for column, allowed in zip(cols.concepts, schema.concept_values):
            raw = cell_text(record, column, path, row)
            raw = cols.concept_aliases.get(raw.strip(), raw)
            value = norm(raw, allowed, (str(path), column))
            if value is None:
                hint = " (empty cell)" if not raw.strip() else ""
                raise DataError(
                    f"{where}: column {column!r}: value {raw!r}{hint} is not one of {list(allowed)}"
                )
            values.append(allowed.index(value))
        texts.append(text)
        if cols.group is not None:
            groups.append(cell_text(record, cols.group, path, row).strip())
        labels.append(schema.labels.index(label))
        concepts.append(values)
    if dropped:
        log.info("%s: dropped %d row(s) labelled %s", path, dropped, " / ".join(map(repr, cols.drop_labels)))
    if not texts:
        raise DataError(f"{path}: no usable examples")
    return Split(
        texts=tuple(texts),
        labels=np.asarray(labels, dtype=np.int64),
        concepts=np.asarray(concepts, dtype=np.int64).reshape(len(texts), len(cols.concepts)),
        source=str(path),
        groups=tuple(groups) if cols.group is not None else None,
    )


def read_texts(path: str | os.PathLike, text_column: str | None = None, *,
               skip_blank: bool = False) -> tuple[list[str], list[int], list[int]]:
    """(texts, where each was, the blank ones skipped) from a plain text file (one text
    a line; positions are line numbers) or from one column (``text_column``, default
    ``text``) of a CSV/TSV/JSONL/JSON table (positions are rows). A blank text is an
    error naming its line or row unless ``skip_blank``; so is a file with no text."""
    path = Path(path)
    if path.suffix.lower() in TABLE_SUFFIXES:
        rows = list(iter_rows(path))
        if not rows:
            raise DataError(f"{path}: the file has no rows (only a header, or nothing)")
        column = text_column or "text"
        if column not in rows[0][1]:
            raise DataError(f"{path}: no column {column!r}; it has {sorted(rows[0][1])} (choose one with --text-column)")
        cells = [(row, cell_text(record, column, path, row)) for row, record in rows]
        what = f": column {column!r}"
    else:
        if text_column:
            raise DataError(f"{path}: a text column applies to a table (.csv, .tsv, .jsonl, .json), "
                            "not to a file of lines")
        content = read_file_text(path)
        if is_blank(content):
            raise DataError(f"{path}: the file is empty" if not content else f"{path}: only blank lines")
        cells = list(enumerate(content.splitlines(), start=1))
        what = ""
    texts, numbers, skipped = [], [], []
    for number, text in cells:
        if not is_blank(text):
            texts.append(text)
            numbers.append(number)
        elif skip_blank:
            skipped.append(number)
        else:
            raise DataError(f"{row_label(path, number)}{what} is blank; remove it or pass --skip-blank")
    return texts, numbers, skipped


def read_corrections(
    path: str | os.PathLike, *, value: str | None = None, text_column: str = "text", value_column: str = "value",
    label_column: str = "label",
) -> tuple[list[str], list[str], list[str] | None]:
    """(texts, values, labels or None) from a CSV/TSV/JSONL/JSON file of corrections:
    a ``text`` column, a ``value`` column (or one ``value`` for every row) and an
    optional ``label`` column. A blank text or value is an error naming its row."""
    path = Path(path)
    rows = list(iter_rows(path))
    check_columns(path, rows, [text_column] + ([] if value is not None else [value_column]))
    has_labels = label_column in rows[0][1]
    texts, values, labels = [], [], []
    for row, record in rows:
        text = cell_text(record, text_column, path, row).strip()
        given = value if value is not None else cell_text(record, value_column, path, row).strip()
        for column, cell in ((text_column, text), (value_column, given)):
            if not cell:
                raise DataError(f"{row_label(path, row)}: column {column!r} is empty")
        texts.append(text)
        values.append(given)
        if has_labels:
            label = cell_text(record, label_column, path, row).strip()
            if not label:
                raise DataError(f"{row_label(path, row)}: column {label_column!r} is empty (leave the column out if labels are unknown)")
            labels.append(label)
    return texts, values, labels if has_labels else None
