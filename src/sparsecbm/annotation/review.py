"""An annotated file opened for review (``sparsecbm serve DIR --annotations FILE --concepts TOML``).

The explorer lists the file's rows least confident first and lets a person set a cell's value;
each fix is written back to the same file at once (to a temporary name, then renamed), with
confidence 1 (a person's value). A file changed on disk since it was read is not overwritten: the
fix is refused and the file read again.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from ..data import DataError
from ..data.reading import TABLE_SUFFIXES, cell_text, check_columns, iter_rows, row_label
from ..files import atomic_path
from .annotate import CONFIDENCE_SUFFIX, table_text
from .concept_file import ConceptFile

PERSON = 1.0  # the confidence written with a person's value


class FileChanged(Exception):
    """The annotated file changed on disk since it was read; nothing was written."""


class AnnotationFile:
    """The rows of an annotated file: ``values[i][k]`` (a value name) and ``confidence[i, k]``."""

    def __init__(self, path: str | os.PathLike, concept_file: ConceptFile, *, text_column: str = "text",
                 prefix: str = "") -> None:
        self.path, self.concept_file, self.text_column, self.prefix = Path(path), concept_file, text_column, prefix
        if self.path.suffix.lower() not in TABLE_SUFFIXES:
            raise DataError(f"{self.path}: annotations are read from a .csv, .tsv, .jsonl or .json file")
        self._read()

    def columns(self, name: str) -> tuple[str, str]:
        return self.prefix + name, self.prefix + name + CONFIDENCE_SUFFIX

    def _read(self) -> None:
        rows = list(iter_rows(self.path))
        if not rows:
            raise DataError(f"{self.path}: no rows to review")
        check_columns(self.path, rows, [self.text_column, *(c for n in self.concept_file.names for c in self.columns(n))])
        self.rows = [row for row, _ in rows]
        self.records = [record for _, record in rows]
        self.texts = [cell_text(r, self.text_column, self.path, row) for row, r in rows]
        self.confidence = np.zeros((len(rows), len(self.concept_file.names)))
        for k, name in enumerate(self.concept_file.names):
            value_col, conf_col = self.columns(name)
            allowed = self.concept_file.values(k)
            for i, (row, record) in enumerate(rows):
                value = cell_text(record, value_col, self.path, row)
                if value not in allowed:
                    raise DataError(f"{row_label(self.path, row)}: column {value_col!r}: value {value!r} is not one "
                                    f"of {list(allowed)} (the concept file's values)")
                try:
                    self.confidence[i, k] = float(cell_text(record, conf_col, self.path, row))
                except ValueError:
                    raise DataError(f"{row_label(self.path, row)}: column {conf_col!r}: expected a number, got "
                                    f"{record[conf_col]!r}") from None
        self._stamp = self._disk_stamp()

    def _disk_stamp(self) -> tuple[int, int]:
        stat = self.path.stat()
        return stat.st_mtime_ns, stat.st_size

    def _concept(self, name: str) -> int:
        if name not in self.concept_file.names:
            raise ValueError(f"concept: unknown {name!r}; the annotated concepts are {list(self.concept_file.names)}")
        return self.concept_file.names.index(name)

    def page(self, concept: str | None = None, offset: int = 0, limit: int = 50) -> dict[str, Any]:
        """Rows least confident first: by ``concept``'s confidence, or by each row's least confident concept."""
        order_by = self.confidence[:, self._concept(concept)] if concept else self.confidence.min(1)
        order = np.argsort(order_by, kind="stable")[offset: offset + limit]
        names = self.concept_file.names
        return {
            "path": str(self.path), "total": len(self.rows),
            "concepts": {n: list(self.concept_file.values(k)) for k, n in enumerate(names)},
            "rows": [{"index": int(i), "row": self.rows[i], "text": self.texts[i],
                      "concepts": {n: {"value": self.records[i][self.columns(n)[0]],
                                       "confidence": round(float(self.confidence[i, k]), 4)} for k, n in enumerate(names)}}
                     for i in order],
        }

    def fix(self, index: Any, concept: Any, value: Any) -> dict[str, Any]:
        """Set row ``index``'s ``concept`` to ``value`` and write the file (confidence 1)."""
        if not isinstance(index, int) or isinstance(index, bool) or not 0 <= index < len(self.rows):
            raise ValueError(f"index: expected a row index in [0, {len(self.rows)}), got {index!r}")
        k = self._concept(concept)
        allowed = self.concept_file.values(k)
        if value not in allowed:
            raise ValueError(f"value: {value!r} is not a value of {concept!r} ({list(allowed)})")
        if self._disk_stamp() != self._stamp:
            self._read()
            raise FileChanged(f"{self.path} changed on disk since it was read; it has been read again, nothing was "
                              "written: check the row and fix it again")
        value_col, conf_col = self.columns(concept)
        record = dict(self.records[index], **{value_col: value, conf_col: PERSON})
        records = [*self.records[:index], record, *self.records[index + 1:]]
        with atomic_path(self.path) as tmp:
            tmp.write_text(table_text(records, self.path.suffix.lower()), encoding="utf-8")
        self.records, self.confidence[index, k], self._stamp = records, PERSON, self._disk_stamp()
        return {"index": index, "row": self.rows[index], "concept": concept, "value": value, "confidence": PERSON,
                "path": str(self.path)}
