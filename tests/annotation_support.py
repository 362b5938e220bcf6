"""What the annotation tests share: a concept file, a stand-in sentence encoder, a few
reviews and a CSV writer (the ``concept_file`` fixture is in conftest.py)."""

from __future__ import annotations

import csv
import zlib

import numpy as np

CONCEPT_FILE = """
unknown = "not said"
threshold = 0.3

[food]
about = ["the food"]
Positive = ["the food was delicious", "tasty dishes"]
Negative = ["the food was bland", "cold soggy dishes"]

[service]
Positive = ["the waiter was friendly", "quick attentive staff"]
Negative = ["the waiter was rude", "slow careless staff"]
"""


class BagOfWords:
    """A stand-in sentence encoder: words hashed into 256 dimensions, unit length."""

    def encode(self, texts, *, progress=False, desc=""):
        out = np.zeros((len(texts), 256), dtype=np.float32)
        for i, text in enumerate(texts):
            for word in text.lower().replace(".", " ").replace(",", " ").split():
                if word not in ("the", "was", "and", "a", "but", "we"):
                    out[i, zlib.crc32(word.encode()) % 256] += 1
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        return out / np.where(norms > 0, norms, 1)


def write_csv(path, header, rows):
    with path.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)
    return path


REVIEWS = [
    ("The food was delicious, but the waiter was rude.", "5"),
    ("Bland food. The staff were quick and attentive.", "1"),
    ("We came for a birthday.", "3"),
]
