"""The concept file of ``sparsecbm annotate``: each concept, its values and a few example phrases per value.

A TOML file, one table per concept::

    unknown = "unknown"      # the value of a concept a text does not mention (default "unknown")
    threshold = 0.45         # optional: how similar a clause must be to count as a mention

    [food]
    about = ["the food", "the dishes"]           # optional: phrases naming the topic itself
    Positive = ["The food was delicious.", "Best dumplings in town."]
    Negative = ["The food was bland."]

Every key of a concept table other than ``about`` is a value the text can mention, with its
phrases (a list of strings, or one string). The "not mentioned" value takes no phrases: it is
what a concept gets when no clause of the text is about it. A key that looks like a misspelt
``about`` (``abuot``, ``About``) is an error, not a new value, and so is one phrase listed
under two values of a concept.
"""

from __future__ import annotations

import difflib
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import tomllib

from ..data import DataError
from ..data.schema import value_key

DEFAULT_THRESHOLD = 0.45  # chosen on CEBaB dev (docs/annotation.md); a file may set its own


@dataclass(frozen=True)
class ConceptSpec:
    """One concept: the phrases of each value a text can mention, and optional topic phrases."""

    name: str
    phrases: tuple[tuple[str, tuple[str, ...]], ...]  # (mentioned value, its phrases), in file order
    about: tuple[str, ...] = ()

    @property
    def mentioned(self) -> tuple[str, ...]:
        return tuple(value for value, _ in self.phrases)


@dataclass(frozen=True)
class ConceptFile:
    """The concepts to annotate, the name of "not mentioned", and the mention threshold."""

    concepts: tuple[ConceptSpec, ...]
    unknown: str = "unknown"
    threshold: float = DEFAULT_THRESHOLD
    source: str = ""

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.concepts)

    def values(self, k: int) -> tuple[str, ...]:
        """Concept k's values: those a text can mention, then "not mentioned" last."""
        return (*self.concepts[k].mentioned, self.unknown)


def read_concept_file(path: str | os.PathLike) -> ConceptFile:
    """Read and check a concept file; every mistake names the file and the key."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such concept file")
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise DataError(f"{path}: not a valid TOML concept file ({e})") from None
    return concept_file_from_dict(raw, source=str(path))


def concept_file_from_dict(raw: dict[str, Any], *, source: str = "concept file") -> ConceptFile:
    unknown = raw.get("unknown", "unknown")
    if not isinstance(unknown, str) or not unknown.strip():
        raise DataError(f"{source}: 'unknown' must be a non-empty string (the value of a concept not mentioned), "
                        f"got {unknown!r}")
    threshold = raw.get("threshold", DEFAULT_THRESHOLD)
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not -1 < threshold < 1 \
            or math.isnan(threshold):
        raise DataError(f"{source}: 'threshold' must be a cosine similarity between -1 and 1, got {threshold!r}")
    concepts = []
    for name, table in raw.items():
        if name in ("unknown", "threshold"):
            continue
        if not isinstance(table, dict):
            raise DataError(f"{source}: {name!r} is not a concept table ([{name}] with values and phrases) "
                            "nor one of the settings 'unknown' and 'threshold'")
        concepts.append(_concept(name, table, unknown, source))
    if not concepts:
        raise DataError(f"{source}: no concepts; add a table per concept, e.g. [food] with "
                        "Positive = [\"The food was delicious.\"]")
    return ConceptFile(tuple(concepts), unknown=unknown, threshold=float(threshold), source=source)


def _concept(name: str, table: dict[str, Any], unknown: str, source: str) -> ConceptSpec:
    about = _phrases(table.get("about", []), f"{source}: [{name}] about", allow_empty=True)
    phrases = []
    seen: dict[str, str] = {}  # a phrase (case and spaces aside) -> the value it was first listed under
    for value, cell in table.items():
        if value == "about":
            continue
        where = f"{source}: [{name}] {value}"
        if value == unknown:
            raise DataError(f"{where}: {unknown!r} is the value of a concept not mentioned and takes no phrases; "
                            "remove it (or rename the not-mentioned value with the top-level 'unknown')")
        if difflib.SequenceMatcher(None, value.casefold(), "about").ratio() >= 0.75:
            raise DataError(f"{where}: {value!r} looks like a misspelt 'about' (the topic's own phrases), not a value "
                            "of the concept; spell it 'about', or give the value another name")
        cells = _phrases(cell, where)
        for phrase in cells:
            key = value_key(phrase)
            if key in seen and seen[key] != value:
                raise DataError(f"{where}: the phrase {phrase!r} is also listed under {seen[key]!r}; a phrase can "
                                "stand for one value only")
            seen[key] = value
        phrases.append((value, cells))
    if not phrases:
        raise DataError(f"{source}: [{name}] lists no values; give at least one value with example phrases")
    return ConceptSpec(name, tuple(phrases), about)


def _phrases(cell: Any, where: str, *, allow_empty: bool = False) -> tuple[str, ...]:
    cells = [cell] if isinstance(cell, str) else cell
    if not isinstance(cells, list) or not all(isinstance(c, str) for c in cells):
        raise DataError(f"{where}: expected a list of phrases (strings), got {cell!r}")
    phrases = tuple(c.strip() for c in cells if c.strip())
    if not phrases and not allow_empty:
        raise DataError(f"{where}: no phrases; give one or more example phrases for this value")
    return phrases
