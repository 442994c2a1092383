"""Fixtures for the evaluation harness tests: a fake model, suite files and a tiny bundle (helpers in evalkit.py)."""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from pathlib import Path

import pytest
from evalkit import SMALL_SUITE, FakeModel, build_bundle, suite_text
from tokenizers import Tokenizer

from export.load import tiny_tokenizer


@pytest.fixture(scope="session")
def tok() -> Tokenizer:
    return tiny_tokenizer()


@pytest.fixture
def fake(tok: Tokenizer):
    """fake(pairs): a FakeModel preferring `text + continuation` for each (text, continuation) pair."""
    stop = tok.token_to_id("<|im_end|>")

    def make(pairs: Sequence[tuple[str, str]], end: bool = True) -> FakeModel:
        targets = []
        for text, cont in pairs:
            stripped = text.rstrip(" ")
            ids = tok.encode(stripped).ids + tok.encode(text[len(stripped):] + cont).ids
            targets.append(ids + ([stop] if end else []))
        return FakeModel(targets, tok.get_vocab_size())

    return make


@pytest.fixture
def write_suite(tmp_path: Path):
    def write(cases: list[dict], name: str = "suite.jsonl", header: dict | None = None) -> Path:
        p = tmp_path / name
        p.write_text(suite_text(cases, header), encoding="utf-8")
        return p

    return write


@pytest.fixture(scope="session")
def bundle_template(tmp_path_factory, tok) -> Path:
    return build_bundle(tmp_path_factory.mktemp("bundle") / "b", tok)


@pytest.fixture
def bundle(tmp_path: Path, bundle_template: Path) -> Path:
    """A fresh copy of the three-variant bigram bundle (dense, wanda-30, magnitude-70)."""
    return Path(shutil.copytree(bundle_template, tmp_path / "bundle"))


@pytest.fixture
def small_suite(write_suite) -> Path:
    return write_suite(SMALL_SUITE)
