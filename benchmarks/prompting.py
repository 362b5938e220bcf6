"""The paper's prompting row ("GPT4 Prompt" in Table 2) with the local instruct decoder.

    python -m benchmarks.prompting                  # CEBaB and IMDB-C test, after make smollm2
    python -m benchmarks.prompting --rows 500       # the first 500 test reviews of each

SmolLM2-135M-Instruct reads each test review once and answers, with no training and no
labelled example: one question per concept (its values as the allowed answers) and one for the
task label. An answer is the allowed word whose first token the decoder finds most likely next
(deterministic, no sampling; YesNoDecoder.choose). The concept topics come from the concept files
in examples/. Scored against the human labels as Table 2 is (accuracy, macro-F1). Results:
prompting.json / .md in --out; a data set already stored is skipped (--redo to measure it again).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
from sklearn.metrics import f1_score

from benchmarks.harness import machine, sole_writer, stored_runs, write_results
from sparsecbm.annotation import read_concept_file
from sparsecbm.annotation.decoder import YesNoDecoder
from sparsecbm.data import load_dataset
from sparsecbm.files import write_text

CONCEPT_FILES = {"cebab": "examples/cebab-concepts.toml", "imdbc": "examples/imdbc-concepts.toml"}
TASK_QUESTIONS = {
    "cebab": "How many stars, from 1 to 5, does the writer give the restaurant? Answer with one number.",
    "imdbc": "Is the writer's opinion of the movie Positive or Negative? Answer with one word.",
}


def concept_question(topic: str, values: tuple[str, ...]) -> str:
    *named, last = values
    return (f"What does the text say about {topic}? Answer with one word: {', '.join(named)}, or {last} "
            "if the text does not say.")


def measure(data_name: str, rows: int | None, decoder: YesNoDecoder) -> dict:
    data, concept_file = load_dataset(data_name), read_concept_file(CONCEPT_FILES[data_name])
    schema, test = data.schema, data["test"].head(rows)
    topics = {spec.name: spec.about[0] if spec.about else spec.name for spec in concept_file.concepts}
    questions = [concept_question(topics[c], schema.concept_values[j]) for j, c in enumerate(schema.concepts)]
    questions.append(TASK_QUESTIONS[data_name])
    start = time.perf_counter()
    texts = list(test.texts)
    *concept_logp, task_logp = decoder.choose(texts, questions, [*map(list, schema.concept_values), list(schema.labels)],
                                              progress=True)
    seconds = time.perf_counter() - start
    concept_acc = [float(np.mean(lp.argmax(1) == test.concepts[:, j])) for j, lp in enumerate(concept_logp)]
    concept_f1 = [float(f1_score(test.concepts[:, j], lp.argmax(1), average="macro")) for j, lp in enumerate(concept_logp)]
    task = task_logp.argmax(1)
    train = data["train"]
    return {
        "data": data_name, "test_rows": len(test), "questions": questions,
        "concepts": {c: {"accuracy": a, "macro_f1": f} for c, a, f in zip(schema.concepts, concept_acc, concept_f1)},
        "concepts_mean": {"accuracy": float(np.mean(concept_acc)), "macro_f1": float(np.mean(concept_f1))},
        "task": {"accuracy": float(np.mean(task == test.labels)),
                 "macro_f1": float(f1_score(test.labels, task, average="macro"))},
        "answered": {"task": np.bincount(task, minlength=len(schema.labels)).tolist()},
        "majority_task": float(np.mean(test.labels == np.bincount(train.labels).argmax())),
        "seconds": round(seconds, 1),
        "machine": machine(),
    }


def markdown(results: dict) -> str:
    lines = ["SmolLM2-135M-Instruct prompted, no training (`python -m benchmarks.prompting`): test accuracy / "
             "macro-F1 in %, human labels as truth.", "",
             "| data | test reviews | concepts (mean) | " + "per concept | task | task answers per label | "
             "always the training majority (task) | seconds |", "|---|---|---|---|---|---|---|---|"]
    for name, r in results.items():
        per = ", ".join(f"{c} {100 * v['accuracy']:.1f}" for c, v in r["concepts"].items())
        lines.append(f"| {name} | {r['test_rows']} | {100 * r['concepts_mean']['accuracy']:.1f} / "
                     f"{100 * r['concepts_mean']['macro_f1']:.1f} | {per} | {100 * r['task']['accuracy']:.1f} / "
                     f"{100 * r['task']['macro_f1']:.1f} | {r['answered']['task']} | {100 * r['majority_task']:.1f} "
                     f"| {r['seconds']} |")
    lines += ["", "The questions (each review is given first as `Text: ...`, in the decoder's chat template):", ""]
    for name, r in results.items():
        lines += [f"- {name}:"] + [f"  - {q}" for q in r["questions"]]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", nargs="*", default=["cebab", "imdbc"], choices=list(CONCEPT_FILES))
    parser.add_argument("--rows", type=int, help="the first N test reviews only (default: all)")
    parser.add_argument("--out", default="benchmarks/results")
    parser.add_argument("--redo", action="store_true")
    args = parser.parse_args()
    path = Path(args.out) / "prompting.json"
    with sole_writer(path):
        results = stored_runs(path)
        decoder = None
        for name in args.data:
            if name in results and not args.redo:
                continue
            decoder = decoder or YesNoDecoder()
            results[name] = measure(name, args.rows, decoder)
            write_results(path, {"runs": results})
            write_text(path.with_suffix(".md"), markdown(results))
    print(markdown(results))


if __name__ == "__main__":
    main()
