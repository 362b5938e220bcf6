"""Block Fisher inverse: batched Gram + batched Cholesky vs oBERT's sequential Woodbury.

Both build diag(F_b^-1) for F_b = damp*I + (1/m) sum_i g_i,b g_i,b^T over the
blocks of MiniLM-sized weight matrices (one transformer layer of
all-MiniLM-L6-v2: Q, K, V, O 384x384, MLP 384x1536 and 1536x384; 1.77M
weights), B = 50, from the same m gradients, and compare the OBS scores.

- woodbury: oBERT's recipe, F^-1 <- F^-1 - (F^-1 g)(F^-1 g)^T / (m + g^T F^-1 g),
  one gradient at a time over all blocks (memory-bound batched mat-vecs).
- batched (sparsecbm): Gram matrices of chunks of gradients with one batched
  matmul each, then a batched float64 Cholesky and cholesky_inverse.

Each variant runs in its own child process so its peak memory is its own;
the time counted is the Fisher work alone (making the synthetic gradients is
left out of both).

    python -m benchmarks.fisher_speed [--m 64 256 1024] [--out benchmarks/results]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from benchmarks.harness import machine, write_results
from sparsecbm.files import write_text
from sparsecbm.pruning.fisher import BlockFisher, obs_scores, to_blocks

SHAPES = [(384, 384)] * 4 + [(1536, 384), (384, 1536)]  # one MiniLM layer
B, DAMP, CHUNK = 50, 1e-7, 16


def gradients(m: int, chunk: int, seed: int = 0):
    """The same m gradients for every variant (seeded), in chunks (c, n_blocks, B)."""
    g = torch.Generator().manual_seed(seed)
    for start in range(0, m, chunk):
        c = min(chunk, m - start)
        yield torch.stack([to_blocks([torch.randn(s, generator=g) * 1e-2 for s in SHAPES], B) for _ in range(c)])


def weights() -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    return to_blocks([torch.randn(s, generator=g) * 0.05 for s in SHAPES], B)


def run_batched(m: int) -> tuple[torch.Tensor, dict]:
    """Scores and the seconds spent on Fisher work (not on making gradients): the Gram, the inversion."""
    w = weights()
    fisher = BlockFisher(w.shape[0], B)
    gram = 0.0
    for chunk in gradients(m, CHUNK):
        start = time.perf_counter()
        fisher.add(chunk)
        gram += time.perf_counter() - start
    start = time.perf_counter()
    inv = fisher.inverse_diagonal(DAMP)
    inversion = time.perf_counter() - start
    return obs_scores(w, inv), {"seconds": gram + inversion, "gram_seconds": gram, "inversion_seconds": inversion}


def run_woodbury(m: int) -> tuple[torch.Tensor, dict]:
    w = weights()
    n = w.shape[0]
    finv = torch.eye(B).repeat(n, 1, 1) / DAMP  # (n_blocks, B, B)
    seconds = 0.0
    for chunk in gradients(m, CHUNK):
        start = time.perf_counter()
        for g in chunk:  # one rank-1 update per gradient, all blocks at once
            v = torch.bmm(finv, g.unsqueeze(-1))  # (n, B, 1)
            denom = m + torch.bmm(g.unsqueeze(1), v)  # (n, 1, 1)
            finv.baddbmm_(v, v.transpose(1, 2) / denom, alpha=-1)
        seconds += time.perf_counter() - start
    inv = finv.diagonal(dim1=-2, dim2=-1).double()
    return obs_scores(w, inv), {"seconds": seconds}


def matmul_gflops(dtype: torch.dtype = torch.float32) -> float:
    """This machine's GEMM rate (2048^3, best of 5)."""
    a, b = torch.randn(2048, 2048, dtype=dtype), torch.randn(2048, 2048, dtype=dtype)
    a @ b
    best = min(_timed(lambda: a @ b) for _ in range(5))
    return 2 * 2048**3 / best / 1e9


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def child(variant: str, m: int, scores_path: str) -> None:
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    scores, times = (run_batched if variant == "batched" else run_woodbury)(m)
    save_file({"scores": scores.float().contiguous()}, scores_path)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({**times, "peak_mb_above_start": (peak - base) / 1024}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--m", type=int, nargs="*", default=[64, 256, 1024])
    parser.add_argument("--out", default="benchmarks/results")
    parser.add_argument("--child", nargs=3, metavar=("VARIANT", "M", "SCORES"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child[0], int(args.child[1]), args.child[2])
        return

    n_weights = sum(r * c for r, c in SHAPES)
    n_blocks = weights().shape[0]
    peak_gemm, peak_dgemm = matmul_gflops(), matmul_gflops(torch.float64)
    rows = []
    tmp = Path(args.out) / ".fisher-scores"
    tmp.mkdir(parents=True, exist_ok=True)
    for m in args.m:
        result = {"m": m}
        for variant in ("batched", "woodbury"):
            proc = subprocess.run(
                [sys.executable, __file__, "--child", variant, str(m), str(tmp / f"{variant}.safetensors")],
                check=True, capture_output=True, text=True,
            )
            result[variant] = json.loads(proc.stdout.strip().splitlines()[-1])
        a = load_file(str(tmp / "batched.safetensors"))["scores"].double()
        b = load_file(str(tmp / "woodbury.safetensors"))["scores"].double()
        real = a > 0  # padded entries score 0 in both
        rel = ((a - b).abs() / b.abs())[real]
        result["max_relative_score_difference"] = float(rel.max())
        result["median_relative_score_difference"] = float(rel.median())
        k = int(real.sum()) // 4  # do both keep the same top quarter (the default K = 4 sparsity)?
        top_a = set(torch.topk(a[real], k).indices.tolist())
        top_b = set(torch.topk(b[real], k).indices.tolist())
        result["top_quarter_agreement"] = len(top_a & top_b) / k
        result["speedup"] = result["woodbury"]["seconds"] / result["batched"]["seconds"]
        # Gram: 2 m B^2 flops per block; Cholesky + inverse: about B^3 / 3 + B^3 per block.
        flops = 2 * m * B * B * n_blocks + (B**3 / 3 + B**3) * n_blocks
        result["batched_gflops"] = flops / result["batched"]["seconds"] / 1e9
        result["gram_gflops"] = 2 * m * B * B * n_blocks / result["batched"]["gram_seconds"] / 1e9
        result["formula_mb"] = n_blocks * B * B * 4 / 2**20  # (#weights padded) x B x 4 bytes
        rows.append(result)
        print(json.dumps(result), flush=True)
    for f in tmp.iterdir():
        f.unlink()
    tmp.rmdir()

    where = machine()
    summary = {
        "machine": where, "weights": n_weights, "blocks": n_blocks, "block_size": B, "damp": DAMP,
        "chunk": CHUNK, "float32_matmul_gflops": peak_gemm, "float64_matmul_gflops": peak_dgemm, "runs": rows,
    }
    out = Path(args.out)
    write_results(out / "fisher_speed.json", summary)
    lines = [
        f"Block Fisher inverse on one MiniLM layer ({n_weights:,} weights, B = {B}, damp = {DAMP}); {where}.",
        f"matmul (2048^3) on this machine: float32 {peak_gemm:.0f} GFLOP/s, float64 {peak_dgemm:.0f} GFLOP/s.",
        "",
        "| m | woodbury s | batched s (Gram + inversion) | speedup | batched GFLOP/s (Gram's) "
        "| peak MB batched / woodbury | formula MB | max rel. score diff | top-25% agreement |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['m']} | {r['woodbury']['seconds']:.1f} | {r['batched']['seconds']:.2f} "
            f"({r['batched']['gram_seconds']:.2f} + {r['batched']['inversion_seconds']:.2f}) | {r['speedup']:.1f}x "
            f"| {r['batched_gflops']:.0f} ({r['gram_gflops']:.0f}) "
            f"| {r['batched']['peak_mb_above_start']:.0f} / {r['woodbury']['peak_mb_above_start']:.0f} "
            f"| {r['formula_mb']:.0f} | {r['max_relative_score_difference']:.1e} | {100 * r['top_quarter_agreement']:.2f}% |"
        )
    write_text(out / "fisher_speed.md", "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
