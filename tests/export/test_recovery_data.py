"""The recovery training data: never a suite prompt nor a near copy; bad files refused in one line."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from edge_runtime.errors import RecoveryError
from export.corpus import calibration_text
from export.distill_data import (
    DEFAULT_PROMPTS,
    Row,
    TeacherCache,
    load_prompts,
    mix,
    near_copies,
    normalize,
    read_text,
)
from harness.suite import load_suite
from harness.text import heldout_text


@pytest.fixture(scope="module")
def suite_prompts() -> list[str]:
    return [c.prompt for c in load_suite().cases]


def test_prompt_set_spans_the_harness() -> None:
    rows = [json.loads(x) for x in DEFAULT_PROMPTS.read_text(encoding="utf-8").splitlines()[1:]]
    kinds = {r["kind"] for r in rows}
    langs = {r["lang"] for r in rows}
    assert {"format", "fact", "problem"} <= kinds and {"en", "fr", "es", "de", "sw"} <= langs
    assert len(rows) >= 200 and len({r["prompt"] for r in rows}) == len(rows)


def test_no_suite_prompt_nor_near_copy_in_the_prompt_set(suite_prompts: list[str]) -> None:
    assert near_copies(load_prompts(), suite_prompts) == []


@pytest.mark.parametrize("plant", ["verbatim", "wrapped", "upper"])
def test_overlap_check_catches_a_planted_suite_prompt(suite_prompts: list[str], plant: str) -> None:
    target = next(p for p in suite_prompts if len(normalize(p)) >= 6)
    text = {"verbatim": target, "wrapped": f"  {target}  Please answer.", "upper": target.upper()}[plant]
    data = [*load_prompts(), text]
    assert near_copies(data, suite_prompts) == [(target, text)]


def test_overlap_check_catches_a_light_paraphrase() -> None:
    suite = ["List three fruits, one per line, with no other text."]
    assert near_copies(["List four fruits, one per line, with no other text!"], suite)
    assert not near_copies(["Name a river in Europe and its country."], suite)


def test_training_prose_is_not_the_heldout_text() -> None:
    cal, held = calibration_text(), heldout_text()
    lines = {x.strip() for x in held.splitlines() if len(x.strip()) > 60}
    shared = [x for x in cal.splitlines() if x.strip() in lines]
    assert len(shared) <= 2  # disjoint documents; one sentence is quoted in both


def test_empty_prompt_file_is_refused(tmp_path: Path) -> None:
    p = tmp_path / "p.jsonl"
    p.write_text("  \n", encoding="utf-8")
    with pytest.raises(RecoveryError, match=r"p\.jsonl' is empty"):
        load_prompts(p)


def test_non_utf8_file_is_refused(tmp_path: Path) -> None:
    p = tmp_path / "p.jsonl"
    p.write_bytes(b'{"prompt": "caf\xe9"}\n')
    with pytest.raises(RecoveryError, match=r"is not UTF-8 \(byte 15\); re-save it as UTF-8"):
        read_text(p, "prompt file")


def test_prompt_file_without_prompts_is_refused(tmp_path: Path) -> None:
    p = tmp_path / "p.jsonl"
    p.write_text('{"text": "x"}\n', encoding="utf-8")
    with pytest.raises(RecoveryError, match="has no"):
        load_prompts(p)


def _row(n: int, src: str) -> Row:
    return Row(np.arange(n + 1, dtype=np.int64), np.arange(n, dtype=np.int64), src)


def test_mix_follows_the_chat_share() -> None:
    rows = [_row(10, "chat")] * 3 + [_row(20, "prose")] * 3
    picked = [rows[i] for i in mix(rows, tokens=400, chat_share=0.25, seed=0)]
    got = {s: sum(len(r.loss_at) for r in picked if r.source == s) for s in ("chat", "prose")}
    assert 100 <= got["chat"] < 110 and 300 <= got["prose"] < 320


def test_mix_without_chat_rows_is_refused() -> None:
    with pytest.raises(RecoveryError, match="no chat rows"):
        mix([_row(20, "prose")], tokens=100, chat_share=0.5, seed=0)


def test_teacher_cache_keeps_the_top_k_at_loss_positions() -> None:
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(1, 6, 50)).astype(np.float32)
    row = Row(np.arange(6, dtype=np.int64), np.array([2, 4]), "chat")
    cache = TeacherCache.build([row], lambda ids: logits, top_k=5)
    assert cache.values[0].shape == (2, 5) and cache.loss_tokens == 2
    assert set(cache.indices[0][1].tolist()) == set(np.argsort(-logits[0, 4])[:5].tolist())
    again = TeacherCache.from_state(cache.state())
    assert np.array_equal(again.rows[0].loss_at, row.loss_at)
