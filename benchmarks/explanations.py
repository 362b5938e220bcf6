"""Are the token explanations faithful, concept-specific and fast?

1. Faithfulness (ERASER): on N CEBaB test texts, per concept and method,
   comprehensiveness = p(v | text) - p(v | text without its top 20 % words) and
   sufficiency = p(v | text) - p(v | only its top 20 % words), v the concept's
   predicted value on the full text, p read through the concept's own
   subnetwork. Higher comprehensiveness and lower sufficiency are better; a
   random ranking is the floor.
2. Specificity: do the words that drive different concepts differ more when the
   scores go through each concept's subnetwork than through a dense backbone?
   Per text, the mean over concept pairs of the Spearman correlation of their
   word scores and the Jaccard overlap of their top-20 % word sets, for
   (a) the SparseCBM's subnetworks, (b) the same weights with no masks,
   (c) the dense CBM the SparseCBM was pruned from (its ``dense/`` folder).
3. Speed: ``explain`` (all three levels, grad) per text, model loaded, median
   over 50 texts; the first call (which builds the masked-weight and
   subnetwork caches) reported apart.

    python -m benchmarks.explanations --model runs/pipeline/cebab-sparsecbm
    python -m benchmarks.explanations --only speed     # rerun one part, keep the others

Writes explanations.json and explanations.md to --out.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import statistics
import time
from pathlib import Path

import numpy as np
import torch
from scipy.stats import spearmanr
from tqdm.auto import tqdm

import sparsecbm
from benchmarks.harness import command_line, machine, write_results
from sparsecbm.data import dataset_from_spec
from sparsecbm.explanations import METHODS, explain
from sparsecbm.files import write_text
from sparsecbm.word_scores import token_scores, words

FRACTION = 0.2


def concept_probs(clf, k: int, texts: list[str], values: list[int], batch_size: int = 64) -> np.ndarray:
    """p(value_i | text_i) for concept k, through its subnetwork."""
    model = clf.model
    out = np.zeros(len(texts))
    with torch.inference_mode():
        for start in range(0, len(texts), batch_size):
            chunk = texts[start : start + batch_size]
            enc = clf.tokenizer(chunk, padding=True, truncation=True, max_length=clf.max_length, return_tensors="pt")
            probs = model.concept_outputs(enc["input_ids"], enc["attention_mask"], k).logits.softmax(-1)
            out[start : start + len(chunk)] = probs[torch.arange(len(chunk)), torch.as_tensor(values[start : start + len(chunk)])].numpy()
    return out


def top_set(scores: np.ndarray) -> set[int]:
    n = max(1, math.ceil(FRACTION * len(scores)))
    return set(np.argsort(-scores, kind="stable")[:n].tolist())


def perturbed(text: str, spans, top: set[int]) -> tuple[str, str]:
    """(text without the top words, text of only the top words); words joined by spaces.
    An empty result becomes a lone '.' so the model still has an input."""
    removed = " ".join(text[a:b] for i, (a, b) in enumerate(spans) if i not in top) or "."
    kept = " ".join(text[a:b] for i, (a, b) in enumerate(spans) if i in top) or "."
    return removed, kept


def faithfulness(clf, texts: list[str], steps: int, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    concepts = clf.schema.concepts
    methods = [*METHODS, "random"]
    rows = {(k, m): {"full": [], "removed": [], "kept": [], "value": []} for k in range(len(concepts)) for m in methods}
    for text in tqdm(texts, desc="faithfulness"):
        enc = words(clf, text)
        if not enc.spans:
            continue
        for k in range(len(concepts)):
            for m in methods:
                if m == "random":  # (methods come first: ``value`` is already the predicted value)
                    scores = rng.random(len(enc.spans))
                else:
                    scores, logits = token_scores(clf, enc, k, None, m, steps=steps)
                    value = int(logits.values()[0])
                removed, kept = perturbed(text, enc.spans, top_set(scores))
                r = rows[(k, m)]
                r["removed"].append(removed)
                r["kept"].append(kept)
                r["full"].append(text)
                r["value"].append(value)
    result: dict = {}
    for (k, m), r in tqdm(rows.items(), desc="re-predict"):
        full = concept_probs(clf, k, r["full"], r["value"])
        comp = full - concept_probs(clf, k, r["removed"], r["value"])
        suff = full - concept_probs(clf, k, r["kept"], r["value"])
        result.setdefault(concepts[k], {})[m] = {
            "comprehensiveness": float(comp.mean()), "sufficiency": float(suff.mean()), "n": len(comp)}
    for m in methods:
        result.setdefault("mean", {})[m] = {
            key: float(np.mean([result[c][m][key] for c in concepts])) for key in ("comprehensiveness", "sufficiency")}
    return result


def specificity(variants: dict, texts: list[str], method: str) -> dict:
    """Mean pairwise (across concepts) Spearman of word scores and Jaccard of top-20 % sets."""
    out = {}
    for name, (clf, dense) in variants.items():
        rhos, jacs = [], []
        for text in tqdm(texts, desc=f"specificity {name}"):
            enc = words(clf, text)
            if len(enc.spans) < 3:
                continue
            scores = [token_scores(clf, enc, k, None, method, dense=dense)[0] for k in range(len(clf.schema.concepts))]
            for a, b in itertools.combinations(scores, 2):
                rhos.append(spearmanr(a, b).statistic)
                sa, sb = top_set(a), top_set(b)
                jacs.append(len(sa & sb) / len(sa | sb))
        out[name] = {"spearman": float(np.nanmean(rhos)), "top_jaccard": float(np.mean(jacs)), "pairs": len(rhos)}
    return out


def speed(clf, texts: list[str]) -> dict:
    clf.cache.pop("subnetworks")
    clf.model.clear_caches()
    start = time.perf_counter()
    explain(clf, texts[0], "grad")
    first = time.perf_counter() - start
    times = []
    for text in texts:
        start = time.perf_counter()
        explain(clf, text, "grad")
        times.append(time.perf_counter() - start)
    return {"first_call_seconds": first, "median_seconds": statistics.median(times),
            "p90_seconds": float(np.percentile(times, 90)), "n": len(times)}


def markdown(r: dict) -> str:
    lines = [f"Machine: {r['machine']}. Commands: " + "; ".join(
        f"{part}: `{c}`" for part, c in r.get("commands", {}).items()) + ".", "",
             f"Faithfulness on {r['n_texts']} CEBaB test texts (top {100 * FRACTION:.0f}% words; probabilities of the "
             "concept's predicted value through its own subnetwork; comprehensiveness higher = better, sufficiency "
             "lower = better):", "",
             "| concept | " + " | ".join(f"{m} comp / suff" for m in [*METHODS, "random"]) + " |",
             "|---" * (len(METHODS) + 2) + "|"]
    for c, per in r.get("faithfulness", {}).items():
        lines.append(f"| {c} | " + " | ".join(
            f"{per[m]['comprehensiveness']:.3f} / {per[m]['sufficiency']:.3f}" for m in [*METHODS, "random"]) + " |")
    spec = r.get("specificity")
    if spec:
        lines += ["", f"Concept specificity of `{r['specificity_method']}` word scores (mean over texts and concept "
                  "pairs; lower = concepts read more different words):", "",
                  "| scores through | Spearman | top-20% Jaccard |", "|---|---|---|"]
        lines += [f"| {name} | {v['spearman']:.3f} | {v['top_jaccard']:.3f} |" for name, v in spec.items()]
    s = r.get("speed")
    if s:
        lines += ["", f"`explain` (three levels, grad), model loaded: median {1000 * s['median_seconds']:.0f} ms, "
                  f"p90 {1000 * s['p90_seconds']:.0f} ms over {s['n']} texts; first call {s['first_call_seconds']:.1f} s "
                  "(builds the masked-weight and subnetwork caches)."]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="runs/pipeline/cebab-sparsecbm")
    parser.add_argument("--n", type=int, default=200, help="test texts for faithfulness and specificity")
    parser.add_argument("--steps", type=int, default=20, help="integrated-gradients steps")
    parser.add_argument("--specificity-method", default="grad_x_input", choices=METHODS)
    parser.add_argument("--only", nargs="*", choices=("speed", "faithfulness", "specificity"),
                        help="parts to (re)run; the others are kept from an earlier explanations.json")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="benchmarks/results")
    args = parser.parse_args()
    torch.manual_seed(args.seed)
    clf = sparsecbm.load(args.model)
    data = dataset_from_spec(clf.data_spec)
    texts = list(data["test"].texts[: args.n])
    out = Path(args.out)
    parts = set(args.only or ("speed", "faithfulness", "specificity"))
    previous = out / "explanations.json"
    result = json.loads(previous.read_text()) if args.only and previous.exists() else {}
    command = command_line("benchmarks.explanations", args)
    result.update({
        "machine": machine(),
        "model": args.model,
        "n_texts": len(texts),
    })
    result["commands"] = {**result.get("commands", {}), **{part: command for part in parts}}
    if "speed" in parts:
        result["speed"] = speed(clf, list(data["test"].texts[:50]))
        print(f"speed: {result['speed']}", flush=True)
    if "faithfulness" in parts:
        result["faithfulness"] = faithfulness(clf, texts, args.steps, args.seed)
    if "specificity" in parts:
        variants = {"SparseCBM subnetworks": (clf, False), "same weights, no masks": (clf, True)}
        dense_dir = Path(args.model) / "dense"
        if (dense_dir / "config.json").exists():
            variants["dense CBM it was pruned from"] = (sparsecbm.load(dense_dir), False)
        result["specificity_method"] = args.specificity_method
        result["specificity"] = specificity(variants, texts, args.specificity_method)
    write_results(out / "explanations.json", result)
    write_text(out / "explanations.md", markdown(result))
    print((out / "explanations.md").read_text())


if __name__ == "__main__":
    main()
