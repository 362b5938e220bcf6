"""Ways to use 100 labelled dev rows to annotate CEBaB test better than the zero-label rule
(MiniLM, examples/cebab-concepts.toml; the same 3 draws of rows as ``benchmarks.annotation``).
Each variant is applied to every concept, with no held-out choice, so they compare as methods:

- ``clause polarity``: what ``annotate --labelled`` offers (calibration.ClausePolarity);
- ``clause polarity, per-concept part``: the same with each concept's own copy of the embedding
  added to the features (scaled by 0.5), so a concept can depart from the shared reading;
- ``extra phrases``: each labelled row's deciding clause added to its value's example phrases;
- ``threshold per concept``: the mention threshold that agrees best with the labelled rows.

    python -m benchmarks.experiments.calibration_variants     # ~3 min on 2 CPU cores
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

import numpy as np

from benchmarks.harness import write_results
from sparsecbm.annotation import read_concept_file, score_texts
from sparsecbm.annotation.calibration import ClausePolarity
from sparsecbm.annotation.encoder import SentenceEncoder
from sparsecbm.data import load_dataset

THRESHOLDS = np.round(np.arange(0.35, 0.56, 0.025), 3)


class CachedEncoder(SentenceEncoder):
    """Each clause embedded once over every variant."""

    cache: dict[str, np.ndarray] = {}

    def encode(self, texts, **kwargs):
        missing = [t for t in dict.fromkeys(texts) if t not in self.cache]
        if missing:
            self.cache.update(zip(missing, super().encode(missing, **kwargs)))
        return np.stack([self.cache[t] for t in texts]) if texts else np.zeros((0, 384), np.float32)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="benchmarks/results/calibration_variants.json")
    args = parser.parse_args()
    data, concept_file, encoder = load_dataset("cebab"), read_concept_file("examples/cebab-concepts.toml"), CachedEncoder()
    schema, n_concepts = data.schema, len(concept_file.names)
    mentioned = [spec.mentioned for spec in concept_file.concepts]

    def gold(split) -> np.ndarray:
        columns = [schema.concepts.index(c) for c in concept_file.names]
        return np.stack([[concept_file.values(k).index(v) for v in np.asarray(schema.concept_values[j])[split.concepts[:, j]]]
                         for k, j in enumerate(columns)], 1)

    test, dev = data["test"], data["dev"]
    test_gold, dev_gold, n = gold(test), gold(dev), len(test)
    texts = list(test.texts) + list(dev.texts)
    base = score_texts(texts, concept_file, encoder, progress=True)
    by_threshold = {th: score_texts(texts, dataclasses.replace(concept_file, threshold=float(th)), encoder)
                    for th in THRESHOLDS}

    def agreement(values: np.ndarray) -> list[float]:  # values (n_test, K)
        return [float(np.mean(values[:, k] == test_gold[:, k])) for k in range(n_concepts)]

    def own_part(scores, weight=0.5):  # each concept's clause embedding, plus its own copy
        return [dataclasses.replace(s, clause=np.concatenate(
            [s.clause] + [s.clause * weight if j == k else np.zeros_like(s.clause) for j in range(n_concepts)], 1))
            for k, s in enumerate(scores)]

    results = {"zero-label": [agreement(np.stack([s.values[:n] for s in base], 1))]}
    for draw in range(3):
        rows = np.random.default_rng(draw).choice(len(dev), size=100, replace=False)
        labelled, target = [s.take(n + rows) for s in base], [s.take(slice(0, n)) for s in base]
        for name, (fit_on, apply_to) in {"clause polarity": (labelled, target),
                                         "clause polarity, per-concept part": (own_part(labelled), own_part(target))}.items():
            polarity = ClausePolarity.fit(fit_on, dev_gold[rows], mentioned)
            results.setdefault(name, []).append(agreement(np.stack([polarity.predict(k, apply_to[k])[0]
                                                                    for k in range(n_concepts)], 1)))
        specs = []
        for k, spec in enumerate(concept_file.concepts):
            extra = {value: [] for value in spec.mentioned}
            for r in rows:
                if dev_gold[r, k] < len(spec.mentioned) and base[k].evidence[n + r]:
                    extra[spec.mentioned[dev_gold[r, k]]].append(base[k].evidence[n + r])
            specs.append(dataclasses.replace(spec, phrases=tuple((v, ps + tuple(extra[v])) for v, ps in spec.phrases)))
        phrased = score_texts(texts, dataclasses.replace(concept_file, concepts=tuple(specs)), encoder)
        results.setdefault("extra phrases", []).append(agreement(np.stack([s.values[:n] for s in phrased], 1)))
        chosen = [max(THRESHOLDS, key=lambda th: np.mean(by_threshold[th][k].values[n + rows] == dev_gold[rows, k]))
                  for k in range(n_concepts)]
        results.setdefault("threshold per concept", []).append(
            agreement(np.stack([by_threshold[th][k].values[:n] for k, th in enumerate(chosen)], 1)))
    summary = {name: {"per_concept": np.mean(runs, 0).round(4).tolist(), "mean": round(float(np.mean(runs)), 4),
                      "draws": runs} for name, runs in results.items()}
    for name, r in summary.items():
        print(f"{name:36s} {' '.join(f'{100 * a:5.1f}' for a in r['per_concept'])}   mean {100 * r['mean']:.1f}")
    write_results(Path(args.out), {"concepts": list(concept_file.names), "labelled_rows": 100, "variants": summary})


if __name__ == "__main__":
    main()
