"""Sparsity-based intervention: latency of one step, NI vs SI vs oracle, persistent edits.

1. Speed: one intervention step on one example (gradient through subnetwork
   k, saliency, drop/grow selection over every prunable weight, mask flip,
   re-predict) against, in the same run, one forward+backward of that
   subnetwork, and one fine-tuning step (forward+backward+AdamW step on the
   backbone) for the same correction, which is what the paper says the
   intervention avoids. Medians over --speed-n examples.
2. The paper's Fig. 3 protocol on the first --n test examples for each ratio:
   NI, SI and the oracle (concept and task accuracy), JSON + PNG.
3. Persistent mode: corrections from the first --persistent-n dev examples
   accumulate at each of --persistent-ratios (a fresh model each); the test
   split, which the edits never see, is scored before and after.

    python benchmarks/intervention.py --model runs/pipeline/cebab-sparsecbm

Writes intervention.json, intervention.md and intervention_ratios.png to --out.
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F

import sparsecbm
from sparsecbm import protocols
from sparsecbm.data import Split, dataset_from_spec
from sparsecbm.files import write_json, write_text
from sparsecbm.intervention import (
    _buffers, tokenize_one, revert, concept_k_logits, drop_and_grow, flip, saliency,
)

RATIOS = (0.001, 0.005, 0.01, 0.02, 0.05)


def _subset(split: Split, idx: list[int]) -> Split:
    return Split(tuple(split.texts[i] for i in idx), split.labels[idx], split.concepts[idx], split.source)


def _timed(fn):
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def _forward_backward(clf, k: int, batch, value: int) -> None:
    """Loss of concept k through its subnetwork, gradient w.r.t. its masked weights."""
    model = clf.model
    masked = {n: w.detach().requires_grad_(True)
              for n, w in model.masked_weights(clf.schema.concepts[k], trainable=False).items()}
    with torch.enable_grad():
        z = model.encode(batch["input_ids"], batch["attention_mask"], weights=masked)
        cols = model.concept_slice(k)
        loss = F.cross_entropy(F.linear(z, model.projector.weight[cols], model.projector.bias[cols]), torch.tensor([value]))
        torch.autograd.grad(loss, list(masked.values()))


def speed(clf, split, ratio: float, n_examples: int) -> dict:
    model = clf.model
    masks_0 = next(iter(model.masks.values()))
    n = round(ratio * sum(m.numel() for m in masks_0.values()))
    tuner = copy.deepcopy(model).train()
    optimizer = torch.optim.AdamW(tuner.backbone.parameters(), lr=5e-5)
    rows = {"step": [], "forward_backward": [], "finetune_step": [], "saliency": [], "select": [], "flip": [], "re_predict": []}
    k = 0
    concept = clf.schema.concepts[k]
    for i in range(n_examples + 1):  # the first round warms caches and is not counted
        batch = tokenize_one(clf, split.texts[i])
        value = (int(concept_k_logits(clf, batch, k).argmax()) + 1) % len(clf.schema.concept_values[k])  # a wrong-now value
        _, t_fb = _timed(lambda: _forward_backward(clf, k, batch, value))
        start = time.perf_counter()
        scores = _buffers(clf, model.masks[concept])[0]
        _, t_sal = _timed(lambda: saliency(clf, k, batch, value, int(split.labels[i]), out=scores))
        (drop, grow), t_sel = _timed(lambda: drop_and_grow(clf, model.masks[concept], scores, n, seed=i))
        _, t_flip = _timed(lambda: flip(model, concept, drop, grow))
        _, t_pred = _timed(lambda: concept_k_logits(clf, batch, k))
        t_step = time.perf_counter() - start
        revert(model, concept, [drop], [grow])

        def finetune():
            with torch.enable_grad():
                logits = tuner.concept_logits(batch["input_ids"], batch["attention_mask"], k)
                F.cross_entropy(logits, torch.tensor([value])).backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)

        _, t_ft = _timed(finetune)
        if i == 0:
            continue
        for key, t in (("step", t_step), ("forward_backward", t_fb), ("finetune_step", t_ft), ("saliency", t_sal),
                       ("select", t_sel), ("flip", t_flip), ("re_predict", t_pred)):
            rows[key].append(t)
    med = {f"{key}_median_s": statistics.median(v) for key, v in rows.items()}
    return {**med, "n_examples": n_examples, "ratio": ratio, "bits_per_step": 2 * n,
            "step_over_forward_backward": med["step_median_s"] / med["forward_backward_median_s"],
            "finetune_over_step": med["finetune_step_median_s"] / med["step_median_s"]}


def markdown(r: dict) -> str:
    lines = [f"Machine: {r['machine']}. Commands: " + "; ".join(
        f"{part}: `{c}`" for part, c in r.get("commands", {}).items()) + "."]
    s = r.get("speed")
    if s:
        lines += ["", f"One intervention step (ratio {s['ratio']:g}, {s['bits_per_step']} bits), median over {s['n_examples']} test texts:", "",
                 f"- step {1000 * s['step_median_s']:.0f} ms = saliency (forward+backward) {1000 * s['saliency_median_s']:.0f} ms "
                 f"+ select {1000 * s['select_median_s']:.0f} ms + flip {1000 * s['flip_median_s']:.0f} ms "
                 f"+ re-predict {1000 * s['re_predict_median_s']:.0f} ms",
                 f"- forward+backward of the subnetwork alone: {1000 * s['forward_backward_median_s']:.0f} ms -> step / fwd+bwd = "
                 f"{s['step_over_forward_backward']:.2f}x (target <= 3x)",
                 f"- one fine-tuning step of the backbone (fwd+bwd+AdamW) for the same correction: "
                 f"{1000 * s['finetune_step_median_s']:.0f} ms ({s['finetune_over_step']:.2f}x the intervention step)"]
        lo = r.get("speed_longest_texts")
        if lo:
            lines.append(f"- on the {lo['n_examples']} longest test texts: step {1000 * lo['step_median_s']:.0f} ms, "
                         f"fwd+bwd {1000 * lo['forward_backward_median_s']:.0f} ms -> {lo['step_over_forward_backward']:.2f}x; "
                         f"fine-tuning step {1000 * lo['finetune_step_median_s']:.0f} ms")
    pe = r.get("per_example")
    if pe:
        lines += ["", f"Per-example protocol (Fig. 3), first {pe['n']} CEBaB test examples, {pe['wrong_concepts']} wrong "
                  f"concepts in {pe['examples_with_a_wrong_concept']} examples, {pe['steps']} step(s), task label in the "
                  f"loss: {pe['uses_task_label']}:", "",
                  "| | concept acc % | task acc % | corrections fixed % |", "|---|---|---|---|",
                  f"| NI | {100 * pe['NI']['concept_accuracy']:.1f} | {100 * pe['NI']['task_accuracy']:.1f} | - |"]
        for key, v in pe["SI"].items():
            lines.append(f"| SI r = {100 * float(key):g}% | {100 * v['concept_accuracy']:.1f} | {100 * v['task_accuracy']:.1f} "
                         f"| {100 * v['corrections_fixed']:.1f} |")
        lines.append(f"| oracle | {100 * pe['oracle']['concept_accuracy']:.1f} | {100 * pe['oracle']['task_accuracy']:.1f} | - |")
    for p in r.get("persistent", {}).values():
        lines += ["", f"Persistent edits (ratio {p['ratio']:g}): {p['edits']} edits for {p['wrong_concepts']} wrong concepts on "
                  f"{p['edit_split']['n']} dev examples; fixed when edited {p['fixed_when_edited']}, still fixed after all "
                  f"edits {p['still_fixed_at_end']}; {p['bits_changed']} mask bits differ from the original "
                  f"({p['bits_flipped_by_edits']} flipped in all); sparsity unchanged: {p['kept_counts_unchanged']}.", "",
                  "| split | concept acc before -> after | task acc before -> after |", "|---|---|---|"]
        for name in ("edit_split", "eval_split"):
            b, a = p[name]["before"], p[name]["after"]
            lines.append(f"| {name.replace('_split', '')} ({p[name]['n']}) | {100 * b['concept_accuracy']:.1f} -> "
                         f"{100 * a['concept_accuracy']:.1f} | {100 * b['task_accuracy']:.1f} -> {100 * a['task_accuracy']:.1f} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="runs/pipeline/cebab-sparsecbm")
    parser.add_argument("--n", type=int, default=300, help="test examples for the per-example protocol")
    parser.add_argument("--ratios", type=float, nargs="*", default=list(RATIOS))
    parser.add_argument("--steps", type=int, default=1)
    parser.add_argument("--speed-n", type=int, default=30)
    parser.add_argument("--persistent-n", type=int, default=200)
    parser.add_argument("--persistent-ratios", type=float, nargs="*", default=[0.001, 0.01])
    parser.add_argument("--only", nargs="*", choices=("speed", "per-example", "persistent"))
    parser.add_argument("--out", default="benchmarks/results")
    args = parser.parse_args()
    parts = set(args.only or ("speed", "per-example", "persistent"))
    clf = sparsecbm.load(args.model)
    data = dataset_from_spec(clf.data_spec)
    out = Path(args.out)
    previous = out / "intervention.json"
    result = json.loads(previous.read_text()) if args.only and previous.exists() else {}
    command = "python benchmarks/intervention.py " + " ".join(
        f"--{k.replace('_', '-')} {' '.join(map(str, v)) if isinstance(v, list) else v}"
        for k, v in vars(args).items() if v not in (None, False))
    result.update({
        "machine": f"{platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}",
        "model": args.model,
    })
    result["commands"] = {**result.get("commands", {}), **{part: command for part in parts}}
    if "speed" in parts:
        result["speed"] = speed(clf, data["test"], 0.01, args.speed_n)
        longest = sorted(range(len(data["test"])), key=lambda i: -len(data["test"].texts[i]))[: args.speed_n + 1]
        result["speed_longest_texts"] = speed(clf, _subset(data["test"], longest), 0.01, args.speed_n)
        print(result["speed"], result["speed_longest_texts"], flush=True)
    if "per-example" in parts:
        result["per_example"] = protocols.per_example(clf, data["test"].head(args.n), args.ratios, steps=args.steps)
        protocols.plot_ratios(result["per_example"], out / "intervention_ratios.png")
    if "persistent" in parts:
        result["persistent"] = {  # a fresh copy of the model for each ratio: edits accumulate
            f"{r:g}": protocols.persistent(sparsecbm.load(args.model), data["dev"].head(args.persistent_n), data["test"],
                                           r, steps=args.steps) for r in args.persistent_ratios}
    write_json(out / "intervention.json", result)
    write_text(out / "intervention.md", markdown(result))
    print((out / "intervention.md").read_text())


if __name__ == "__main__":
    main()
