"""Train the per-request difficulty model offline and ship it in the bundle.

    python -m harness.difficulty --bundle bundles/x [--variants dense-int8,sparsegpt-50] [--limit 20]

1. Outcomes: every case of `harness/data/difficulty.jsonl` (never scored by the gate; see
   `build_difficulty.py`) is scored on the dense variant and on each cheaper variant through
   the harness's own scorers and the device's onnxruntime session (`harness.evaluate.OrtModel`).
2. Labels: a case is *hard* (1) when dense gets it right and at least one cheaper variant
   gets it wrong: sending it to a cheaper variant would lose a request dense wins.
3. Features: `edge_runtime.control.difficulty.features` of the prompt text and its token count,
   exactly what the runtime computes before generation.
4. Model: a standardized, L2-regularized logistic regression fitted in numpy. Its AUC is
   measured by stratified k-fold cross-validation (each case scored by a model that never
   saw it), then the model is refitted on every case and written as plain arrays
   (`controller/difficulty.npz`) with the AUC in the manifest's `difficulty` entry.

The outcomes are kept (`eval/difficulty_outcomes.json`) so that refitting needs no scoring
(`--outcomes FILE`).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from edge_runtime.bundle import (
    DIFFICULTY_MODEL,
    Manifest,
    atomic_write_text,
    read_manifest,
    write_manifest,
)
from edge_runtime.control.difficulty import FEATURES, FEATURES_VERSION, DifficultyModel, features
from edge_runtime.control.tiers import tiered, variant_tiers
from edge_runtime.errors import EdgeError, EvalError
from harness.evaluate import OrtModel, open_bundle, reference_variant, stop_ids
from harness.scoring import PromptFormat, score_case
from harness.suite import Suite, load_suite

log = logging.getLogger(__name__)

CASES = Path(__file__).parent / "data" / "difficulty.jsonl"
OUTCOMES = "eval/difficulty_outcomes.json"


def case_outcomes(bundle_dir: str | Path, suite: Suite, variants: Sequence[str], threads: int | None = None,
                  limit: int | None = None) -> dict[str, Any]:
    """Per case: its features and, per variant, whether the variant got it right."""
    manifest, tok = open_bundle(bundle_dir)
    fmt, stops = PromptFormat(manifest.model.chat_template), stop_ids(manifest, tok)
    cases = suite.cases[:limit] if limit else suite.cases
    rows = [{"id": c.id, "features": features(c.prompt, len(tok.encode(fmt.render(c)).ids)).tolist(), "correct": {}}
            for c in cases]
    for name in variants:
        v = manifest.variant(name)
        model = OrtModel(Path(bundle_dir) / v.onnx, threads, name, v.extra.get("storage"))
        for row, case in zip(rows, cases, strict=True):
            row["correct"][name] = bool(score_case(model, tok, fmt, case, "sum", stops).correct)
        log.info("difficulty cases: %s right on %d of %d", name, sum(r["correct"][name] for r in rows), len(rows))
    return {"suite_version": suite.version, "features": list(FEATURES), "features_version": FEATURES_VERSION,
            "variants": list(variants), "cases": rows}


def menu(manifest: Manifest, dense: str) -> list[str]:
    """The cheaper variants a controller may choose: every one that clears some tier of a
    tiered bundle (a `critical` variant runs when the battery is low, and loses requests
    there), else every gated one."""
    if tiered(manifest):
        return [v.name for v, cleared in zip(manifest.variants, variant_tiers(manifest), strict=True)
                if cleared and v.name != dense]
    return [v.name for v in manifest.variants if v.passed and v.name != dense]


def labels(outcomes: dict[str, Any], dense: str) -> tuple[np.ndarray, np.ndarray]:
    """(X [N, F], y [N]): y = 1 where dense is right and some cheaper variant is wrong."""
    cheaper = [v for v in outcomes["variants"] if v != dense]
    if not cheaper:
        raise EvalError(f"outcomes hold only {dense!r}: score at least one cheaper variant to learn what it loses")
    x = np.array([r["features"] for r in outcomes["cases"]], dtype=np.float64)
    y = np.array([r["correct"][dense] and not all(r["correct"][v] for v in cheaper) for r in outcomes["cases"]],
                 dtype=np.float64)
    return x, y


def fit(x: np.ndarray, y: np.ndarray, l2: float = 1.0, steps: int = 2000, lr: float = 0.1) -> DifficultyModel:
    """Standardized logistic regression by gradient descent on the mean log-loss + l2/N * |w|^2."""
    mean, scale = x.mean(axis=0), x.std(axis=0)
    scale = np.where(scale > 1e-9, scale, 1.0)
    z = (x - mean) / scale  # [N, F]
    w, b, n = np.zeros(z.shape[1]), float(np.log((y.mean() + 1e-3) / (1 - y.mean() + 1e-3))), len(y)
    for _ in range(steps):
        p = 1.0 / (1.0 + np.exp(-(z @ w + b)))
        w -= lr * (z.T @ (p - y) / n + 2 * l2 / n * w)
        b -= lr * float(np.mean(p - y))
    return DifficultyModel(mean, scale, w, b)


def auc(scores: np.ndarray, y: np.ndarray) -> float:
    """ROC AUC by the rank statistic (ties count one half); NaN when one class is absent."""
    pos, neg = scores[y == 1], scores[y == 0]
    if not len(pos) or not len(neg):
        return float("nan")
    greater = (pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()
    return float(greater / (len(pos) * len(neg)))


def cross_validated_auc(x: np.ndarray, y: np.ndarray, folds: int = 5, seed: int = 0, l2: float = 1.0) -> float:
    """AUC of out-of-fold predictions: stratified folds, each case scored by a model fitted without it."""
    rng = np.random.default_rng(seed)
    fold = np.empty(len(y), dtype=int)
    for cls in (0, 1):
        idx = rng.permutation(np.flatnonzero(y == cls))
        fold[idx] = np.arange(len(idx)) % folds
    pred = np.empty(len(y))
    for k in range(folds):
        test = fold == k
        if test.all() or not test.any():
            continue
        pred[test] = fit(x[~test], y[~test], l2).predict(x[test])
    return auc(pred, y)


def train(bundle_dir: str | Path, outcomes: dict[str, Any], folds: int = 5, l2: float = 1.0) -> dict[str, Any]:
    """Fit on `outcomes`, write the model and the manifest entry into the bundle; the entry."""
    manifest = read_manifest(bundle_dir)
    if outcomes.get("features") != list(FEATURES) or outcomes.get("features_version") != FEATURES_VERSION:
        raise EvalError(f"the outcomes were computed with features {outcomes.get('features')} (version "
                        f"{outcomes.get('features_version')}), the runtime now computes {list(FEATURES)} (version "
                        f"{FEATURES_VERSION}): score the cases again (drop --outcomes)")
    dense = reference_variant(manifest).name
    x, y = labels(outcomes, dense)
    if y.sum() < folds or (1 - y).sum() < folds:
        raise EvalError(f"{int(y.sum())} hard and {int((1 - y).sum())} easy cases: each class needs at least {folds} "
                        "for a cross-validated AUC; score more cases or more cheaper variants")
    score = cross_validated_auc(x, y, folds, l2=l2)
    model = fit(x, y, l2)
    model.save(Path(bundle_dir) / DIFFICULTY_MODEL)
    entry = {"model": DIFFICULTY_MODEL, "features": list(FEATURES), "features_version": FEATURES_VERSION,
             "auc": round(score, 4), "cases": int(len(y)),
             "hard_cases": int(y.sum()), "auc_method": f"stratified {folds}-fold cross-validation",
             "label": "dense right and some cheaper variant wrong", "variants": outcomes["variants"],
             "case_set_version": outcomes.get("suite_version", "")}
    write_manifest(bundle_dir, replace(read_manifest(bundle_dir), difficulty=entry))
    return entry


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m harness.difficulty", description=__doc__.splitlines()[0])
    ap.add_argument("--bundle", type=Path, required=True, help="bundle directory (the model and manifest go here)")
    ap.add_argument("--variants", help="comma-separated cheaper variants to compare with dense (default: the controller's menu, "
                         "every variant that clears a tier, else every gated one)")
    ap.add_argument("--cases", type=Path, default=CASES, help="case set (never the gate's suite)")
    ap.add_argument("--limit", type=int, default=None, help="first N cases only (smoke runs)")
    ap.add_argument("--threads", type=int, default=None, help="onnxruntime threads")
    ap.add_argument("--outcomes", type=Path, default=None, help="reuse outcomes written by an earlier run")
    ap.add_argument("--folds", type=int, default=5, help="cross-validation folds for the AUC")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        if args.outcomes is not None:
            outcomes = json.loads(args.outcomes.read_text(encoding="utf-8"))
        else:
            manifest = read_manifest(args.bundle)
            dense = reference_variant(manifest).name
            cheaper = [v.strip() for v in args.variants.split(",")] if args.variants else menu(manifest, dense)
            outcomes = case_outcomes(args.bundle, load_suite(args.cases), [dense, *cheaper], args.threads, args.limit)
            atomic_write_text(args.bundle / OUTCOMES, json.dumps(outcomes) + "\n")  # makes eval/ if needed
        entry = train(args.bundle, outcomes, args.folds)
    except (EdgeError, OSError, json.JSONDecodeError) as e:
        print(f"harness.difficulty: error: {e}", file=sys.stderr)
        return 2
    print(json.dumps(entry, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
