"""Corrections side by side: no intervention, oracle, the paper's rule, the signed
(taylor) rule at fixed ratios and "auto", and fine-tuning on the same corrections.

1. per-example (the paper's Fig. 3 protocol, label known, one step): each wrong
   concept of the first --n test examples is corrected, re-predicted and
   restored. Reports corrections fixed, median bits flipped per fix, and the
   concept / task accuracy with the corrections applied. Fine-tuning rows take
   up to --ft-steps AdamW steps on exactly that correction (the concept's head
   rows, or the whole backbone) and are restored the same way.
2. persistent: every wrong concept of the first --persistent-n dev examples, in
   order; edits (or fine-tuning steps) accumulate. Re-checks the corrections
   at the end and scores the unseen test split before and after; with and
   without a guard of the first --guard-n train examples.
3. speed: one guarded correction split into saliency, selection + search,
   and the guard's forward pass, against one forward+backward of the subnetwork.

Every finished row is saved to --out/intervention.json at once and skipped when
the script is run again (resumable); --redo NAME reruns a row.

    python -m benchmarks.intervention --model runs/pipeline/cebab-sparsecbm
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

import sparsecbm
from benchmarks.harness import command_line, machine, write_results
from sparsecbm.data import Split, dataset_from_spec
from sparsecbm.files import write_text
from sparsecbm.interventions import CAUTION, Guard, intervene, protocols
from sparsecbm.interventions.gradients import concept_k_outputs, saliency, tokenize
from sparsecbm.interventions.protocols import output_scores, split_scores
from sparsecbm.interventions.ranking import edit_buffers
from sparsecbm.interventions.reports import Scores, SplitChange
from sparsecbm.outputs import predicted_values

RULES = [("taylor", 1e-4), ("taylor", 1e-3), ("taylor", 1e-2), ("taylor", "auto"),
         ("paper", 1e-4), ("paper", 1e-3), ("paper", 1e-2)]


def _name(selection: str, ratio) -> str:
    return f"{selection} r={ratio if isinstance(ratio, str) else f'{100 * ratio:g}%'}"


# ---------------------------------------------------------------- fine-tuning baselines


class FineTuner:
    """AdamW on the corrected concept's head rows ("head") or on the whole backbone
    ("backbone"), minimising the same L_k as the intervention, for up to ``max_steps``
    steps per correction, stopping once the concept predicts the corrected value."""

    def __init__(self, clf, part: str, max_steps: int, lr: float) -> None:
        self.clf, self.part, self.max_steps = clf, part, max_steps
        model = clf.model
        self.params = [model.projector.weight, model.projector.bias] if part == "head" else list(model.backbone.parameters())
        # No weight decay: a decoupled decay would move every other concept's rows too.
        self.optimizer = torch.optim.AdamW(self.params, lr=lr, weight_decay=0.0)

    def state(self):
        return [p.detach().clone() for p in self.params]

    def restore(self, state) -> None:
        with torch.no_grad():
            for p, s in zip(self.params, state):
                p.copy_(s)
        self.optimizer.state.clear()

    def fix(self, k: int, batches, value: int, label: int | None) -> torch.Tensor:
        model = self.clf.model
        cols = model.head.concept_slice(k)
        frozen = [p for p in model.parameters() if all(p is not q for q in self.params)]
        for p in frozen:
            p.requires_grad_(False)
        v = torch.tensor([value])
        y = None if label is None else torch.tensor([label])
        try:
            for _ in range(self.max_steps):
                if int(concept_k_outputs(self.clf, batches, k).values()[0]) == value:
                    break
                with model.evaluating(), torch.enable_grad():
                    b = batches[0][1]
                    loss = model.concept_loss(b["input_ids"], b["attention_mask"], k, v, y, gamma=self.clf.gamma)
                    loss.backward()
                if self.part == "head":  # only concept k's rows learn
                    for p in self.params:
                        keep = torch.zeros_like(p.grad)
                        keep[cols] = 1
                        p.grad.mul_(keep)
                self.optimizer.step()
                self.optimizer.zero_grad(set_to_none=True)
        finally:
            for p in frozen:
                p.requires_grad_(True)
        return concept_k_outputs(self.clf, batches, k)


def per_example_finetune(clf, split: Split, out, part: str, max_steps: int, lr: float) -> dict:
    """The per-example protocol with fine-tuning instead of mask edits (state restored after each)."""
    logits = [o.clone() for o in out.per_concept()]
    wrong = predicted_values(logits) != split.concepts
    tuner = FineTuner(clf, part, max_steps, lr)
    original = tuner.state()
    new = [o.clone() for o in logits]
    fixed = 0
    for i in np.flatnonzero(wrong.any(1)):
        batches = tokenize(clf, [split.texts[i]])
        for k in np.flatnonzero(wrong[i]):
            after = tuner.fix(int(k), batches, int(split.concepts[i, k]), int(split.labels[i]))
            tuner.restore(original)
            new[k][i] = after[0]
            fixed += int(after.values()[0]) == int(split.concepts[i, k])
    return {**asdict(split_scores(clf, split, new)), "corrections_fixed": fixed / max(1, int(wrong.sum())), "fixed": fixed,
            "method": f"fine-tune {part}", "max_steps": max_steps, "lr": lr}


def persistent_finetune(clf, edit_split: Split, eval_split: Split, part: str, max_steps: int, lr: float) -> dict:
    """The persistent stream with fine-tuning: steps accumulate over the corrections."""
    eval_before = clf.evaluate(eval_split)
    out = clf.forward_texts(edit_split.texts)
    edit_before = output_scores(clf, edit_split, out)
    wrong = out.predicted_values() != edit_split.concepts
    tuner = FineTuner(clf, part, max_steps, lr)
    corrected = []
    for i in np.flatnonzero(wrong.any(1)):
        batches = tokenize(clf, [edit_split.texts[i]])
        for k in np.flatnonzero(wrong[i]):
            after = tuner.fix(int(k), batches, int(edit_split.concepts[i, k]), int(edit_split.labels[i]))
            if int(after.argmax()) == int(edit_split.concepts[i, k]):
                corrected.append((int(i), int(k)))
    final = clf.forward_texts(edit_split.texts)
    final_pred = final.predicted_values()
    still = sum(int(final_pred[i, k] == edit_split.concepts[i, k]) for i, k in corrected)
    eval_after = clf.evaluate(eval_split)
    return {
        "method": f"fine-tune {part}", "max_steps": max_steps, "lr": lr, "wrong_concepts": int(wrong.sum()),
        "fixed_when_edited": len(corrected), "still_fixed_at_end": still,
        "still_fixed_fraction": still / max(1, len(corrected)),
        "wrong_concepts_right_at_end": int(np.count_nonzero(final_pred[wrong] == edit_split.concepts[wrong])),
        "edit_split": asdict(SplitChange(before=edit_before, after=output_scores(clf, edit_split, final), n=len(edit_split))),
        "eval_split": asdict(SplitChange(before=Scores.of(eval_before), after=Scores.of(eval_after), n=len(eval_split))),
    }


# ---------------------------------------------------------------- speed


def speed(clf, split: Split, guard: Guard, n_examples: int) -> dict:
    """Median times of one correction (taylor, auto, label known) and its parts."""
    model = clf.model
    out = clf.forward_texts(split.texts)
    wrong = out.predicted_values() != split.concepts
    cases = [(int(i), int(k)) for i, k in zip(*np.nonzero(wrong))][: n_examples + 1]
    start = time.perf_counter()
    guard.concept_logits(clf)  # fills the guard's cache (once per model, not per edit)
    once = {"guard_logits_s": time.perf_counter() - start}
    start = time.perf_counter()
    for k in range(len(clf.schema.concepts)):
        guard.penalty(clf, k)  # the guard's curvature: once per concept, not per edit
    once["guard_curvature_s"] = time.perf_counter() - start
    rows = {key: [] for key in ("forward_backward", "saliency", "correction", "guarded_correction", "guard_forward")}
    for j, (i, k) in enumerate(cases):  # the first round warms caches and is not counted
        concept, value = clf.schema.concepts[k], clf.schema.concept_values[k][split.concepts[i, k]]
        label = clf.schema.labels[split.labels[i]]
        batches = tokenize(clf, [split.texts[i]])
        v, y = torch.tensor([int(split.concepts[i, k])]), torch.tensor([int(split.labels[i])])
        masked = {n: w.detach().requires_grad_(True) for n, w in model.encoder.masked_weights(concept, trainable=False).items()}
        buffer = edit_buffers(clf, model.masks[concept])[0]  # as a correction does (a fresh 42 MB array costs page faults)

        def forward_backward():
            with model.evaluating(), torch.enable_grad():
                b = batches[0][1]
                loss = model.concept_loss(b["input_ids"], b["attention_mask"], k, v, y, gamma=clf.gamma, weights=masked)
                torch.autograd.grad(loss, list(masked.values()))

        times = {}
        # The unguarded correction just flipped and restored bits, which stales the guard's
        # cache; in a guarded stream every edit goes through the guard, which keeps it true.
        prime = (lambda: guard.concept_logits(clf))
        for key, fn in (("forward_backward", forward_backward),
                        ("saliency", lambda: saliency(clf, k, batches, v, y, out=buffer)),
                        ("correction", lambda: intervene(clf, split.texts[i], concept, value, label=label)),
                        ("prime", prime),
                        ("guarded_correction", lambda: intervene(clf, split.texts[i], concept, value, label=label,
                                                                 guard=guard)),
                        ("guard_forward", lambda: concept_k_outputs(clf, guard.batches(clf), k))):
            start = time.perf_counter()
            fn()
            times[key] = time.perf_counter() - start
        if j:
            for key, t in times.items():
                if key in rows:
                    rows[key].append(t)
    med = {f"{key}_median_s": statistics.median(v) for key, v in rows.items()}
    return {**med, **once, "n_examples": len(cases) - 1, "guard_n": len(guard), "caution": guard.caution,
            "correction_over_forward_backward": med["correction_median_s"] / med["forward_backward_median_s"],
            "guarded_minus_guard_over_forward_backward":
                (med["guarded_correction_median_s"] - med["guard_forward_median_s"]) / med["forward_backward_median_s"]}


# ---------------------------------------------------------------- report


def _fixes(row: dict) -> str:
    f = row.get("single_fixes")
    return "-" if f is None else f"{f['fixed']} / {f['broken']} ({100 * f['net']:+.1f})"


def markdown(r: dict) -> str:
    lines = [f"Machine: {r['machine']}. Model: `{r['model']}`. Commands: "
             + "; ".join(f"{part}: `{c}`" for part, c in r.get("commands", {}).items()) + "."]
    pe = r.get("per_example", {})
    if pe:
        ni = r["per_example_NI"]
        lines += ["", f"Per-example, first {ni['n']} CEBaB test examples ({ni['wrong_concepts']} wrong concepts in "
                  f"{ni['examples_with_a_wrong_concept']} examples), one step, task label in the loss:", "",
                  "| method | corrections fixed % | median bits flipped per fix | concept acc % | task acc % "
                  "| one concept alone: labels fixed / broken (net %) | task acc %, 0..K concepts corrected |",
                  "|---|---|---|---|---|---|---|",
                  f"| no intervention | - | - | {100 * ni['NI']['concept_accuracy']:.1f} | {100 * ni['NI']['task_accuracy']:.1f} "
                  "| - | - |",
                  f"| oracle (true activations) | 100 | - | {100 * ni['oracle']['concept_accuracy']:.1f} | "
                  f"{100 * ni['oracle']['task_accuracy']:.1f} | {_fixes(ni['oracle'])} | - |"]
        for name, v in pe.items():
            bits = f"{v['median_bits_per_fix']:.0f}" if "median_bits_per_fix" in v else "- (weights)"
            curve = " / ".join(f"{100 * p:.1f}" for p in v["curve"]) if "curve" in v else "-"
            lines.append(f"| {name} | {100 * v['corrections_fixed']:.1f} | {bits} | {100 * v['concept_accuracy']:.1f} "
                         f"| {100 * v['task_accuracy']:.1f} | {_fixes(v)} | {curve} |")
    ps = r.get("persistent", {})
    if ps:
        any_p = next(iter(ps.values()))
        lines += ["", f"Persistent: every wrong concept of the first {any_p['edit_split']['n']} dev examples "
                  f"({any_p['wrong_concepts']}), in order; the unseen test split ({any_p['eval_split']['n']}) "
                  "scored before and after:", "",
                  "| method | kept edits | fixed when kept | still fixed at end | wrong concepts right at end "
                  "| test concept acc before -> after | test task acc before -> after | mask bits changed |",
                  "|---|---|---|---|---|---|---|---|"]
        for name, p in ps.items():
            b, a = p["eval_split"]["before"], p["eval_split"]["after"]
            lines.append(
                f"| {name} | {p.get('edits', '-')} | {p['fixed_when_edited']} | {p['still_fixed_at_end']} "
                f"({100 * p['still_fixed_fraction']:.0f} %) | {p['wrong_concepts_right_at_end']} / {p['wrong_concepts']} "
                f"| {100 * b['concept_accuracy']:.1f} -> {100 * a['concept_accuracy']:.1f} "
                f"| {100 * b['task_accuracy']:.1f} -> {100 * a['task_accuracy']:.1f} | {p.get('bits_changed', '-')} |")
    s = r.get("speed")
    if s:
        lines += ["", f"Speed (taylor, auto, label known), median over {s['n_examples']} wrong test concepts:", "",
                  f"- forward+backward of the subnetwork: {1000 * s['forward_backward_median_s']:.0f} ms; "
                  f"saliency {1000 * s['saliency_median_s']:.0f} ms",
                  f"- one correction (saliency, ranking, auto search, re-predict): {1000 * s['correction_median_s']:.0f} ms "
                  f"= {s['correction_over_forward_backward']:.2f}x forward+backward",
                  f"- guarded ({s['guard_n']} guard texts): {1000 * s['guarded_correction_median_s']:.0f} ms, of which "
                  f"the guard's forward pass {1000 * s['guard_forward_median_s']:.0f} ms; without it "
                  f"{s['guarded_minus_guard_over_forward_backward']:.2f}x forward+backward (target <= 5x)"]
        if "guard_curvature_s" in s:
            lines.append(f"- once per guard: every concept's logits on it {s['guard_logits_s']:.1f} s; its curvature "
                         f"(caution {s['caution']:g}; one forward+backward per guard text and concept) "
                         f"{s['guard_curvature_s']:.1f} s")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="runs/pipeline/cebab-sparsecbm")
    parser.add_argument("--n", type=int, default=None, help="per-example: the first N test examples (default all)")
    parser.add_argument("--persistent-n", type=int, default=300)
    parser.add_argument("--guard-n", type=int, default=300)
    parser.add_argument("--max-ratio", type=float, default=1e-3, help="cap of ratio auto")
    parser.add_argument("--ft-steps", type=int, default=10)
    parser.add_argument("--ft-lr-head", type=float, default=1e-2)
    parser.add_argument("--ft-lr-backbone", type=float, default=1e-4)
    parser.add_argument("--speed-n", type=int, default=30)
    parser.add_argument("--caution", type=float, default=CAUTION, help="the guard's caution (guarded rows)")
    parser.add_argument("--task-tolerance-stream", action="store_true",
                        help="persistent: also a guarded stream that allows 0.5 points of task accuracy on the guard")
    parser.add_argument("--only", nargs="*", choices=("per-example", "persistent", "speed"))
    parser.add_argument("--redo", nargs="*", default=[], help="row names to run again")
    parser.add_argument("--guarded-only", action="store_true",
                        help="persistent: only the guarded stream (taylor auto, the guard's caution)")
    parser.add_argument("--rules", nargs="*", choices=[_name(s, r) for s, r in RULES] + ["fine-tune"],
                        help="per-example rows to run (default all)")
    parser.add_argument("--out", default="benchmarks/results")
    args = parser.parse_args()
    parts = set(args.only or ("per-example", "persistent", "speed"))
    clf = sparsecbm.load(args.model)
    data = dataset_from_spec(clf.data_spec)
    out_dir = Path(args.out)
    path = out_dir / "intervention.json"
    result = json.loads(path.read_text()) if path.exists() else {}
    n_test = len(data["test"].head(args.n))
    if (result.get("format") != 2 or result.get("model") != args.model
            or result.get("per_example_NI", {}).get("n", n_test) != n_test):
        result = {"format": 2}  # another model, another test slice or an older layout: start over
    command = command_line("benchmarks.intervention", args)
    result.update({"machine": machine(),
                   "model": args.model})
    result["commands"] = {**result.get("commands", {}), **{part: command for part in parts}}

    def save() -> None:
        write_results(path, result)
        write_text(out_dir / "intervention.md", markdown(result))

    def todo(section: str, name: str) -> bool:
        return name in args.redo or name not in result.setdefault(section, {})

    guard_split = data["train"].head(args.guard_n)
    if "per-example" in parts:
        test = data["test"].head(args.n)
        out = clf.forward_texts(test.texts, progress=True, desc="predict test")
        base = protocols.per_example(clf, test, [], out=out, progress=False).to_dict()
        result["per_example_NI"] = {key: base[key] for key in ("n", "wrong_concepts", "examples_with_a_wrong_concept",
                                                              "NI", "oracle")}
        for selection, ratio in RULES:
            name = _name(selection, ratio)
            if args.rules is not None and name not in args.rules:
                continue
            if todo("per_example", name):
                start = time.perf_counter()
                r = protocols.per_example(clf, test, [ratio], selection=selection, max_ratio=args.max_ratio, out=out).to_dict()
                result["per_example"][name] = {**next(iter(r["SI"].values())), "seconds": time.perf_counter() - start}
                save()
                print(name, result["per_example"][name], flush=True)
        for part, lr in (("head", args.ft_lr_head), ("backbone", args.ft_lr_backbone)):
            name = f"fine-tune {part} ({args.ft_steps} AdamW steps max, lr {lr:g})"
            if args.rules is not None and "fine-tune" not in args.rules:
                continue
            if todo("per_example", name):
                result["per_example"][name] = per_example_finetune(clf, test, out, part, args.ft_steps, lr)
                save()
                print(name, result["per_example"][name], flush=True)
    if "persistent" in parts:
        edit_split, test = data["dev"].head(args.persistent_n), data["test"]
        guard_name = f"train:{args.guard_n}"
        streams = [
            ("paper r=1% (the paper's rule, every edit kept)", dict(ratio=0.01, selection="paper", keep_unfixed=True)),
            ("taylor auto, no guard", dict(ratio="auto", selection="taylor")),
            (f"taylor auto, guard {guard_name}, caution {args.caution:g}", dict(ratio="auto", selection="taylor",
                                                                               guard=True, caution=args.caution)),
            (f"taylor auto, guard {guard_name}, judge only (caution 0)", dict(ratio="auto", selection="taylor",
                                                                             guard=True, caution=0.0)),
        ]
        if args.task_tolerance_stream:
            streams.append((f"taylor auto, guard {guard_name}, task tolerance 0.5 points",
                            dict(ratio="auto", selection="taylor", guard=True, task_tolerance=0.005,
                                 caution=args.caution)))
        if args.guarded_only:
            streams = [(name, kw) for name, kw in streams if kw.get("guard") and kw.get("caution")]
        for name, kw in streams:
            if todo("persistent", name):
                kw = dict(kw)
                # loss_budget=None: these rows were measured before the guard had a budget (benchmarks.edits has it)
                guard = (Guard(guard_split, task_tolerance=kw.pop("task_tolerance", 0.0), caution=kw.pop("caution"),
                               loss_budget=None, progress=True) if kw.pop("guard", False) else None)
                r = protocols.persistent(sparsecbm.load(args.model), edit_split, test, max_ratio=args.max_ratio,
                                         guard=guard, **kw).to_dict()
                result["persistent"][name] = r
                save()
                print(name, {key: r[key] for key in ("edits", "fixed_when_edited", "still_fixed_at_end")}, r["eval_split"],
                      flush=True)
        for part, lr in (("head", args.ft_lr_head), ("backbone", args.ft_lr_backbone)):
            name = f"fine-tune {part} ({args.ft_steps} AdamW steps max, lr {lr:g})"
            if todo("persistent", name) and not args.guarded_only:
                result["persistent"][name] = persistent_finetune(sparsecbm.load(args.model), edit_split, test, part,
                                                                 args.ft_steps, lr)
                save()
                print(name, result["persistent"][name]["eval_split"], flush=True)
    if "speed" in parts:
        result["speed"] = speed(clf, data["test"], Guard(guard_split, caution=args.caution), args.speed_n)
        save()
    save()
    print((out_dir / "intervention.md").read_text())


if __name__ == "__main__":
    main()
