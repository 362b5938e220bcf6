"""Label probabilities that mean what they say: temperature scaling (Guo et al. 2017).

A fine-tuned classifier is overconfident: MiniLM SparseCBM on CEBaB says "100 %" while right
65 % of the time. One number, the temperature T, divides the label logits before the softmax;
it is fitted on held-out texts by their negative log-likelihood, so that no prediction changes
(the argmax of logits / T is the argmax of the logits) and only the probabilities move toward
the accuracy they come with. The expected calibration error (ECE) measures that: the mean,
over confidence bins weighted by their size, of |accuracy - confidence|.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

ECE_BINS = 15


def fit_temperature(logits: torch.Tensor, labels: torch.Tensor | np.ndarray) -> float:
    """The T > 0 minimising the mean NLL of ``softmax(logits / T)`` for ``labels``."""
    logits = logits.detach().float().clone()
    labels = torch.as_tensor(np.asarray(labels), dtype=torch.long)
    if len(logits) == 0:
        raise ValueError("calibration needs at least one text with a label")
    log_t = torch.zeros(1, requires_grad=True)
    optimizer = torch.optim.LBFGS([log_t], lr=0.1, max_iter=200, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = F.cross_entropy(logits / log_t.exp(), labels)
        loss.backward()
        return loss

    with torch.enable_grad():
        optimizer.step(closure)
    return float(log_t.detach().exp())


def expected_calibration_error(probabilities: np.ndarray, labels: np.ndarray, bins: int = ECE_BINS) -> float:
    """ECE over ``bins`` equal-width confidence bins (the predicted label's probability)."""
    probabilities, labels = np.asarray(probabilities), np.asarray(labels)
    confidence, right = probabilities.max(1), probabilities.argmax(1) == labels
    which = np.minimum((confidence * bins).astype(int), bins - 1)
    return float(sum(abs(right[which == b].mean() - confidence[which == b].mean()) * np.mean(which == b)
                     for b in range(bins) if np.any(which == b)))


def scores(logits: torch.Tensor, labels: np.ndarray, temperature: float) -> dict[str, float]:
    """NLL and ECE of ``softmax(logits / temperature)``."""
    labels = np.asarray(labels)
    scaled = logits.float() / temperature
    return {"nll": float(F.cross_entropy(scaled, torch.as_tensor(labels, dtype=torch.long))),
            "ece": expected_calibration_error(scaled.softmax(-1).numpy(), labels)}
