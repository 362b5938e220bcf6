"""Concept values for texts without annotations (``sparsecbm annotate``).

``concept_file`` reads the TOML file of concepts and example phrases, ``encoder`` embeds
sentences, ``scoring`` decides each concept with no labelled row, ``calibration`` learns from a
few labelled rows, and ``annotate`` ties them together and writes the annotated file.
"""

from .annotate import Annotations, annotate, read_labelled
from .concept_file import ConceptFile, ConceptSpec, read_concept_file
from .encoder import SentenceEncoder
from .scoring import clauses, score_texts

__all__ = ["Annotations", "ConceptFile", "ConceptSpec", "SentenceEncoder", "annotate", "clauses",
           "read_concept_file", "read_labelled", "score_texts"]
