"""Perplexity of a torch causal LM over token windows (for tuning and tests).

The official figure of a variant is measured through onnxruntime by the evaluation
harness; this one runs the torch model the pruner produced, on the same windows.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from edge_runtime.errors import ExportError


@torch.inference_mode()
def perplexity(
    model: nn.Module, windows: Any, batch_size: int = 4, progress: bool | None = None
) -> float:
    """exp(mean next-token NLL) over every position of every window but the first.

    Args:
        model: a *ForCausalLM (its `.model` gives hidden states, `.lm_head` the logits).
        windows: token ids [n, L] int64 (harness.text.heldout_windows).
        batch_size: windows per forward; logits are computed one window at a time, so
            memory holds [batch, L, hidden] activations plus [L, vocab] logits.
        progress: tqdm bar (None: only on a terminal).
    """
    ids = torch.as_tensor(windows).long()
    if ids.ndim != 2 or ids.shape[1] < 2:
        raise ExportError(f"perplexity needs windows [n, L] with L >= 2, got shape {tuple(ids.shape)}")
    was_training = model.training
    model.eval()
    nll, count = 0.0, 0
    try:
        for i in tqdm(range(0, len(ids), batch_size), desc="perplexity", unit="batch",
                      disable=None if progress is None else not progress, leave=False):
            batch = ids[i : i + batch_size]  # [B, L]
            hidden = model.model(input_ids=batch, use_cache=False).last_hidden_state  # [B, L, H]
            for h, t in zip(hidden, batch, strict=True):
                logits = model.lm_head(h[:-1]).float()  # [L-1, V]
                nll += float(F.cross_entropy(logits, t[1:], reduction="sum"))
                count += len(t) - 1
    finally:
        model.train(was_training)
    return math.exp(nll / count)
