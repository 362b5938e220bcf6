"""Word scores: a text as the words the model reads, and per concept a score for each word from
the gradient of that concept's logit at the input embeddings, taken through the concept's own
subnetwork (the dense backbone for a CBM); word pieces are summed back into words."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch

from .data.batching import encode, truncated
from .outputs import ConceptOutputs

if TYPE_CHECKING:
    from .interfaces import ClassifierLike as Classifier

METHODS = ("grad", "grad_x_input", "integrated_gradients")
# Whether a method's word scores have a sign (> 0 supports the value, < 0 argues
# against it); grad's are gradient norms, a size only.
SIGNED = {"grad": False, "grad_x_input": True, "integrated_gradients": True}


# ---------------------------------------------------------------- words


@dataclass(frozen=True)
class Words:
    """A tokenized text and which word each piece belongs to."""

    input_ids: torch.Tensor  # (1, T)
    attention_mask: torch.Tensor  # (1, T)
    spans: tuple[tuple[int, int], ...]  # character span of each word read
    piece_word: torch.Tensor  # (T,) word index per piece, -1 for special tokens
    truncated: bool

    def texts(self, text: str) -> list[str]:
        return [text[a:b] for a, b in self.spans]


def words(clf: Classifier, text: str) -> Words:
    """Tokenize ``text`` as the model reads it and group word pieces into words."""
    tok = clf.tokenizer
    if not tok.is_fast:
        raise ValueError("explanations need a fast tokenizer (word offsets); this model's tokenizer is not one")
    enc = encode(tok, [text], clf.max_length, return_offsets_mapping=True)
    word_ids = enc.word_ids(0)
    offsets = enc["offset_mapping"][0].tolist()
    spans: list[list[int]] = []
    index: dict[int, int] = {}
    piece_word = []
    for wid, (a, b) in zip(word_ids, offsets):
        if wid is None or b <= a:
            piece_word.append(-1)
            continue
        if wid not in index:
            index[wid] = len(spans)
            spans.append([a, b])
        spans[index[wid]][1] = b
        piece_word.append(index[wid])
    # Byte-level BPE offsets include the space before a word: trim it.
    for s in spans:
        while s[0] < s[1] and text[s[0]].isspace():
            s[0] += 1
    return Words(
        input_ids=enc["input_ids"],
        attention_mask=enc["attention_mask"],
        spans=tuple((a, b) for a, b in spans),
        piece_word=torch.tensor(piece_word),
        truncated=truncated(tok, [text], clf.max_length)[0],
    )


def _to_words(piece_scores: torch.Tensor, piece_word: torch.Tensor, n_words: int) -> np.ndarray:
    """Sum piece scores (T,) into word scores (n_words,); special tokens are dropped."""
    real = piece_word >= 0
    out = torch.zeros(n_words, dtype=piece_scores.dtype)
    out.index_add_(0, piece_word[real], piece_scores[real])
    return out.numpy()


# ---------------------------------------------------------------- gradients


def concept_outputs_with_grad(
    clf: Classifier, k: int, embeds: torch.Tensor, attention_mask: torch.Tensor, *, dense: bool = False,
    features: bool = False,
) -> ConceptOutputs:
    """Concept k's outputs from input embeddings, in the autograd graph, through its
    subnetwork's masked weights held as constants; the label head's features of concept k
    only with ``features`` (``model.concept_outputs``).

    ``dense=True`` reads a SparseCBM's shared weights without masks (the
    comparison the faithfulness benchmark makes)."""
    return clf.model.concept_outputs(None, attention_mask, k, dense=dense, inputs_embeds=embeds, frozen=True,
                                     features=features)


def token_scores(
    clf: Classifier,
    enc: Words,
    k: int,
    target: int | None = None,
    method: str = "grad",
    *,
    steps: int = 20,
    dense: bool = False,
    features: bool = False,
) -> tuple[np.ndarray, ConceptOutputs]:
    """Word scores for concept k's logit ``target`` (default: the predicted
    value's), and concept k's outputs on the text (one row), from the same pass
    (the label head's features of it only with ``features``).

    grad: the norm of the gradient at each piece's embedding (>= 0).
    grad_x_input: gradient . embedding (signed: > 0 supports the value).
    integrated_gradients: (x - x0) . mean gradient on ``steps`` midpoints of
    the straight path from x0 (the pad token's embedding) to x; special tokens
    stay fixed. Signed, and sums to about logit(x) - logit(x0).
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {list(METHODS)}, got {method!r}")
    model = clf.model
    device = clf.device
    ids, attn = enc.input_ids.to(device), enc.attention_mask.to(device)
    embedding = model.backbone.get_input_embeddings()
    was_training = model.training
    model.eval()
    try:
        with torch.enable_grad():
            x = embedding(ids).detach()  # (1, T, E)
            if method == "integrated_gradients":
                if steps < 1:
                    raise ValueError(f"steps must be >= 1, got {steps}")
                with torch.no_grad():
                    outputs = concept_outputs_with_grad(clf, k, x, attn, dense=dense, features=features)
                target = int(outputs.values()[0]) if target is None else target
                pad = clf.tokenizer.pad_token_id
                x0 = embedding(torch.full_like(ids, pad if pad is not None else 0)).detach()
                special = (enc.piece_word < 0).to(device).view(1, -1, 1)
                x0 = torch.where(special, x, x0)
                alphas = ((torch.arange(steps, device=device, dtype=x.dtype) + 0.5) / steps).view(-1, 1, 1)
                path = (x0 + alphas * (x - x0)).requires_grad_(True)  # (steps, T, E)
                path_logits = concept_outputs_with_grad(clf, k, path, attn.expand(steps, -1), dense=dense).logits
                (grad,) = torch.autograd.grad(path_logits[:, target].sum(), path)
                pieces = ((x - x0)[0] * grad.mean(0)).sum(-1)
            else:
                x.requires_grad_(True)
                outputs = concept_outputs_with_grad(clf, k, x, attn, dense=dense, features=features)
                target = int(outputs.values()[0]) if target is None else target
                (grad,) = torch.autograd.grad(outputs.logits[0, target], x)
                pieces = grad[0].norm(dim=-1) if method == "grad" else (grad[0] * x[0]).sum(-1)
    finally:
        model.train(was_training)
    scores = _to_words(pieces.detach().float().cpu(), enc.piece_word, len(enc.spans))
    return scores, outputs.cpu_float()
