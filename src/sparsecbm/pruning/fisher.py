"""Block-diagonal dampened empirical Fisher and its inverse diagonal (oBERT / WoodFisher).

Every prunable weight is flattened and cut into consecutive blocks of B entries
(the last block of each weight zero-padded). For block b,

    F_b = damp * I + (1/m) sum_i g_{i,b} g_{i,b}^T

oBERT builds F_b^-1 with m sequential Woodbury rank-1 updates, a memory-bound
loop. Here the m gradients arrive in chunks of c; each chunk adds its Gram
matrices to all blocks with batched matrix products ((s, B, c) @ (s, c, B), a
slice of s blocks at a time), so memory never grows with m; then all
blocks are factorised with a batched Cholesky (float64, in slices of 1024
blocks: 20 MB temporaries that the allocator reuses instead of fresh pages from
the OS each time; on the CPU the slices are shared among threads, see
``inverse_diagonal``) and the diagonal of each inverse is read off.

The Gram is accumulated in float64: a sum of m < B rank-one terms is singular,
and float32 rounding leaves eigenvalues of about 1e-7 x its norm that may be
negative, which a small ``damp`` does not cover (with m = 16, B = 50, gradients
of norm ~1 and damp 1e-7, every block failed to factorise in float32; none does
in float64, see tests/test_fisher.py).

Memory: the Gram accumulator holds n_blocks x B x B float64 values, i.e.
(#weights, padded) x B x 8 bytes (MiniLM's 10.6M prunable weights, B = 50:
4.0 GiB), plus one chunk of gradients (c x #weights x 4 bytes).
"""

from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Callable, Iterator, Sequence

import torch

from ..settings import SettingError

GRAM_DTYPE = torch.float64  # see the module doc: float32 rounding breaks rank-deficient blocks
SLICE_BLOCKS = 1024  # blocks factorised at once (and the unit of work shared between processes)


def blocks_per_tensor(shapes: Sequence[torch.Size], block_size: int) -> list[int]:
    return [math.ceil(math.prod(s) / block_size) for s in shapes]


def to_blocks(tensors: Sequence[torch.Tensor], block_size: int) -> torch.Tensor:
    """Flatten each tensor and zero-pad it to whole blocks: (n_blocks, B)."""
    parts = []
    for t in tensors:
        flat = t.reshape(-1)
        pad = (-flat.numel()) % block_size
        if pad:
            flat = torch.nn.functional.pad(flat, (0, pad))
        parts.append(flat.reshape(-1, block_size))
    return torch.cat(parts)


def from_blocks(blocks: torch.Tensor, shapes: Sequence[torch.Size], block_size: int) -> list[torch.Tensor]:
    """Inverse of :func:`to_blocks` for one set of tensors: (n_blocks, B) -> tensors."""
    out, start = [], 0
    for shape, n in zip(shapes, blocks_per_tensor(shapes, block_size)):
        flat = blocks[start : start + n].reshape(-1)[: math.prod(shape)]
        out.append(flat.reshape(shape))
        start += n
    return out


class BlockFisher:
    """Accumulates per-block Gram matrices from chunks of gradients."""

    def __init__(self, n_blocks: int, block_size: int, device: torch.device | str = "cpu") -> None:
        self.block_size = block_size
        self.gram = torch.zeros(n_blocks, block_size, block_size, dtype=GRAM_DTYPE, device=device)  # (n_blocks, B, B)
        self.count = 0

    def add(self, chunk: torch.Tensor, slice_blocks: int = SLICE_BLOCKS) -> None:
        """``chunk``: (c, n_blocks, B) gradients; adds sum_i g_i g_i^T to every block.
        Taken ``slice_blocks`` blocks at a time, so the float64 copy of the gradients is
        one slice's (c x 1024 x B x 8 bytes), not the whole chunk's."""
        for start in range(0, self.gram.shape[0], slice_blocks):
            g = chunk[:, start : start + slice_blocks].to(self.gram.device, torch.float64).transpose(0, 1)  # (s, c, B)
            self.gram[start : start + slice_blocks].baddbmm_(g.transpose(1, 2), g)  # (s, B, c) @ (s, c, B)
        self.count += chunk.shape[0]

    def inverse_diagonal(self, damp: float, slice_blocks: int = SLICE_BLOCKS,
                         owned: Callable[[int], bool] | None = None, threads: int | None = None) -> torch.Tensor:
        """diag(F_b^-1) for every block, (n_blocks, B), computed in float64. With
        ``owned``, only the slices ``owned(i)`` holds true for (slice i: blocks
        i * slice_blocks ...) are computed; the others are left 0.

        LAPACK factorises a batch one small matrix after another on one core, so on
        the CPU the slices are shared among ``threads`` Python threads (default:
        torch's thread count), each running torch with one thread."""
        if self.count == 0:
            raise ValueError("no gradients were added to the Fisher estimate")
        if not damp > 0:
            raise SettingError("damp", f" must be positive, got {damp}")
        eye = torch.eye(self.block_size, dtype=torch.float64, device=self.gram.device)
        out = (torch.empty if owned is None else torch.zeros)(self.gram.shape[:2], dtype=torch.float64,
                                                             device=self.gram.device)

        def invert(start: int) -> int:
            """Fills ``out`` for one slice; the number of blocks that failed to factorise."""
            f = self.gram[start : start + slice_blocks] / self.count + damp * eye
            chol, info = torch.linalg.cholesky_ex(f)
            bad = int((info > 0).sum())
            if not bad:
                out[start : start + slice_blocks] = torch.cholesky_inverse(chol).diagonal(dim1=-2, dim2=-1)
            return bad

        starts = [start for part, start in enumerate(range(0, self.gram.shape[0], slice_blocks))
                  if owned is None or owned(part)]
        threads = min(threads or torch.get_num_threads(), len(starts))
        if threads > 1 and self.gram.device.type == "cpu":
            with _torch_threads(1), ThreadPoolExecutor(threads) as pool:
                bad = sum(pool.map(invert, starts))
        else:
            bad = sum(map(invert, starts))
        if bad:
            raise FloatingPointError(
                f"the dampened Fisher is not positive definite in {bad} block(s) (damp={damp}); raise --damp"
            )
        return out


@contextmanager
def _torch_threads(n: int) -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def obs_scores(weight_blocks: torch.Tensor, inverse_diag: torch.Tensor) -> torch.Tensor:
    """OBS saliency rho_q = theta_q^2 / (2 [F^-1]_qq), blockwise (n_blocks, B)."""
    return weight_blocks.double() ** 2 / (2 * inverse_diag)
