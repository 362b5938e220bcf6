"""Texts as the model reads them: checked lists of texts and tokenized batches."""

from __future__ import annotations

from typing import Iterator, Sequence

import numpy as np
import torch
from transformers import BatchEncoding, PreTrainedTokenizerBase

from .reading import is_blank


def check_texts(texts: Sequence[str]) -> list[str]:
    """A list of non-empty strings, or a TypeError/ValueError naming the first bad one."""
    if isinstance(texts, str):
        raise TypeError("expected a list of texts, got one str; wrap it in a list")
    texts = list(texts)
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise TypeError(f"text {i}: expected a str, got {type(text).__name__}")
        if is_blank(text):
            raise ValueError(f"text {i}: empty text (nothing but spaces or invisible characters)")
    return texts


def truncated(tokenizer: PreTrainedTokenizerBase, texts: Sequence[str], max_length: int) -> list[bool]:
    """Per text, whether the model reads only its first ``max_length`` tokens
    (counted with special tokens; no "indexing errors" warning for long ones)."""
    if not texts:
        return []
    ids = tokenizer(list(texts), truncation=False, verbose=False, return_attention_mask=False)["input_ids"]
    return [len(x) > max_length for x in ids]


def encode(tokenizer: PreTrainedTokenizerBase, texts: Sequence[str], max_length: int, **extra) -> BatchEncoding:
    """Texts as the model reads them: the first ``max_length`` tokens of each, padded to
    the longest, as tensors (``extra``: more of the tokenizer's options, e.g. offsets).
    Every tokenizing of model inputs goes through here."""
    return tokenizer(list(texts), padding=True, truncation=True, max_length=max_length, return_tensors="pt", **extra)


def iter_batches(
    tokenizer: PreTrainedTokenizerBase,
    texts: Sequence[str],
    order: Sequence[int],
    batch_size: int,
    max_length: int,
) -> Iterator[tuple[np.ndarray, dict[str, torch.Tensor]]]:
    """(indices, tokenized batch) over ``texts`` in ``order``, padded per batch."""
    for start in range(0, len(order), batch_size):
        idx = np.asarray(order[start : start + batch_size])
        enc = encode(tokenizer, [texts[i] for i in idx], max_length)
        yield idx, {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}
