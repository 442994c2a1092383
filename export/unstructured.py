"""Unstructured and N:M weight masks: magnitude, Wanda, SparseGPT, and OWL layer ratios.

Every function here works on one weight matrix W [out, in] and an exact number of weights
to zero, so the decoder's sparsity is reached exactly, not approximately: when `count` is
not a multiple of the rows, some rows lose one weight more than others (those whose next
candidate scores lowest).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager

import torch

# --------------------------------------------------------------------------- masks


def row_mask(scores: torch.Tensor, count: int) -> torch.Tensor:
    """Zero the `count` lowest scores, compared within each output row.

    Args:
        scores: [out, in] importance (higher = keep).
        count: weights to zero in the whole matrix, 0 <= count <= out * in.

    Returns:
        mask [out, in], True where the weight is pruned; exactly `count` True.
    """
    rows, cols = scores.shape
    k, extra = divmod(count, rows)
    order = torch.argsort(scores, dim=1)  # [out, in] ascending
    mask = torch.zeros_like(scores, dtype=torch.bool)
    if k:
        mask.scatter_(1, order[:, :k], True)
    if extra:
        # the rows whose (k+1)-th lowest score is smallest lose one more weight
        nxt = scores.gather(1, order[:, k : k + 1]).squeeze(1)  # [out]
        pick = torch.topk(nxt, extra, largest=False).indices
        mask[pick, order[pick, k]] = True
    return mask


def nm_mask(scores: torch.Tensor, n: int, m: int) -> torch.Tensor:
    """Semi-structured N:M: in every group of `m` consecutive inputs keep the `n` best.

    Args:
        scores: [out, in] importance, `in` divisible by `m`.

    Returns:
        mask [out, in], True where pruned (`m - n` per group).
    """
    rows, cols = scores.shape
    groups = scores.reshape(rows, cols // m, m)  # [out, in/m, m]
    drop = torch.topk(groups, m - n, dim=-1, largest=False).indices
    mask = torch.zeros_like(groups, dtype=torch.bool).scatter_(-1, drop, True)
    return mask.reshape(rows, cols)


def magnitude_scores(w: torch.Tensor) -> torch.Tensor:
    """|W| [out, in]."""
    return w.abs()


def wanda_scores(w: torch.Tensor, norm: torch.Tensor) -> torch.Tensor:
    """|W_ij| · ‖X_j‖₂ [out, in] (Sun et al., 2023)."""
    return w.abs() * norm[None, :]


# --------------------------------------------------------------------------- SparseGPT


def _block_counts(count: int, cols: int, block: int) -> list[int]:
    """Split `count` over column blocks in proportion to their width, summing exactly."""
    bounds = list(range(0, cols, block)) + [cols]
    cum = [round(count * b / cols) for b in bounds]
    return [cum[i + 1] - cum[i] for i in range(len(bounds) - 1)]


@contextmanager
def single_thread() -> Iterator[None]:
    """Run small sequential linear algebra on one thread.

    The column loop of SparseGPT and 1-2k Cholesky factorizations are many small ops:
    with a second OpenMP thread they ran 5-20x slower here (threads spin on barriers,
    worse on a busy machine), so they get one thread whatever the caller set.
    """
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)


def inverse_hessian_factor(hessian: torch.Tensor, damp: float) -> torch.Tensor:
    """Upper Cholesky factor of the dampened inverse Hessian [in, in] (fp32)."""
    H = hessian.detach().double().clone()  # [in, in]
    dead = torch.diagonal(H) == 0
    H[dead, dead] = 1.0  # inputs that never fire: any value is free, keep the weights
    H += damp * torch.diagonal(H).mean() * torch.eye(len(H), dtype=H.dtype)
    L = torch.linalg.cholesky(H)
    return torch.linalg.cholesky(torch.cholesky_inverse(L), upper=True).float()


@torch.no_grad()
def sparsegpt(
    ws: list[torch.Tensor],
    hessian: torch.Tensor,
    counts: list[int],
    nm: tuple[int, int] | None = None,
    block: int = 128,
    damp: float = 0.01,
    per_row: bool = False,
) -> list[torch.Tensor]:
    """SparseGPT (Frantar & Alistarh, 2023): prune and update the kept weights with OBS.

    Columns are processed left to right in blocks of `block`; inside a block each pruned
    weight's error is spread over the later columns of its row with the inverse Hessian's
    Cholesky factor, and the block's accumulated error is applied to the rest lazily.
    Matrices that read the same input (q/k/v, gate/up) go through together: one
    factorization and one column loop, with each matrix's own exact zero count.

    Args:
        ws: weights [out_i, in] that share `hessian`.
        hessian: E[x xᵀ] of their input [in, in] (a covariance for the affine variant).
        counts: weights to zero per matrix (ignored with `nm`).
        nm: (n, m) to keep n of every m consecutive inputs instead.
        block: columns per lazy-update block; the mask is chosen per block (adaptive).
        damp: dampening, as a fraction of the mean Hessian diagonal.
        per_row: compare weights within each output row (as Wanda does) instead of across
            the matrix: every row loses the same share (±1 weight), spread over the
            blocks as the initial saliencies place it, then chosen per block with the
            updated ones.

    Returns:
        the new weights (fp32), with exactly `counts[i]` zeros each.
    """
    with single_thread():
        W = torch.cat([w.detach().float() for w in ws])  # [sum out_i, in]
        rows, cols = W.shape
        bounds = [0]
        for w in ws:
            bounds.append(bounds[-1] + w.shape[0])
        Hinv = inverse_hessian_factor(hessian, damp)  # [in, in] upper
        mask = torch.zeros_like(W, dtype=torch.bool)
        per_block = [_block_counts(c, cols, block) for c in counts] if nm is None else []
        if per_row and nm is None:
            # Each row's zeros per block: as many as the row's mask from the initial
            # saliencies puts there. Rows keep their exact totals, blocks stay adaptive.
            d0 = torch.diagonal(Hinv)  # [in]
            first = torch.cat([row_mask((W[r1:r2] / d0[None, :]) ** 2, c)
                               for r1, r2, c in zip(bounds[:-1], bounds[1:], counts, strict=True)])
            quota = torch.stack([first[:, i : i + block].sum(1) for i in range(0, cols, block)], 1)  # [rows, blocks]
        for b, i1 in enumerate(range(0, cols, block)):
            i2 = min(i1 + block, cols)
            W1 = W[:, i1:i2].clone()  # [rows, bs]
            Hinv1 = Hinv[i1:i2, i1:i2]
            d = torch.diagonal(Hinv1)  # [bs]
            m1 = torch.zeros_like(W1, dtype=torch.bool)
            if nm is None:
                tmp = (W1 / d[None, :]) ** 2  # OBS saliency w² / [H⁻¹]ₚₚ (Cholesky form)
                if per_row:
                    rank = torch.argsort(torch.argsort(tmp, dim=1), dim=1)  # [rows, bs]
                    m1 = rank < quota[:, b : b + 1]
                else:
                    _smallest_per_matrix(m1, tmp, bounds, [c[b] for c in per_block])
            Q1, Err1 = _obs_block(W1, Hinv1, m1, nm)
            W[:, i1:i2] = Q1
            mask[:, i1:i2] = m1
            W[:, i2:] -= Err1 @ Hinv[i1:i2, i2:]
        W[mask] = 0.0  # exact zeros, whatever rounding did
        return [W[r1:r2] for r1, r2 in zip(bounds[:-1], bounds[1:], strict=True)]


def _smallest_per_matrix(m1: torch.Tensor, tmp: torch.Tensor, bounds: list[int], counts: list[int]) -> None:
    """Mark in `m1` [rows, bs] the `counts[k]` lowest saliencies `tmp` of each matrix's rows."""
    for (r1, r2), c in zip(zip(bounds[:-1], bounds[1:], strict=True), counts, strict=True):
        if c:
            seg = torch.zeros(r2 - r1, tmp.shape[1], dtype=torch.bool).flatten()
            seg[torch.topk(tmp[r1:r2].flatten(), c, largest=False).indices] = True
            m1[r1:r2] = seg.reshape(r2 - r1, tmp.shape[1])


def _obs_block(W1: torch.Tensor, Hinv1: torch.Tensor, m1: torch.Tensor,
               nm: tuple[int, int] | None) -> tuple[torch.Tensor, torch.Tensor]:
    """One block, column by column: zero the masked weights (N:M chosen here, into `m1`) and
    spread each column's error over the block's later columns. `W1` [rows, bs] is updated in place.

    Returns:
        the block's new weights [rows, bs] and its scaled errors [rows, bs] for the lazy update.
    """
    Q1 = torch.zeros_like(W1)
    Err1 = torch.zeros_like(W1)
    d = torch.diagonal(Hinv1)  # [bs]
    for i in range(W1.shape[1]):
        col = W1[:, i]
        if nm is not None and i % nm[1] == 0:
            n, m = nm
            tmp = (W1[:, i : i + m] / d[None, i : i + m]) ** 2  # [rows, m]
            m1.scatter_(1, i + torch.topk(tmp, m - n, dim=1, largest=False).indices, True)
        q = col.masked_fill(m1[:, i], 0.0)
        Q1[:, i] = q
        err = (col - q) / d[i]  # [rows]
        W1[:, i:] -= err[:, None] * Hinv1[i, i:][None, :]
        Err1[:, i] = err
    return Q1, Err1


# --------------------------------------------------------------------------- OWL


def outlier_ratio(scores: list[torch.Tensor], m: float) -> float:
    """Share of a layer's Wanda scores above `m` times their mean (OWL's D_l)."""
    flat = torch.cat([s.flatten() for s in scores])
    return float((flat > m * flat.mean()).float().mean())


def owl_sparsities(ratios: list[float], level: float, lam: float) -> list[float]:
    """Per-layer sparsities (Yin et al., 2024): more outliers, fewer pruned weights.

    Layer densities are the outlier ratios rescaled to a range of width 2·lam, shifted so
    their mean is 1 - level (layers of equal size then keep the global level), and clipped
    to [0, 1]. The caller turns them into exact per-Linear counts.
    """
    r = torch.tensor(ratios, dtype=torch.float64)
    span = float(r.max() - r.min())
    dens = (r - r.min()) / span * 2 * lam if span > 0 else torch.zeros_like(r)
    dens = dens - dens.mean() + (1 - level)
    return [min(max(1 - float(x), 0.0), 1.0) for x in dens]


def exact_counts(targets: dict[str, float], total: int) -> dict[str, int]:
    """Round real per-matrix zero counts to integers that sum to exactly `total`.

    Largest-remainder rounding: each count is the floor or the ceiling of its target.
    """
    floors = {k: math.floor(v) for k, v in targets.items()}
    left = total - sum(floors.values())
    by_rem = sorted(targets, key=lambda k: targets[k] - floors[k], reverse=True)
    for k in by_rem[: max(left, 0)]:
        floors[k] += 1
    return floors
