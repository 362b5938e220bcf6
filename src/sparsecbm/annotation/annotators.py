"""Which annotator scores the texts: a sentence encoder, the instruct decoder, or both.

``--annotator`` names one of them (``minilm``, ``mpnet``, a backbone folder; ``smollm2``) or a
sentence encoder and the decoder joined by ``+`` (``minilm+smollm2``). Together, the encoder's
zero-label rule decides and a calibrator (``--labelled``) learns from both sets of features.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from ..settings import SettingError
from .concept_file import ConceptFile
from .decoder import YesNoDecoder, score_texts_decoder
from .encoder import SentenceEncoder
from .scoring import ConceptScores, score_texts

DECODERS = {"smollm2": "smollm2-135m"}


def split_annotator(annotator: str) -> tuple[str | None, str | None]:
    """``annotator`` -> (sentence encoder backbone or None, decoder backbone or None)."""
    parts = annotator.split("+")
    encoders = [p for p in parts if p not in DECODERS]
    decoders = [DECODERS[p] for p in parts if p in DECODERS]
    if not all(p.strip() for p in parts) or len(encoders) > 1 or len(decoders) > 1:
        raise SettingError("annotator", f" {annotator!r}: expected a sentence encoder (minilm, mpnet or a folder), "
                           f"{' or '.join(DECODERS)}, or one of each joined by '+' (minilm+smollm2)")
    return (encoders[0] if encoders else None), (decoders[0] if decoders else None)


def score_with(texts: list[str], concept_file: ConceptFile, annotator: str, *, encoder: SentenceEncoder | None = None,
               decoder: YesNoDecoder | None = None, progress: bool = False) -> list[ConceptScores]:
    """One :class:`ConceptScores` per concept from the annotator(s) ``annotator`` names; a model
    given as ``encoder`` / ``decoder`` replaces loading the named one."""
    encoder_name, decoder_name = split_annotator(annotator)
    by_encoder = by_decoder = None
    if encoder_name is not None:
        by_encoder = score_texts(texts, concept_file, encoder or SentenceEncoder(encoder_name), progress=progress)
    if decoder_name is not None:
        by_decoder = score_texts_decoder(texts, concept_file, decoder or YesNoDecoder(decoder_name), progress=progress)
    if by_encoder is None or by_decoder is None:
        return by_encoder or by_decoder
    return [replace(e, features=np.concatenate([e.features, d.features], 1)) for e, d in zip(by_encoder, by_decoder)]
