"""The dense parent as teacher: the recovery stage of `edge-export`.

    stage = Teacher(recipe, tokenizer, chat_template, work=Path(".bundle.recovery"), identity=...)
    record = stage.recover(pruned, variant, dense_onnx)   # -> bundle.Recovery for the manifest
    stage.finish()                                        # the export succeeded: drop checkpoints

The dense variant is exported first; its ONNX graph (onnxruntime, about 5x faster than a
torch forward on this kind of CPU) writes the chat data, greedily answering the prompt
set, and computes the teacher's top-k logits on every row, once for all the variants
that recover. Both are saved in the work directory beside the bundle, with each variant's
training checkpoints, so `--resume` continues an interrupted export where it stopped.
The work directory is never inside the bundle, and is removed once the bundle is complete.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import shutil
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tokenizers import Tokenizer
from tqdm.auto import tqdm

from edge_runtime import bundle as B
from edge_runtime.engine.session import VariantSession
from edge_runtime.errors import RecoveryError
from export.corpus import calibration_windows
from export.distill_data import DEFAULT_PROMPTS, TeacherCache, chat_rows, load_prompts, prose_rows
from export.recipe import Recipe, VariantRecipe
from export.recover import RecoveryConfig, check_device, distill

log = logging.getLogger(__name__)

TEACHER_FILE = "teacher.pt"


def work_dir(out: Path) -> Path:
    """Where an export to `out` keeps its recovery data and checkpoints (a hidden sibling)."""
    return out.parent / f".{out.name}.recovery"


def _render(template: str | None) -> Any:
    from harness.scoring import _chat

    if template is None:
        return lambda prompt: prompt + "\n"
    return lambda prompt: _chat(template, prompt)


def check_recovery(recipe: Recipe) -> None:
    """Refuse, before any work, a recovery that cannot run: no GPU for cuda, a bad prompt file."""
    if recipe.recovers:
        check_device(recipe.recovery.device)
        load_prompts(Path(recipe.recovery.prompts) if recipe.recovery.prompts else DEFAULT_PROMPTS)


class Teacher:
    """Builds the teacher data once, on first use, and recovers variants from it."""

    def __init__(self, recipe: Recipe, tokenizer: Tokenizer, chat_template: str | None, work: Path,
                 identity: dict[str, Any], resume: bool = False, threads: int | None = None,
                 progress: bool = True) -> None:
        self.recipe, self.tokenizer, self.chat_template = recipe, tokenizer, chat_template
        self.work, self.identity, self.resume = work, identity, resume
        self.threads, self.progress = threads, progress
        self.shared: RecoveryConfig = recipe.recovery
        self.prompts_path = Path(self.shared.prompts) if self.shared.prompts else DEFAULT_PROMPTS
        self.prompts = load_prompts(self.prompts_path)  # fail on a bad file before any work
        self._cache: TeacherCache | None = None
        self.seconds = 0.0  # spent writing chat data and teacher logits
        if not resume and work.exists():
            shutil.rmtree(work)  # stale checkpoints of an earlier run: start afresh

    # ----------------------------------------------------------------- teacher data

    def _prose_rows_needed(self) -> int:
        want = max((v.recovery.tokens * (1 - v.recovery.chat_share) for v in self.recipe.variants if v.recovery),
                   default=0)
        return max(1, math.ceil(want / (self.shared.prose_len - 1)))

    def _fingerprint(self) -> str:
        blob = json.dumps({"identity": {k: self.identity.get(k) for k in ("model", "recipe")},
                           "shared": {k: getattr(self.shared, k) for k in ("top_k", "max_new_tokens", "prose_len")},
                           "prose_rows": self._prose_rows_needed(), "prompts": self.prompts}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def cache(self, dense_onnx: Path) -> TeacherCache:
        """The teacher cache: loaded from the work directory on resume, else built from `dense_onnx`."""
        if self._cache is not None:
            return self._cache
        path, fp = self.work / TEACHER_FILE, self._fingerprint()
        if self.resume and path.is_file():
            state = torch.load(path, map_location="cpu", weights_only=False)
            if state.get("fingerprint") != fp:
                were = state.get("identity", {})
                raise RecoveryError(
                    f"--resume: teacher data {str(path)!r} belongs to recipe {were.get('recipe')!r}, model "
                    f"{were.get('model')!r}, not recipe {self.identity.get('recipe')!r}, model "
                    f"{self.identity.get('model')!r}; delete {str(self.work)!r} or drop --resume")
            self._cache = TeacherCache.from_state(state["cache"])
            log.info("teacher data resumed from %s (%d loss tokens)", path, self._cache.loss_tokens)
            return self._cache
        t0 = time.perf_counter()
        session = VariantSession(dense_onnx, threads=self.threads)
        end = self.tokenizer.token_to_id("<|im_end|>")
        stops = {i for i in (end, self.tokenizer.token_to_id("<|endoftext|>")) if i is not None}
        decoder = session.decoder(2048)

        def generate(prompt_ids: list[int], max_new: int) -> list[int]:
            decoder.reserve(len(prompt_ids) + max_new)
            decoder.reset()
            row, out = decoder.prefill(prompt_ids), []  # row [V]
            for _ in range(max_new):
                nxt = int(np.argmax(row))
                if nxt in stops:
                    break
                out.append(nxt)
                row = decoder.step(nxt)
            return out

        bar = tqdm(total=len(self.prompts), desc="recovery: dense answers", unit="prompt", disable=not self.progress,
                   leave=False)
        with bar:
            chats = chat_rows(generate, self.tokenizer, _render(self.chat_template), self.prompts,
                              self.shared.max_new_tokens, end, bar.update)
        prose = prose_rows(calibration_windows(self.tokenizer, self._prose_rows_needed(), self.shared.prose_len))
        rows = chats + prose
        bar = tqdm(total=sum(len(r.loss_at) for r in rows), desc="recovery: teacher logits", unit="tok",
                   disable=not self.progress, leave=False)
        with bar:
            self._cache = TeacherCache.build(rows, session.logits, self.shared.top_k, bar.update)
        self.seconds = time.perf_counter() - t0
        self.work.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        torch.save({"fingerprint": fp, "identity": self.identity, "cache": self._cache.state()}, tmp)
        os.replace(tmp, path)
        log.info("teacher data: %d chat + %d prose rows, %d loss tokens in %.0f s",
                 len(chats), len(prose), self._cache.loss_tokens, self.seconds)
        return self._cache

    # ----------------------------------------------------------------- variants

    def recover(self, model: Any, v: VariantRecipe, dense_onnx: Path) -> B.Recovery:
        """Distil `model` (pruned, in place) for variant `v`; the manifest's record of it."""
        cfg = v.recovery
        if cfg is None:
            raise RecoveryError(f"variant {v.name!r} has no recovery configured")
        cache = self.cache(dense_onnx).select(cfg.tokens, cfg.chat_share, cfg.seed)
        report = distill(model, cache, cfg, checkpoint=self.work / f"{v.name}.pt", resume=self.resume,
                         identity={**self.identity, "variant": v.name}, progress=self.progress,
                         desc=f"{v.name}: recovery")
        log.info("%s: recovered on %d tokens in %.0f s (loss %.3f -> %.3f)", v.name, report.tokens,
                 report.seconds, report.loss_first, report.loss_last)
        return B.Recovery(
            tokens=report.tokens, steps=report.steps, seconds=report.seconds, data=report.data,
            extra={"method": "distillation", "teacher": "dense", "loss_first": report.loss_first,
                   "loss_last": report.loss_last, "peak_rss_mb": report.peak_rss_mb, "resumed_from": report.resumed_from,
                   "teacher_data_s": round(self.seconds, 1), "prompts": self.prompts_path.name, "config": report.config},
        )

    def finish(self) -> None:
        """The bundle is complete: its checkpoints are no longer needed."""
        shutil.rmtree(self.work, ignore_errors=True)


def inherited(parent: B.Recovery) -> B.Recovery:
    """A quantized copy's record: the recovery it inherited from its fp32 parent."""
    return replace(parent, extra={**parent.extra, "inherited": True})
