"""Issue 10's probes, re-run as a new user would: bad files, damaged model folders,
torn saves, killed runs. Every probe is the real command line in a child process
on a tiny SparseCBM (a 2-layer BERT built from a config, synthetic reviews), and
gets a verdict against what the docs promise (docs/model-format.md). Results go to
benchmarks/results/reliability.json / .md.

    python -m benchmarks.reliability [--stress-seconds 60]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]  # the repository: the stress children import sparsecbm from it
from transformers import AutoTokenizer, BertConfig, BertModel

from benchmarks.harness import write_results
from sparsecbm import backbones
from sparsecbm.files import write_text
from tests.conftest import CONCEPTS, write_reviews  # the suite's own fixtures (run from the repository root)
from tests.test_reliability import STRESS, edit_labels, truncate_file  # the suite's own damage

CLI = [sys.executable, "-c", "import sys; from sparsecbm.cli import main; sys.exit(main())"]


def cli(*argv: str, timeout: float = 600) -> dict:
    """Run ``sparsecbm ARGV``; its exit status, the error lines, whether a traceback showed, and the time."""
    start = time.perf_counter()
    p = subprocess.run([*CLI, *map(str, argv)], capture_output=True, text=True, timeout=timeout)
    errors = [line for line in p.stderr.splitlines() if line.startswith("sparsecbm: error:")]
    warnings = [line for line in p.stderr.splitlines() if "warning" in line.lower()]
    return {"rc": p.returncode, "error": errors[0] if errors else None, "n_error_lines": len(errors),
            "traceback": "Traceback" in p.stderr, "warning": warnings[0] if warnings else None,
            "stdout": p.stdout, "seconds": round(time.perf_counter() - start, 2)}


def one_line_error(r: dict, *needles: str) -> bool:
    """The promised failure: exit 2, exactly one error line naming every needle, no traceback."""
    return (r["rc"] == 2 and r["n_error_lines"] == 1 and not r["traceback"]
            and all(n in r["error"] for n in needles))


class Probes:
    def __init__(self, work: Path) -> None:
        self.work = work
        torch.manual_seed(0)
        self.bert = work / "tiny-bert"
        BertModel(BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                             intermediate_size=37, max_position_embeddings=128)).save_pretrained(self.bert)
        AutoTokenizer.from_pretrained(backbones.minilm_dir()).save_pretrained(self.bert)
        self.files = {s: write_reviews(work / f"{s}.csv", n, seed) for s, n, seed in
                      (("train", 48, 1), ("dev", 16, 2), ("test", 16, 3))}
        self.data = ["--data", self.files["train"], "--dev", self.files["dev"], "--test", self.files["test"],
                     "--text-column", "text", "--label-column", "stars", "--concept-columns", ",".join(CONCEPTS)]
        self.tiny = ["--backbone", self.bert, "--max-length", "32", "--pruner", "magnitude", "--prune-steps", "1",
                     "--finetune-epochs", "0"]
        self.model = work / "model"
        r = cli("-q", "train", *self.data, "--model", "sparsecbm", *self.tiny, "--epochs", "1", "--out", self.model)
        assert r["rc"] == 0, r
        self.rows: list[dict] = []

    def copy(self, name: str) -> Path:
        dest = self.work / name
        shutil.copytree(self.model, dest)
        return dest

    def record(self, group: str, probe: str, before: str, r: dict, ok: bool, seen: str | None = None) -> None:
        now = seen if seen is not None else (r["error"] or f"exit {r['rc']}")
        self.rows.append({"group": group, "probe": probe, "before": before, "verdict": "fixed" if ok else "FAILS",
                          "now": now.replace(str(self.work), "<tmp>"),
                          "rc": r["rc"], "seconds": r["seconds"]})
        print(f"[{'ok' if ok else 'FAIL'}] {probe}: {self.rows[-1]['now'][:150]}", flush=True)

    # ------------------------------------------------------------ silent wrong results

    def duplicated_header(self) -> None:
        bad = self.work / "dup.csv"
        lines = self.files["train"].read_text(encoding="utf-8").splitlines()
        bad.write_text("\n".join([lines[0] + ",food", *(line + ",Negative" for line in lines[1:])]) + "\n", encoding="utf-8")
        data = list(self.data)
        data[1] = bad
        r = cli("-q", "train", *data, "--model", "cbm", "--backbone", self.bert, "--epochs", "1",
                "--max-length", "32", "--out", self.work / "dup-model")
        self.record("silent", "CSV with a duplicated column name", "trained, exit 0, food read from the last duplicate",
                    r, one_line_error(r, "dup.csv", "food") and not (self.work / "dup-model").exists())

    def predict_blank_lines(self) -> None:
        texts = self.work / "texts.txt"
        texts.write_text("the food was lovely\n\nservice awful\n", encoding="utf-8")
        r = cli("-q", "predict", self.model, "--file", texts, "--json", self.work / "p.json")
        self.record("silent", "predict --file with a blank line", "blank line dropped, records without index or text",
                    r, one_line_error(r, "line 2 is blank") and not (self.work / "p.json").exists())
        r = cli("-q", "predict", self.model, "--file", texts, "--skip-blank", "--json", self.work / "p.json")
        records = json.loads((self.work / "p.json").read_text()) if r["rc"] == 0 else []
        got = [(x.get("index"), x.get("text"), x.get("line")) for x in records]
        self.record("silent", "predict --file --skip-blank", "(new) outputs could not be matched to inputs", r,
                    got == [(0, "the food was lovely", 1), (1, "service awful", 3)], seen=f"records {got}")

    def short_masks(self) -> None:
        from safetensors import safe_open
        from safetensors.torch import load_file, save_file

        folder = self.copy("short-masks")
        path = folder / "masks.safetensors"
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata()
        tensors = load_file(str(path))
        short = {key: t[: t.numel() // 2].clone() for key, t in tensors.items()}
        save_file(short, str(path), metadata=meta)
        r = cli("-q", "predict", folder, "the food was lovely")
        self.record("silent", "masks.safetensors with tensors shorter than declared", "loaded with 12.7 % kept, not 25 %",
                    r, one_line_error(r, "masks.safetensors", "damaged"))

    def overwrite_tokenizer(self) -> None:
        folder = self.copy("tok")
        (folder / "tokenizer" / "stale-from-another-backbone.txt").write_text("old")
        r = cli("-q", "train", *self.data, "--model", "sparsecbm", *self.tiny, "--epochs", "1", "--out", folder,
                "--overwrite")
        self.record("silent", "train --overwrite keeps the old tokenizer/", "new weights paired with the old tokenizer",
                    r, r["rc"] == 0 and not (folder / "tokenizer" / "stale-from-another-backbone.txt").exists(),
                    seen="tokenizer/ rewritten" if r["rc"] == 0 else None)

    def fisher_float64(self) -> None:
        from sparsecbm.pruning.fisher import BlockFisher

        torch.manual_seed(0)
        fisher = BlockFisher(35_000, 50)  # one MiniLM matrix's worth of blocks
        fisher.add(torch.randn(16, 35_000, 50) * 1e-3)
        start = time.perf_counter()
        try:
            inv = fisher.inverse_diagonal(1e-7)
            ok, seen = bool(torch.isfinite(inv).all() and (inv > 0).all()), "every block factorised"
        except FloatingPointError as e:
            ok, seen = False, str(e)
        r = {"rc": 0, "error": None, "seconds": round(time.perf_counter() - start, 2)}
        self.record("silent", "block Fisher, m = 16 < B = 50, damp 1e-7", "every block 'not positive definite'",
                    r, ok, seen=seen)

    # ------------------------------------------------------------ damaged folders

    def damaged(self) -> None:
        def edit_config(f) -> callable:
            def damage(folder: Path) -> None:
                (folder / "config.json").write_text(json.dumps(f(json.loads((folder / "config.json").read_text()))))
            return damage

        cases = [
            ("model.safetensors truncated", "SafetensorError traceback", lambda m: truncate_file(m / "model.safetensors"),
             "model.safetensors"),
            ("masks.safetensors truncated", "SafetensorError traceback", lambda m: truncate_file(m / "masks.safetensors"),
             "masks.safetensors"),
            ("config.json is []", "AttributeError traceback", lambda m: (m / "config.json").write_text("[]"),
             "config.json"),
            ("config.json missing keys", "KeyError traceback",
             edit_config(lambda c: {k: v for k, v in c.items() if k != "backbone_config"}), "config.json"),
            ("config.json labels edited", "size-mismatch traceback", edit_config(edit_labels), "config.json"),
            ("config.json garbage", "error did not name the file",
             lambda m: (m / "config.json").write_text("{not json"), "config.json"),
            ("tokenizer/ missing", "'Repo id must be in the form ...'", lambda m: shutil.rmtree(m / "tokenizer"),
             "tokenizer"),
        ]
        for i, (probe, before, damage, needle) in enumerate(cases):
            folder = self.copy(f"damaged-{i}")
            damage(folder)
            r = cli("-q", "predict", folder, "the food was lovely")
            self.record("damaged", probe, before, r, one_line_error(r, str(folder), needle))
        r = cli("-q", "train", *self.data, "--backbone", "no-such-org/no-such-model", "--out", self.work / "nobb")
        self.record("damaged", "unknown --backbone, offline", "51 s of network retries", r,
                    one_line_error(r, "no-such-org/no-such-model") and r["seconds"] < 30,
                    seen=f"{r['error']} ({r['seconds']} s)")

    # ------------------------------------------------------------ saves, concurrency, killed runs

    def save_to(self) -> None:
        other = self.copy("other")
        r = cli("-q", "correct", self.model, "the food was lovely", "--concept", "food", "--value", "Negative",
                "--save-to", other)
        self.record("saves", "--save-to an existing model folder", "overwritten without --overwrite", r,
                    one_line_error(r, "--save-to", "already holds a model"))
        target = self.work / "same"
        procs = [subprocess.Popen([*CLI, "-q", "correct", str(self.model), text, "--concept", "food", "--value",
                                   "Negative", "--save-to", str(target), "--keep-unfixed"],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                 for text in ("the food was lovely", "the food was lovely and fine")]
        codes = sorted(p.wait(timeout=600) for p in procs)
        for p in procs:
            p.communicate()
        r = {"rc": codes[-1], "error": None, "seconds": 0.0}
        self.record("saves", "two correct --save-to SAME at once", "both exit 0, one's edits lost", r,
                    codes == [0, 2], seen=f"exit codes {codes} (one saved, the other refused)")

    def orphans(self) -> None:
        folder = self.copy("orphans")
        (folder / ".model.safetensors.abc123.tmp").write_bytes(b"x" * 1000)
        (folder / ".tokenizer.def456.tmp").mkdir()
        r = cli("-q", "predict", folder, "the food was lovely")
        left = sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp"))
        self.record("saves", "temporaries of killed saves", "never cleaned (7 orphans, 273 MB)", r,
                    r["rc"] == 0 and not left, seen=f"after one load: {left or 'none left'}")

    def killed_train(self) -> None:
        out = self.work / "killed"
        args = ["-q", "train", *self.data, "--model", "cbm", "--backbone", self.bert, "--max-length", "32",
                "--epochs", "30", "--seed", "3", "--out", out]  # far more than the kill lets run
        p = subprocess.Popen([*CLI, *map(str, args)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 300
        while time.time() < deadline and not list((out / "resume").glob("state-*.safetensors")):
            time.sleep(0.2)
        p.kill()  # resume points are renamed into place: one that exists is whole
        p.wait()
        r = cli("-q", "evaluate", out, "--split", "test", "--json", self.work / "killed.json")
        unfinished = r["rc"] == 0 and "unfinished" in json.loads((self.work / "killed.json").read_text())
        self.record("saves", "a killed train, then evaluate", "loads as if finished (epochs: 8, best_epoch: 2)", r,
                    unfinished, seen=f"evaluate warns: {r['warning']}" if unfinished else None)
        r = cli(*args, "--resume")
        config = json.loads((out / "config.json").read_text())
        finished = config.get("finished", True) is not False and not (out / "resume").exists()
        self.record("saves", "train --resume after the kill", "(new)", r, r["rc"] == 0 and finished,
                    seen=f"exit {r['rc']}, finished: {config.get('finished')}, resume point removed: {not (out / 'resume').exists()}")

    def stress(self, seconds: float) -> None:
        script = self.work / "stress.py"
        script.write_text(STRESS)
        folder = self.copy("stress")
        procs = [subprocess.Popen([sys.executable, str(script), role, str(folder), str(seconds), str(ROOT)],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                 for role in ("writer", "writer", "reader")]
        results = []
        for p in procs:
            out, err = p.communicate(timeout=seconds + 300)
            results.append(out.split() if p.returncode == 0 else ["error", "0", err[-300:]])
        loads = sum(int(n) for _, n, _ in results)
        torn = sum(int(b) if b.isdigit() else 1 for _, _, b in results)
        r = {"rc": max(p.returncode for p in procs), "error": None, "seconds": seconds}
        self.record("saves", f"2 writers + 1 reader on one folder, {seconds:g} s", "6 of 236 loads torn", r,
                    torn == 0 and loads > 0, seen=f"{loads} loads, {torn} torn ({results})")


def markdown(rows: list[dict]) -> str:
    lines = ["Issue 10's probes re-run through the command line on a tiny SparseCBM "
             "(`python -m benchmarks.reliability`):", "",
             "| probe | before the fix | now | verdict |", "|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['probe']} | {r['before']} | {r['now'].replace('|', '/')} | {r['verdict']} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stress-seconds", type=float, default=60.0)
    parser.add_argument("--out", default="benchmarks/results")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as work:
        probes = Probes(Path(work))
        for step in (probes.duplicated_header, probes.predict_blank_lines, probes.short_masks,
                     probes.overwrite_tokenizer, probes.fisher_float64, probes.damaged, probes.save_to,
                     probes.orphans, probes.killed_train):
            step()
        probes.stress(args.stress_seconds)
    write_results(Path(args.out) / "reliability.json", {"command": "python -m benchmarks.reliability", "probes": probes.rows})
    write_text(Path(args.out) / "reliability.md", markdown(probes.rows))
    print(markdown(probes.rows))
    failed = [r["probe"] for r in probes.rows if r["verdict"] != "fixed"]
    if failed:
        sys.exit(f"{len(failed)} probe(s) fail: {failed}")


if __name__ == "__main__":
    main()
