"""Recovery: a brief distillation of a pruned variant from its dense parent.

    cfg = RecoveryConfig(tokens=40_000)
    report = distill(student, cache, cfg, checkpoint=Path("out.recovery/structured-25.pt"))

The student learns the teacher's next-token distribution (forward KL to the teacher's
top-k logits, cached once by export.distill_data.TeacherCache) on the loss positions of
the cached rows: the assistant tokens of the dense model's own chat answers and the
calibration prose. What is trained, and what is not:

- the decoder's linear weights and norms; the tied embedding / lm_head stays frozen (its
  49,152-wide weight gradient would cost as much as the rest of the backward);
- unstructured variants keep their masks exactly: gradients are masked before each
  optimizer step and the weights after it, so the zeros stay where pruning put them;
- structured variants keep their shapes (only values change), so nothing grows back.

The loss over the vocabulary is computed in chunks under activation checkpointing, so the
[tokens, vocab] logits never live all at once (peak memory stays that of the weights, the
gradients and AdamW's two moments).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint as grad_checkpoint
from tqdm.auto import tqdm

from edge_runtime.config import check_table
from edge_runtime.errors import RecoveryError
from export.calibrate import PeakRSS, decoder_layers
from export.distill_data import Row, TeacherCache

log = logging.getLogger(__name__)

DEVICES = ("cpu", "cuda")
# Keys that shape the teacher cache, built once for every variant: set once, in [recovery].
SHARED_KEYS = frozenset({"top_k", "prompts", "max_new_tokens", "prose_len", "device", "checkpoint_s"})
HEAD_CHUNK = 256  # loss positions per vocabulary-wide chunk: 256 x 49,152 fp32 = 50 MB
# Padded tokens per forward/backward (gradients accumulate over micro-batches): SmolLM2-135M
# keeps about 1.4 MB of activations per token for the backward, so 256 tokens stay near 0.35 GB
# (structured-25 peaked at 3.1 GB RSS with 512, weights + gradients + AdamW included).
MICRO_TOKENS = 256


@dataclass(frozen=True)
class RecoveryConfig:
    """How long and how a variant is distilled (recipe `recovery = {...}`, `--recovery`)."""

    tokens: int = 40_000  # loss tokens the student sees in total (the budget; time is linear in it)
    steps: int | None = None  # optimizer steps; None: tokens / batch_tokens
    batch_tokens: int = 1024  # loss tokens per optimizer step (rows are packed up to this)
    lr: float = 1e-4  # AdamW peak; 5% linear warm-up, then cosine decay to 10%
    temperature: float = 1.0  # softens teacher and student alike; the loss is scaled by T^2
    top_k: int = 32  # teacher logits kept per position; the rest of its mass is dropped
    chat_share: float = 0.5  # share of loss tokens from the dense model's chat answers (rest: prose)
    prompts: str = ""  # JSON Lines prompt set the dense model answers ("": export/data/recovery_prompts.jsonl)
    max_new_tokens: int = 160  # longest dense answer generated per prompt
    prose_len: int = 256  # tokens per calibration-prose row
    train_norms: bool = True  # RMSNorm weights train too (cheap, and they absorb rescaling)
    checkpoint_s: float = 180.0  # seconds between checkpoints when a checkpoint path is given
    device: str = "cpu"  # cpu | cuda (cuda only where torch sees a GPU)
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("tokens", "batch_tokens", "top_k", "max_new_tokens", "prose_len"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
                raise RecoveryError(f"recovery {name} must be a positive integer, got {v!r}")
        if self.steps is not None and (isinstance(self.steps, bool) or not isinstance(self.steps, int) or self.steps <= 0):
            raise RecoveryError(f"recovery steps must be a positive integer, got {self.steps!r}")
        if not (isinstance(self.lr, (int, float)) and 0 < self.lr < 1):
            raise RecoveryError(f"recovery lr must be in (0, 1), got {self.lr!r}")
        if not (isinstance(self.temperature, (int, float)) and self.temperature > 0):
            raise RecoveryError(f"recovery temperature must be > 0, got {self.temperature!r}")
        if not (isinstance(self.chat_share, (int, float)) and 0 <= self.chat_share <= 1):
            raise RecoveryError(f"recovery chat_share must be in [0, 1], got {self.chat_share!r}")
        if self.device not in DEVICES:
            raise RecoveryError(f"recovery device must be one of {DEVICES}, got {self.device!r}")

    @property
    def total_steps(self) -> int:
        return self.steps or max(1, math.ceil(self.tokens / self.batch_tokens))

    @classmethod
    def from_dict(cls, d: dict[str, Any], where: str = "recovery") -> RecoveryConfig:
        """From a recipe table; unknown keys and wrong types are refused by name."""
        return cls().updated(d, where)

    def updated(self, d: dict[str, Any], where: str = "recovery") -> RecoveryConfig:
        """This config with the keys of `d` replaced (keys and types checked by name)."""
        checked = check_table(RecoveryConfig, d, where, RecoveryError)
        try:
            return replace(self, **checked)
        except RecoveryError as e:
            raise RecoveryError(f"{where}: {e}") from e

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class RecoveryReport:
    """What a recovery did (the manifest's `recovery` of the variant)."""

    tokens: int  # loss tokens trained on
    steps: int
    seconds: float
    data: dict[str, int]  # loss tokens per source: {"chat": ..., "prose": ...}
    loss_first: float  # mean distillation loss over the first 10% of steps
    loss_last: float  # ... and over the last 10%
    peak_rss_mb: float
    config: dict[str, Any] = field(default_factory=dict)
    resumed_from: int | None = None  # step a checkpoint was resumed at


def check_device(device: str) -> torch.device:
    """The torch device for `device`; RecoveryError when CUDA is asked for and absent."""
    if device == "cuda" and not torch.cuda.is_available():
        raise RecoveryError("--device cuda: torch sees no CUDA GPU on this machine; use --device cpu")
    if device not in DEVICES:
        raise RecoveryError(f"unknown device {device!r}; choose one of {DEVICES}")
    return torch.device(device)


# --------------------------------------------------------------------------- what trains


def trainable(model: nn.Module, train_norms: bool) -> dict[str, nn.Parameter]:
    """Decoder linear weights (and norms); everything else is frozen."""
    layers = decoder_layers(model)
    names = {id(p): n for n, p in model.named_parameters()}
    out: dict[str, nn.Parameter] = {}
    for p in model.parameters():
        p.requires_grad_(False)
    for layer in layers:
        for mod in layer.modules():
            if isinstance(mod, nn.Linear) or (train_norms and "norm" in type(mod).__name__.lower()):
                for p in mod.parameters(recurse=False):
                    p.requires_grad_(True)
                    out[names[id(p)]] = p
    if train_norms:
        final = getattr(getattr(model, "model", None), "norm", None)
        if final is not None:
            for p in final.parameters():
                p.requires_grad_(True)
                out[names[id(p)]] = p
    return out


def masks(params: dict[str, nn.Parameter]) -> dict[str, torch.Tensor]:
    """Boolean keep-masks of the 2-D weights that hold exact zeros (unstructured pruning)."""
    return {n: p.detach() != 0 for n, p in params.items() if p.dim() == 2 and bool((p == 0).any())}


# --------------------------------------------------------------------------- loss


def _chunk_loss(h: torch.Tensor, head: torch.Tensor, t_val: torch.Tensor, t_idx: torch.Tensor, temp: float) -> torch.Tensor:
    """Summed soft cross-entropy of student logits h @ head^T against the teacher's top-k (h [N, H])."""
    logp = F.log_softmax((h @ head.T) / temp, dim=-1)  # [N, V]
    p = F.softmax(t_val.float() / temp, dim=-1)  # [N, k]
    return -(p * logp.gather(1, t_idx.long())).sum()


def batch_loss(model: nn.Module, rows: list[Row], vals: list[torch.Tensor], idxs: list[torch.Tensor],
               temp: float, device: torch.device) -> tuple[torch.Tensor, int]:
    """Mean distillation loss over the loss positions of `rows` (right-padded into one batch)."""
    width = max(len(r.ids) for r in rows)
    ids = torch.zeros(len(rows), width, dtype=torch.long)  # [B, S]
    att = torch.zeros(len(rows), width, dtype=torch.long)
    for b, r in enumerate(rows):
        ids[b, : len(r.ids)] = torch.from_numpy(r.ids)
        att[b, : len(r.ids)] = 1
    hidden = model.model(input_ids=ids.to(device), attention_mask=att.to(device)).last_hidden_state  # [B, S, H]
    b_idx = torch.cat([torch.full((len(r.loss_at),), b, dtype=torch.long) for b, r in enumerate(rows)])
    s_idx = torch.cat([torch.from_numpy(r.loss_at) for r in rows])
    h = hidden[b_idx.to(device), s_idx.to(device)]  # [N, H]
    t_val, t_idx = torch.cat(vals).to(device), torch.cat(idxs).to(device)  # [N, k]
    head = model.get_output_embeddings().weight  # [V, H], frozen
    total = h.new_zeros(())
    for a in range(0, h.shape[0], HEAD_CHUNK):
        sl = slice(a, a + HEAD_CHUNK)
        total = total + grad_checkpoint(_chunk_loss, h[sl], head, t_val[sl], t_idx[sl], temp, use_reentrant=False)
    n = h.shape[0]
    return total * (temp**2) / n, n


def mean_loss(model: nn.Module, cache: TeacherCache, cfg: RecoveryConfig) -> float:
    """The distillation loss over every row of `cache`, without training (a yardstick)."""
    device = next(model.parameters()).device
    total, n = 0.0, 0
    with torch.no_grad():
        for i in range(len(cache.rows)):
            loss, k = batch_loss(model, [cache.rows[i]], [cache.values[i][:, : cfg.top_k]],
                                 [cache.indices[i][:, : cfg.top_k]], cfg.temperature, device)
            total, n = total + loss.item() * k, n + k
    return total / max(1, n)


def batches(cache: TeacherCache, batch_tokens: int, steps: int, seed: int) -> list[list[int]]:
    """Row indices per step: rows shuffled each pass, packed up to `batch_tokens` loss tokens."""
    rng = np.random.default_rng(seed)
    out: list[list[int]] = []
    cur: list[int] = []
    got = 0
    while len(out) < steps:
        for i in rng.permutation(len(cache.rows)):
            cur.append(int(i))
            got += len(cache.rows[i].loss_at)
            if got >= batch_tokens:
                out.append(cur)
                cur, got = [], 0
                if len(out) == steps:
                    break
    return out


def _lr(step: int, steps: int, peak: float) -> float:
    warm = max(1, steps // 20)
    if step < warm:
        return peak * (step + 1) / warm
    t = (step - warm) / max(1, steps - warm)
    return peak * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * t)))


# --------------------------------------------------------------------------- checkpoints


def fingerprint(model: nn.Module, cfg: RecoveryConfig, identity: dict[str, Any]) -> str:
    """What a checkpoint must match to be resumed: recipe, model, variant, config and shapes."""
    shapes = [(n, tuple(p.shape)) for n, p in model.named_parameters()]
    blob = json.dumps({"identity": identity, "config": cfg.to_json(), "shapes": shapes}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """Write atomically: a crash mid-write leaves the previous checkpoint."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def load_checkpoint(path: Path, expect: str, identity: dict[str, Any]) -> dict[str, Any]:
    """A checkpoint written for this very recovery, or one RecoveryError line."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:
        raise RecoveryError(f"--resume: {str(path)!r} is not a recovery checkpoint ({type(e).__name__}); delete it") from e
    if not isinstance(state, dict) or "fingerprint" not in state:
        raise RecoveryError(f"--resume: {str(path)!r} is not a recovery checkpoint; delete it or drop --resume")
    if state["fingerprint"] != expect and state.get("identity", {}) == identity:
        raise RecoveryError(f"--resume: checkpoint {str(path)!r} was written with another recovery config or model "
                            "shape for this variant; delete it or drop --resume")
    if state["fingerprint"] != expect:
        were = state.get("identity", {})
        raise RecoveryError(
            f"--resume: checkpoint {str(path)!r} belongs to another recovery (recipe {were.get('recipe')!r}, "
            f"model {were.get('model')!r}, variant {were.get('variant')!r}), not recipe {identity.get('recipe')!r}, "
            f"model {identity.get('model')!r}, variant {identity.get('variant')!r}; delete it or drop --resume"
        )
    return state


# --------------------------------------------------------------------------- the loop


def _micro(cache: TeacherCache, rows: list[int], cap: int) -> list[list[int]]:
    """Rows sorted by length and grouped so that each group pads to at most `cap` tokens."""
    groups: list[list[int]] = []
    for i in sorted(rows, key=lambda i: len(cache.rows[i].ids)):
        width = len(cache.rows[i].ids)  # the longest so far: rows come sorted
        if groups and width * (len(groups[-1]) + 1) <= cap:
            groups[-1].append(i)
        else:
            groups.append([i])
    return groups


def _step(student: nn.Module, cache: TeacherCache, rows: list[int], cfg: RecoveryConfig, opt: torch.optim.Optimizer,
          params: dict[str, nn.Parameter], keep: dict[str, torch.Tensor], device: torch.device) -> float:
    """One optimizer step on `rows` (in micro-batches); masked weights get no gradient and stay zero."""
    total = sum(len(cache.rows[i].loss_at) for i in rows)
    opt.zero_grad(set_to_none=True)
    seen = 0.0
    for group in _micro(cache, rows, MICRO_TOKENS):
        loss, n = batch_loss(student, [cache.rows[i] for i in group], [cache.values[i][:, : cfg.top_k] for i in group],
                             [cache.indices[i][:, : cfg.top_k] for i in group], cfg.temperature, device)
        (loss * (n / total)).backward()  # activations of one micro-batch at a time
        seen += loss.item() * n / total
    with torch.no_grad():
        for n, m in keep.items():
            params[n].grad.mul_(m)
        torch.nn.utils.clip_grad_norm_(list(params.values()), 1.0)
        opt.step()
        for n, m in keep.items():
            params[n].mul_(m)  # AdamW's moments can still move a masked weight: pin it
    return seen


def _report(cache: TeacherCache, plan: list[list[int]], losses: list[float], seconds: float, peak_mb: float,
            cfg: RecoveryConfig, resumed: int | None) -> RecoveryReport:
    data: dict[str, int] = {}
    for rows in plan:
        for i in rows:
            data[cache.rows[i].source] = data.get(cache.rows[i].source, 0) + len(cache.rows[i].loss_at)
    tenth = max(1, len(losses) // 10)
    return RecoveryReport(
        tokens=sum(data.values()), steps=len(plan), seconds=round(seconds, 3), data=data,
        loss_first=round(float(np.mean(losses[:tenth])), 4) if losses else float("nan"),
        loss_last=round(float(np.mean(losses[-tenth:])), 4) if losses else float("nan"),
        peak_rss_mb=round(peak_mb, 1), config=cfg.to_json(), resumed_from=resumed,
    )


def distill(
    student: nn.Module,
    cache: TeacherCache,
    cfg: RecoveryConfig,
    *,
    checkpoint: Path | None = None,
    resume: bool = False,
    identity: dict[str, Any] | None = None,
    progress: bool = True,
    desc: str = "recovery",
) -> RecoveryReport:
    """Distil `student` in place from the cached teacher; masks and shapes are kept.

    With `checkpoint`, the state is saved every `cfg.checkpoint_s` seconds and at the end;
    with `resume` too, an existing checkpoint of this very recovery is continued (a finished
    one is only loaded). Returns what was done; the student is left in eval mode on the CPU.
    """
    device = check_device(cfg.device)
    identity = identity or {}
    if cache.top_k < cfg.top_k:
        raise RecoveryError(f"the teacher cache holds top-{cache.top_k} logits; recovery asks for top-{cfg.top_k}")
    torch.manual_seed(cfg.seed)
    student.to(device)
    params = trainable(student, cfg.train_norms)
    keep = {n: m.to(device) for n, m in masks(params).items()}
    opt = torch.optim.AdamW(list(params.values()), lr=cfg.lr, weight_decay=0.0, betas=(0.9, 0.95))
    steps = cfg.total_steps
    plan = batches(cache, cfg.batch_tokens, steps, cfg.seed)
    fp = fingerprint(student, cfg, identity)
    start, losses, seconds_before, resumed = 0, [], 0.0, None
    if resume and checkpoint is not None and checkpoint.is_file():
        state = load_checkpoint(checkpoint, fp, identity)
        with torch.no_grad():
            for n, p in params.items():
                p.copy_(state["params"][n].to(device))
        if state.get("optimizer") is not None:
            opt.load_state_dict(state["optimizer"])
        start, losses, seconds_before = state["step"], list(state["losses"]), state["seconds"]
        resumed = start
        log.info("%s: resumed at step %d of %d from %s", desc, start, steps, checkpoint)

    def snapshot(step: int, spent: float, with_opt: bool) -> dict[str, Any]:
        return {"fingerprint": fp, "identity": identity, "step": step, "losses": losses, "seconds": spent,
                "params": {n: p.detach().cpu() for n, p in params.items()},
                "optimizer": opt.state_dict() if with_opt else None}

    t0 = last_save = time.perf_counter()
    student.train()
    bar = tqdm(range(start, steps), desc=desc, unit="step", disable=not progress, leave=False)
    with PeakRSS() as rss:
        for step in bar:
            for g in opt.param_groups:
                g["lr"] = _lr(step, steps, cfg.lr)
            losses.append(_step(student, cache, plan[step], cfg, opt, params, keep, device))
            bar.set_postfix(loss=f"{losses[-1]:.3f}")
            if checkpoint is not None and time.perf_counter() - last_save >= cfg.checkpoint_s and step + 1 < steps:
                save_checkpoint(checkpoint, snapshot(step + 1, seconds_before + time.perf_counter() - t0, True))
                last_save = time.perf_counter()
    student.eval()
    student.to("cpu")  # the exporter and the parity check run on the CPU
    seconds = seconds_before + time.perf_counter() - t0
    if checkpoint is not None:
        save_checkpoint(checkpoint, snapshot(steps, seconds, False))
    return _report(cache, plan, losses, seconds, rss.peak_mb, cfg, resumed)
