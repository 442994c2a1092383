"""Unstructured and N:M weight masks: magnitude, Wanda, SparseGPT, and OWL layer ratios.

Every function here works on one weight matrix W [out, in] and an exact number of weights
to zero, so the decoder's sparsity is reached exactly, not approximately: when `count` is
not a multiple of the rows, some rows lose one weight more than others (those whose next
candidate scores lowest).
"""

from __future__ import annotations

import math

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


@torch.no_grad()
def sparsegpt(
    w: torch.Tensor,
    hessian: torch.Tensor,
    count: int,
    nm: tuple[int, int] | None = None,
    block: int = 128,
    damp: float = 0.01,
) -> torch.Tensor:
    """SparseGPT (Frantar & Alistarh, 2023): prune and update the kept weights with OBS.

    Columns are processed left to right in blocks of `block`; inside a block each pruned
    weight's error is spread over the later columns of its row with the inverse Hessian's
    Cholesky factor, and the block's accumulated error is applied to the rest lazily.

    Args:
        w: weight [out, in].
        hessian: E[x xᵀ] of the layer input [in, in].
        count: weights to zero (ignored with `nm`).
        nm: (n, m) to keep n of every m consecutive inputs instead.
        block: columns per lazy-update block (mask selection is adaptive per block).
        damp: dampening, as a fraction of the mean Hessian diagonal.

    Returns:
        the new weight [out, in] (fp32) with exactly `count` zeros.
    """
    W = w.detach().float().clone()  # [out, in]
    rows, cols = W.shape
    H = hessian.detach().double().clone()  # [in, in]
    dead = torch.diagonal(H) == 0
    H[dead, dead] = 1.0  # inputs that never fire: any value is free, keep the weights
    H += damp * torch.diagonal(H).mean() * torch.eye(cols, dtype=H.dtype)
    L = torch.linalg.cholesky(H)
    Hinv = torch.linalg.cholesky(torch.cholesky_inverse(L), upper=True).float()  # [in, in] upper
    mask = torch.zeros_like(W, dtype=torch.bool)
    counts = _block_counts(count, cols, block) if nm is None else None
    for b, i1 in enumerate(range(0, cols, block)):
        i2 = min(i1 + block, cols)
        W1 = W[:, i1:i2].clone()  # [out, bs]
        Q1 = torch.zeros_like(W1)
        Err1 = torch.zeros_like(W1)
        Hinv1 = Hinv[i1:i2, i1:i2]
        d = torch.diagonal(Hinv1)  # [bs]
        if nm is None:
            assert counts is not None
            tmp = (W1 / d[None, :]) ** 2  # OBS saliency w² / [H⁻¹]ₚₚ² (Cholesky form)
            m1 = torch.zeros_like(W1, dtype=torch.bool).flatten()
            if counts[b]:
                m1[torch.topk(tmp.flatten(), counts[b], largest=False).indices] = True
            m1 = m1.reshape(W1.shape)
        else:
            m1 = torch.zeros_like(W1, dtype=torch.bool)
        for i in range(i2 - i1):
            col = W1[:, i]
            if nm is not None and i % nm[1] == 0:
                n, m = nm
                tmp = (W1[:, i : i + m] / d[None, i : i + m]) ** 2  # [out, m]
                m1.scatter_(1, i + torch.topk(tmp, m - n, dim=1, largest=False).indices, True)
            q = col.masked_fill(m1[:, i], 0.0)
            Q1[:, i] = q
            err = (col - q) / d[i]  # [out]
            W1[:, i:] -= err[:, None] * Hinv1[i, i:][None, :]
            Err1[:, i] = err
        W[:, i1:i2] = Q1
        mask[:, i1:i2] = m1
        W[:, i2:] -= Err1 @ Hinv[i1:i2, i2:]
    W[mask] = 0.0  # exact zeros, whatever rounding did
    return W


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
