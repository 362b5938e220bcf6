"""Sentence embeddings for annotation: a backbone's mean-pooled, unit-length token states.

The default backbone, MiniLM (all-MiniLM-L6-v2), is a sentence-embedding model trained for
exactly this (cosine similarity of mean-pooled states); ``mpnet`` (all-mpnet-base-v2, after
``make mpnet``) is the larger one CB-LLMs uses. Any backbone name ``train`` accepts works.
"""

from __future__ import annotations

import numpy as np
import torch
from tqdm.auto import tqdm

from ..backbones import load_backbone
from ..data.batching import iter_batches
from ..encoder import masked_mean


class SentenceEncoder:
    """``encode(texts)`` -> (n, d) float32 rows of unit length; texts are cut at ``max_length`` tokens."""

    def __init__(self, backbone: str = "minilm", *, max_length: int = 128, batch_size: int = 64,
                 device: str = "cpu") -> None:
        self.backbone, self.max_length, self.batch_size, self.device = backbone, max_length, batch_size, device
        model, self.tokenizer = load_backbone(backbone)
        self.model = model.to(device).eval()

    @classmethod
    def from_model(cls, model, tokenizer, *, max_length: int = 128, batch_size: int = 64) -> "SentenceEncoder":
        """An encoder over an already loaded backbone (tests build tiny ones from a config)."""
        encoder = cls.__new__(cls)
        encoder.backbone, encoder.max_length, encoder.batch_size, encoder.device = "given", max_length, batch_size, "cpu"
        encoder.model, encoder.tokenizer = model.eval(), tokenizer
        return encoder

    @torch.inference_mode()
    def encode(self, texts: list[str], *, progress: bool = False, desc: str = "embedding") -> np.ndarray:
        # Longest first, so each batch pads to a similar length; rows go back to their places after.
        order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
        out = np.zeros((len(texts), self.model.config.hidden_size), dtype=np.float32)
        batches = iter_batches(self.tokenizer, texts, order, self.batch_size, self.max_length)
        n_batches = -(-len(texts) // self.batch_size)
        for idx, batch in tqdm(batches, total=n_batches, desc=desc, unit="batch", disable=not progress or n_batches < 2):
            batch = {key: t.to(self.device) for key, t in batch.items()}
            hidden = self.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
            pooled = torch.nn.functional.normalize(masked_mean(hidden, batch["attention_mask"]).float(), dim=-1)
            out[idx] = pooled.cpu().numpy()
        return out
