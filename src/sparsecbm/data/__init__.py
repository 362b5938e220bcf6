"""Concept-annotated text classification data: CEBaB, IMDB-C and the user's own files.

Every loader returns a :class:`Dataset`: a :class:`Schema` (label values, concept
names and each concept's values) and named :class:`Split` objects holding texts,
label indices and an ``(n, K)`` array of concept indices.

Bad input raises :class:`DataError` (a ``ValueError``) whose message names the
file, the row and the column. Unambiguous mess (stray spaces, letter case, the
"Unkown" misspelling) is normalised and counted, never silently guessed.

The package: ``schema`` (the types), ``reading`` (rows and cells of the
user's files), ``corpora`` (CEBaB, IMDB-C), ``tables`` (the user's own
files and data configs), ``loading`` (``load_dataset``, ``dataset_from_spec``)
and ``batching`` (texts as the model reads them).
"""

from .corpora import CEBAB_CONCEPTS, CEBAB_TEST_ROWS, DATA_DIR_ENV, IMDBC_CONCEPTS, find_data_dir, load_cebab, load_imdbc
from .loading import dataset_from_spec, is_data_config, load_dataset
from .reading import TABLE_SUFFIXES, is_blank, read_corrections, read_texts
from .schema import SENTIMENT, UNKNOWN, DataError, Dataset, Schema, Split
from .tables import held_out_note, load_config_file, load_table

__all__ = [
    "CEBAB_CONCEPTS", "CEBAB_TEST_ROWS", "DATA_DIR_ENV", "IMDBC_CONCEPTS", "SENTIMENT", "TABLE_SUFFIXES", "UNKNOWN",
    "DataError", "Dataset", "Schema", "Split", "dataset_from_spec", "find_data_dir", "held_out_note", "is_blank", "is_data_config",
    "load_cebab", "load_config_file", "load_dataset", "load_imdbc", "load_table", "read_corrections", "read_texts",
]
