"""One process against N data-parallel processes (accelerate launch) on the real backbone.

    python -m benchmarks.parallel --init-from runs/pipeline/cebab-sparsecbm/dense [--processes 2]

Two runs per launcher, each the real CLI in a child process, on a CEBaB subset:
a dense CBM epoch, and a SparseCBM from the dense CBM in ``--init-from``
(one OBS mining step: 4 concepts x 64 gradients, Gram and inversion; then one
sparse epoch). One process uses every core; N processes get cores / N threads
each. Reports each phase's time (from the run's train_log.jsonl), the speed-up,
and the Jaccard overlap of the mined masks (the Fisher runs in eval mode, so
the masks differ by float rounding only; weights also differ by dropout draws).
Finished runs are kept in --runs-dir and skipped when rerun (``--redo`` reruns).
Writes parallel.json / parallel.md to --out.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import socket
import subprocess
import sys
import time
from pathlib import Path

from benchmarks.harness import write_results
from sparsecbm.classifier import load
from sparsecbm.files import write_text
from sparsecbm.masks import jaccard

SUBSET = ["--data", "cebab", "--max-train", "480", "--max-eval", "300", "--epochs", "1"]
RUNS = {
    "dense": [*SUBSET, "--model", "cbm"],
    "sparse": [*SUBSET, "--model", "sparsecbm", "--prune-steps", "1", "--finetune-epochs", "0"],
}


def launcher(processes: int) -> tuple[list[str], dict[str, str]]:
    threads = max(1, (os.cpu_count() or 1) // processes)
    if processes == 1:
        return [sys.executable], {"OMP_NUM_THREADS": str(threads)}
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    accelerate = str(Path(sys.executable).parent / "accelerate")
    return ([accelerate, "launch", "--multi_gpu", "--num_processes", str(processes), "--num_machines", "1",
             "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(port),
             "--num_cpu_threads_per_process", str(threads)], {"OMP_NUM_THREADS": str(threads)})


def run(name: str, processes: int, args: list[str], out: Path) -> dict:
    prefix, env = launcher(processes)
    argv = [*prefix, "-m", "sparsecbm", "-q", "train", *args, "--out", str(out), "--overwrite"]
    print(f"== {name}, {processes} process(es): {shlex.join(argv)}", flush=True)
    start = time.perf_counter()
    subprocess.run(argv, check=True, env={**os.environ, **env})
    wall = time.perf_counter() - start
    log = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    phases = {}
    previous = 0.0
    for record in log:
        if record["phase"] == "prune":
            phases["mining step"] = record["seconds_mined"] - previous
        else:
            phases[f"{record['phase']} epoch {record['epoch']} + dev"] = record["seconds"] - previous
        previous = record["seconds"]
    return {"command": shlex.join(argv), "wall_seconds": round(wall, 1), "train_seconds": log[-1]["seconds"],
            "phases": {k: round(v, 1) for k, v in phases.items()}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--init-from", required=True, help="a dense CEBaB CBM folder (the SparseCBM run starts there)")
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--runs-dir", default="runs/parallel")
    parser.add_argument("--out", default="benchmarks/results")
    parser.add_argument("--redo", action="store_true")
    args = parser.parse_args()
    out, runs_dir = Path(args.out), Path(args.runs_dir)
    path = out / "parallel.json"
    results = json.loads(path.read_text()) if path.exists() and not args.redo else {}
    results["machine"] = f"{os.cpu_count()} CPU cores, no GPU" if not _cuda() else "CUDA"
    runs = results.setdefault("runs", {})
    for name, run_args in RUNS.items():
        if name == "sparse":
            run_args = [*run_args, "--init-from", args.init_from]
        for n in (1, args.processes):
            key = f"{name}-{n}"
            if key not in runs:
                runs[key] = run(name, n, run_args, runs_dir / key)
                write_results(path, results)
    one, many = (load(runs_dir / f"sparse-{n}") for n in (1, args.processes))
    results["mask_jaccard"] = {c: round(jaccard(one.model.masks[c], many.model.masks[c]), 6) for c in one.model.masks}
    write_results(path, results)
    lines = [f"{results['machine']}; 1 process with all cores vs {args.processes} processes "
             "(`accelerate launch`, gloo), CEBaB subset: " + " ".join(SUBSET), "",
             f"| run, phase | 1 process (s) | {args.processes} processes (s) | speed-up |", "|---|---|---|---|"]
    for name in RUNS:
        a, b = runs[f"{name}-1"], runs[f"{name}-{args.processes}"]
        for phase, seconds in a["phases"].items():
            lines.append(f"| {name}: {phase} | {seconds:.1f} | {b['phases'][phase]:.1f} | {seconds / b['phases'][phase]:.2f}x |")
        lines.append(f"| {name}: whole command (process start, loading) | {a['wall_seconds']:.1f} | {b['wall_seconds']:.1f} "
                     f"| {a['wall_seconds'] / b['wall_seconds']:.2f}x |")
    lines += ["", "Mask Jaccard, 1 vs N processes: " + ", ".join(f"{c} {j:.4f}" for c, j in results["mask_jaccard"].items())]
    write_text(out / "parallel.md", "\n".join(lines) + "\n")
    print("\n".join(lines))


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


if __name__ == "__main__":
    main()
