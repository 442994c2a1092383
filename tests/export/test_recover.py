"""Recovery on the tiny model: the loss falls, masks and shapes hold, resume continues, bad input is refused."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import torch

import export.recover as R
from edge_runtime.errors import RecoveryError
from export.corpus import calibration_text
from export.distill_data import TeacherCache, prose_rows
from export.load import tiny_model
from export.prune import PruneConfig, prune_model
from export.recover import RecoveryConfig, check_device, distill, mean_loss
from harness.text import token_windows

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def lm():
    return tiny_model()


@pytest.fixture(scope="module")
def cache(lm) -> TeacherCache:
    """Teacher: the dense tiny model, sharpened so that it has something to teach."""
    teacher = lm.model

    def logits(ids: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return (teacher(torch.from_numpy(ids)).logits * 8.0).numpy()

    return TeacherCache.build(prose_rows(_windows(lm)[:12]), logits, top_k=16)


def _windows(lm) -> np.ndarray:
    return token_windows(lm.tokenizer, calibration_text()[:20_000], 16, 48, "calibration text")


def _student(lm, method: str, level: float):
    student = copy.deepcopy(lm.model)
    calib = _windows(lm)[12:]
    prune_model(student, PruneConfig.from_dict({"method": method, "level": level, "samples": 4, "seq_len": 48}),
                calib, progress=False)
    return student


CFG = RecoveryConfig(tokens=1600, batch_tokens=200, lr=3e-3, top_k=16, checkpoint_s=0.0)


def test_loss_falls(lm, cache) -> None:
    student = _student(lm, "structured", 0.3)
    before = mean_loss(student, cache, CFG)
    report = distill(student, cache, CFG, progress=False)
    assert report.steps == 8 and report.tokens >= 1600 and report.data == {"prose": report.tokens}
    assert mean_loss(student, cache, CFG) < before - 0.05


def test_unstructured_masks_stay_exactly(lm, cache) -> None:
    student = _student(lm, "magnitude", 0.5)
    before = {n: (p == 0).clone() for n, p in student.named_parameters()}
    distill(student, cache, CFG, progress=False)
    for n, p in student.named_parameters():
        assert torch.equal(p == 0, before[n]), n


def test_structured_shapes_stay_and_frozen_head(lm, cache) -> None:
    student = _student(lm, "structured", 0.3)
    shapes = {n: p.shape for n, p in student.named_parameters()}
    head = student.get_output_embeddings().weight.clone()
    distill(student, cache, CFG, progress=False)
    assert {n: p.shape for n, p in student.named_parameters()} == shapes
    assert torch.equal(student.get_output_embeddings().weight, head)


def test_resume_continues_from_the_checkpoint(lm, cache, tmp_path: Path, monkeypatch) -> None:
    whole = _student(lm, "structured", 0.3)
    distill(whole, cache, CFG, progress=False)

    student = _student(lm, "structured", 0.3)
    real, calls = R.batch_loss, {"n": 0}

    def dies_at_step_5(*args, **kw):
        calls["n"] += 1
        if calls["n"] == 6:
            raise KeyboardInterrupt
        return real(*args, **kw)

    ckpt = tmp_path / "v.pt"
    monkeypatch.setattr(R, "batch_loss", dies_at_step_5)
    with pytest.raises(KeyboardInterrupt):
        distill(student, cache, CFG, checkpoint=ckpt, identity={"variant": "v"}, progress=False)
    monkeypatch.setattr(R, "batch_loss", real)
    fresh = _student(lm, "structured", 0.3)
    report = distill(fresh, cache, CFG, checkpoint=ckpt, resume=True, identity={"variant": "v"}, progress=False)
    assert report.resumed_from == 5
    for (n, a), (_, b) in zip(whole.named_parameters(), fresh.named_parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=n)


def test_resume_refuses_a_foreign_checkpoint(lm, cache, tmp_path: Path) -> None:
    ckpt = tmp_path / "v.pt"
    cfg = RecoveryConfig(tokens=200, batch_tokens=200, top_k=16)
    distill(_student(lm, "structured", 0.3), cache, cfg, checkpoint=ckpt,
            identity={"recipe": "a", "model": "tiny", "variant": "v"}, progress=False)
    with pytest.raises(RecoveryError, match=r"belongs to another recovery \(recipe 'a'.*not recipe 'b'"):
        distill(_student(lm, "structured", 0.3), cache, cfg, checkpoint=ckpt, resume=True,
                identity={"recipe": "b", "model": "tiny", "variant": "v"}, progress=False)


def test_resume_refuses_a_checkpoint_of_another_config(lm, cache, tmp_path: Path) -> None:
    ckpt = tmp_path / "v.pt"
    who = {"recipe": "a", "model": "tiny", "variant": "v"}
    distill(_student(lm, "structured", 0.3), cache, RecoveryConfig(tokens=200, batch_tokens=200, top_k=16),
            checkpoint=ckpt, identity=who, progress=False)
    with pytest.raises(RecoveryError, match="was written with another recovery config"):
        distill(_student(lm, "structured", 0.3), cache, RecoveryConfig(tokens=400, batch_tokens=200, top_k=16),
                checkpoint=ckpt, resume=True, identity=who, progress=False)


def test_resume_refuses_a_file_that_is_no_checkpoint(lm, cache, tmp_path: Path) -> None:
    ckpt = tmp_path / "v.pt"
    ckpt.write_text("not a checkpoint")
    with pytest.raises(RecoveryError, match="is not a recovery checkpoint"):
        distill(_student(lm, "structured", 0.3), cache, RecoveryConfig(tokens=200, top_k=16), checkpoint=ckpt,
                resume=True, progress=False)


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is present")
def test_cuda_without_a_gpu_is_one_clear_error() -> None:
    with pytest.raises(RecoveryError, match="^--device cuda: torch sees no CUDA GPU on this machine; use --device cpu$"):
        check_device("cuda")


@pytest.mark.parametrize(
    ("table", "match"),
    [
        ({"tokens": 0}, "recovery tokens must be a positive integer, got 0"),
        ({"steps": -3}, "recovery steps must be a positive integer, got -3"),
        ({"tokens": 1.5}, "recovery.tokens must be an integer, got float 1.5"),
        ({"lr": 0}, r"recovery lr must be in \(0, 1\), got 0"),
        ({"tokenz": 1}, "recovery: unknown key 'tokenz'; known keys: tokens, steps"),
        ({"device": "tpu"}, "recovery device must be one of"),
    ],
)
def test_bad_config_is_refused_by_name(table: dict, match: str) -> None:
    with pytest.raises(RecoveryError, match=match):
        RecoveryConfig.from_dict(table)
