"""Recovery on the real SmolLM2-135M (slow: `make test-slow`): a short distillation helps structured-25."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch

from export.calibrate import collect_stats
from export.corpus import calibration_windows
from export.onnx_export import SparseStorage, build, save
from export.perplexity import perplexity
from export.prune import PruneConfig, prune_model, recipe_needs
from export.recipe import Recipe
from export.recover import mean_loss
from export.teacher import Teacher
from harness.text import heldout_windows


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_structured_25_recovers_on_the_real_model(smollm2, tmp_path: Path) -> None:
    """8k loss tokens (a few minutes on 2 cores): held-out perplexity and the distillation loss fall,
    shapes stay, peak memory stays under 3 GB."""
    lm = smollm2
    dense_onnx = tmp_path / "dense" / "model.onnx"
    save(build(lm.model, SparseStorage.DENSE), dense_onnx)
    recipe = Recipe.from_dict({
        "name": "slow-recovery", "recovery": {"tokens": 8192, "max_new_tokens": 96},
        "variant": [{"name": "dense", "method": "dense"},
                    {"name": "structured-25", "method": "structured", "sparsity": 0.25, "recovery": {}}],
    })
    cfg = PruneConfig.from_dict({"method": "structured", "level": 0.25, "samples": 32, "seq_len": 512})
    calib = calibration_windows(lm.tokenizer, 32, 512)
    student = copy.deepcopy(lm.model)
    prune_model(student, cfg, calib, stats=collect_stats(lm.model, calib, recipe_needs([cfg]), progress=False),
                progress=False)
    shapes = {n: p.shape for n, p in student.named_parameters()}
    ev = torch.as_tensor(heldout_windows(lm.tokenizer, 8, 512))
    before = perplexity(student, ev)
    teacher = Teacher(recipe, lm.tokenizer, lm.chat_template, tmp_path / "work", {"recipe": "slow", "model": lm.source},
                      progress=False)
    probe = teacher.cache(dense_onnx).select(2048, 0.5, seed=99)
    loss_before = mean_loss(student, probe, recipe.recovery)
    record = teacher.recover(student, recipe.variant("structured-25"), dense_onnx)
    assert record.tokens >= 8192 and record.extra["peak_rss_mb"] < 3072
    assert mean_loss(student, probe, recipe.recovery) < loss_before
    assert perplexity(student, ev) < before
    assert {n: p.shape for n, p in student.named_parameters()} == shapes
