"""``annotate``: concept values for texts that have none, from a concept file of example phrases.

    >>> from sparsecbm.annotation import annotate
    >>> ann = annotate("reviews.csv", "examples/cebab-concepts.toml")             # no labelled row at all
    >>> ann = annotate("reviews.csv", "concepts.toml", labelled="checked.csv")    # calibrated on a few rows
    >>> ann.write("reviews.annotated.csv"); ann.summary()["concepts"]["food"]["counts"]

Each concept gets a column of values and one of confidences. The task label, when the file has
one, is never read: concept values that copied it would leak the label into the bottleneck.
"""

from __future__ import annotations

import csv
import io
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..data import DataError
from ..data.reading import (
    CONFIDENCE_SUFFIX,
    TABLE_SUFFIXES,
    Normaliser,
    cell_text,
    check_columns,
    iter_rows,
    read_texts,
    row_label,
)
from ..files import atomic_path
from .annotators import score_with, split_annotator
from .calibration import calibrate
from .concept_file import ConceptFile, read_concept_file
from .decoder import YesNoDecoder
from .encoder import SentenceEncoder


def check_out(out: Path, name: str = "") -> None:
    """A DataError unless ``out`` has a suffix ``write`` can write (``name``: how to call it)."""
    if out.suffix.lower() not in TABLE_SUFFIXES:
        raise DataError(f"{name}{out}: write annotations to a .csv, .tsv, .jsonl or .json file")


def check_no_clash(record: dict[str, Any], concept_file: ConceptFile, prefix: str, source: str) -> None:
    """A DataError when ``record`` (a row of ``source``) already has a column ``write`` would add."""
    added = [c for name in concept_file.names for c in (prefix + name, prefix + name + CONFIDENCE_SUFFIX)]
    if clash := [c for c in added if c in record]:
        raise DataError(f"{source}: already has column(s) {clash}; choose another name with --prefix")


@dataclass
class Annotations:
    """Concept values for ``texts``: ``values[i, k]`` indexes ``concept_file.values(k)``."""

    concept_file: ConceptFile
    texts: tuple[str, ...]
    rows: tuple[int, ...]  # where each text was in its file (row or line numbers)
    values: np.ndarray  # (n, K) int64
    confidence: np.ndarray  # (n, K) float32
    evidence: tuple[tuple[str, ...], ...]  # per concept, per text: the clause that decided ("" = none)
    method: str  # "zero-label" or "calibrated on N labelled rows"
    agreement: dict[str, dict[str, Any]] | None = None  # on the labelled rows, per concept, and which was used
    seconds: float = 0.0
    records: list[dict[str, Any]] = field(default_factory=list, repr=False)  # the input rows, to write back
    source: str = ""

    def column(self, k: int) -> list[str]:
        names = self.concept_file.values(k)
        return [names[v] for v in self.values[:, k]]

    def summary(self, least: int = 10) -> dict[str, Any]:
        """Value counts and mean confidence per concept, and the ``least`` least confident
        decisions: cells with the same concept, value and deciding clause are one decision
        (listed once, with all its ``rows``: numbers as in the input file, see ``rows``)."""
        concepts = {}
        for k, name in enumerate(self.concept_file.names):
            counts = np.bincount(self.values[:, k], minlength=len(self.concept_file.values(k)))
            concepts[name] = {"counts": dict(zip(self.concept_file.values(k), map(int, counts))),
                              "mean_confidence": round(float(self.confidence[:, k].mean()), 4)}
        flat = np.argsort(self.confidence, axis=None, kind="stable")
        weakest: list[dict[str, Any]] = []
        seen: dict[tuple, dict[str, Any]] = {}
        for i, k in zip(*np.unravel_index(flat, self.confidence.shape)):
            value = self.concept_file.values(k)[self.values[i, k]]
            key = (k, value, self.evidence[k][i])
            if key in seen:
                seen[key]["rows"].append(self.rows[i])
                continue
            if len(weakest) == least:
                continue  # still collect the rows of the decisions already listed
            seen[key] = {"row": self.rows[i], "rows": [self.rows[i]], "concept": self.concept_file.names[k],
                         "value": value, "confidence": round(float(self.confidence[i, k]), 4),
                         "evidence": self.evidence[k][i], "text": self.texts[i][:160]}
            weakest.append(seen[key])
        for w in weakest:
            w["rows"].sort()
        return {"source": self.source, "rows": len(self.texts), "method": self.method, "seconds": round(self.seconds, 1),
                "concepts": concepts, "agreement_on_labelled_rows": self.agreement, "least_confident": weakest}

    def write(self, out: str | os.PathLike, *, prefix: str = "") -> Path:
        """The input rows with a value column and a confidence column per concept (named
        ``PREFIX + concept`` and ``PREFIX + concept + '_confidence'``), as CSV/TSV/JSONL/JSON
        by ``out``'s suffix; written to a temporary name, then renamed."""
        out = Path(out)
        check_out(out)
        if self.records:
            check_no_clash(self.records[0], self.concept_file, prefix, self.source)
        rows = []
        for i, record in enumerate(self.records):
            cells = dict(record)
            for k, name in enumerate(self.concept_file.names):
                cells[prefix + name] = self.concept_file.values(k)[self.values[i, k]]
                cells[prefix + name + CONFIDENCE_SUFFIX] = round(float(self.confidence[i, k]), 4)
            rows.append(cells)
        with atomic_path(out) as tmp:
            tmp.write_text(table_text(rows, out.suffix.lower()), encoding="utf-8")
        return out


def table_text(rows: list[dict[str, Any]], suffix: str) -> str:
    if suffix == ".jsonl":
        return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
    if suffix == ".json":
        return json.dumps(rows, ensure_ascii=False, indent=1) + "\n"
    buffer = io.StringIO(newline="")
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]), delimiter="\t" if suffix == ".tsv" else ",")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def annotate(
    data: str | os.PathLike | Sequence[str],
    concepts: str | os.PathLike | ConceptFile,
    *,
    text_column: str = "text",
    annotator: str = "minilm",
    labelled: str | os.PathLike | None = None,
    encoder: SentenceEncoder | None = None,
    decoder: YesNoDecoder | None = None,
    progress: bool = False,
) -> Annotations:
    """Annotate ``data`` (a CSV/TSV/JSONL/JSON file with a text column, a file of one text per
    line, or a list of texts) with the concepts of ``concepts`` (a TOML concept file). With
    ``labelled`` (a file with the text column and a column per concept holding a person's
    values), each concept is calibrated on those rows: the zero-label rule or a classifier, whichever
    agrees best with those rows held out (:func:`~sparsecbm.annotation.calibration.calibrate`; all are reported)."""
    split_annotator(annotator)  # a bad name fails before any file is read
    concept_file = concepts if isinstance(concepts, ConceptFile) else read_concept_file(concepts)
    texts, rows, records, source = _read_data(data, text_column)
    gold_texts, gold = read_labelled(labelled, concept_file, text_column) if labelled is not None else ([], None)
    start = time.perf_counter()
    # The labelled rows are scored with the data, so both are read against the same medians.
    scores = score_with(texts + gold_texts, concept_file, annotator, encoder=encoder, decoder=decoder, progress=progress)
    n = len(texts)
    values = np.stack([s.values[:n] for s in scores], 1)
    confidence = np.stack([s.confidence[:n] for s in scores], 1)
    method, agreement = "zero-label", None
    if gold is not None:
        mentioned = [spec.mentioned for spec in concept_file.concepts]
        values, confidence, by_index = calibrate([s.take(slice(n, None)) for s in scores], gold,
                                                 [s.take(slice(0, n)) for s in scores], mentioned)
        agreement = {name: by_index[k] for k, name in enumerate(concept_file.names)}
        method = f"calibrated on {len(gold_texts)} labelled rows"
    return Annotations(concept_file, tuple(texts), tuple(rows), values, confidence, tuple(s.evidence[:n] for s in scores),
                       method, agreement, time.perf_counter() - start, records, source)


def _read_data(data, text_column: str) -> tuple[list[str], list[int], list[dict[str, Any]], str]:
    if isinstance(data, (str, os.PathLike)):
        path = Path(data)
        texts, rows, _ = read_texts(path, text_column if path.suffix.lower() in TABLE_SUFFIXES else None)
        if path.suffix.lower() in TABLE_SUFFIXES:
            records = [record for _, record in iter_rows(path)]
        else:
            records = [{"text": t} for t in texts]
        return texts, rows, records, str(path)
    texts = list(data)
    if not texts or not all(isinstance(t, str) and t.strip() for t in texts):
        raise DataError("annotate: expected a non-empty list of non-blank texts")
    return texts, list(range(len(texts))), [{"text": t} for t in texts], "texts"


def read_labelled(path: str | os.PathLike, concept_file: ConceptFile, text_column: str = "text"
                  ) -> tuple[list[str], np.ndarray]:
    """(texts, (n, K) value indices) from a file of rows a person labelled: a text column and
    one column per concept of the concept file, with its values (case and spaces tidied)."""
    path = Path(path)
    rows = list(iter_rows(path))
    check_columns(path, rows, [text_column, *concept_file.names])
    norm, texts, values = Normaliser(), [], []
    for row, record in rows:
        text = cell_text(record, text_column, path, row).strip()
        if not text:
            raise DataError(f"{row_label(path, row)}: column {text_column!r} is empty")
        texts.append(text)
        cells = []
        for k, name in enumerate(concept_file.names):
            allowed = concept_file.values(k)
            raw = cell_text(record, name, path, row)
            value = norm(raw.strip(), allowed, (str(path), name))
            if value is None:
                raise DataError(f"{row_label(path, row)}: column {name!r}: value {raw!r} is not one of {list(allowed)}")
            cells.append(allowed.index(value))
        values.append(cells)
    norm.report()
    return texts, np.asarray(values, dtype=np.int64).reshape(len(texts), len(concept_file.names))
