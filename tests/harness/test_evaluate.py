"""The harness end to end on a tiny bundle of ONNX bigram graphs: ORT sessions, the gate,
the atomic manifest update, the report, and edge-eval's command line."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from evalkit import BUNDLE_VARIANTS, SMALL_SUITE, build_bundle, suite_text

from edge_runtime.bundle import read_manifest
from edge_runtime.errors import BundleError, EvalError, VariantError
from harness.cli import main
from harness.evaluate import (
    EvalConfig,
    OrtModel,
    apply_to_manifest,
    evaluate_bundle,
    floors_from_dense,
)
from harness.floors import Floors, set_floors
from harness.report import (
    REPORT_FILES,
    cheapest_passing,
    report_dict,
    report_markdown,
    slice_drops,
    write_report,
)
from harness.scoring import greedy
from harness.suite import load_suite

FAST = EvalConfig(windows=3, window=64, latency_prompt=8, latency_new=4, latency_repeats=1)


# --------------------------------------------------------------------------- the ORT adapter


def test_ort_model_reads_per_layer_kv_heads_and_runs(bundle, tok):
    m = OrtModel(bundle / "variants/dense/model.onnx", threads=1, name="dense")
    assert m.past == [(2, 4), (1, 4)]
    ids = np.asarray([[5, 6, 7], [8, 9, 10]], dtype=np.int64)
    assert m.logits(ids).shape == (2, 3, tok.get_vocab_size())


def test_ort_kv_generation_matches_recomputation(bundle):
    m = OrtModel(bundle / "variants/wanda-30/model.onnx", threads=1)
    prompt = [40, 41, 42]
    assert list(m.generate(prompt, 6, set())) == list(greedy(m, prompt, 6, set()))


def test_ort_right_padding_leaves_earlier_logits_alone(bundle):
    m = OrtModel(bundle / "variants/dense/model.onnx", threads=1)
    one = m.logits(np.asarray([[5, 6, 7]]))
    padded = m.logits(np.asarray([[5, 6, 7, 0, 0], [1, 2, 3, 4, 5]]))
    np.testing.assert_allclose(padded[0, :3], one[0])


def test_unloadable_variant_is_one_clear_error(tmp_path):
    bad = tmp_path / "model.onnx"
    bad.write_bytes(b"not an onnx graph")
    with pytest.raises(VariantError, match=r"variant 'wanda-50': onnxruntime cannot load .* re-export it"):
        OrtModel(bad, name="wanda-50")


# --------------------------------------------------------------------------- evaluate, gate, manifest


@pytest.fixture
def dense_floors(bundle, small_suite) -> Floors:
    floors, _ = floors_from_dense(bundle, load_suite(small_suite), FAST)
    return floors


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory, bundle_template):
    """One gated evaluation of the template bundle, shared by the tests that only read it."""
    path = tmp_path_factory.mktemp("suite") / "suite.jsonl"
    path.write_text(suite_text(SMALL_SUITE))
    suite = load_suite(path)
    floors, _ = floors_from_dense(bundle_template, suite, FAST)
    return evaluate_bundle(bundle_template, suite, floors, FAST)


def test_floors_come_from_the_dense_variant_only(bundle, small_suite):
    floors, result = floors_from_dense(bundle, load_suite(small_suite), FAST)
    assert [v.name for v in result.variants] == ["dense"]
    assert floors.suite_version == "1.0.0" and floors.model == "tiny"
    assert floors.dense["common"] == result.variant("dense").scores["common"]


def test_evaluate_scores_and_gates_every_variant(evaluated):
    result = evaluated
    assert [v.name for v in result.variants] == ["dense", "wanda-30", "magnitude-70"]
    dense, mid, broken = result.variants
    assert dense.scores["ppl_retention"] == 1.0 and dense.scores["latency"] == 1.0 and dense.scores["size"] == 1.0
    assert dense.gate.status == "pass"
    assert mid.perplexity > dense.perplexity
    assert broken.scores["ppl_retention"] < 0.5
    assert broken.gate.status == "fail" and "ppl_retention" in broken.gate.failed
    assert result.latency_source == "manifest"  # every variant has a measured cost
    assert broken.scores["latency"] == pytest.approx((1.0 * 8 + 15.0 * 4) / (2.0 * 8 + 30.0 * 4), abs=1e-4)
    assert set(dense.scores) >= {"common", "edge", "adversarial", "multilingual", "format", "instruction"}
    assert len(dense.cases) == 8


def test_latency_is_timed_when_the_manifest_has_no_cost(tmp_path, tok, small_suite):
    root = build_bundle(tmp_path / "nocost", tok, costs=False)
    result = evaluate_bundle(root, load_suite(small_suite), None, FAST)
    assert result.latency_source == "edge-eval"
    assert result.variant("dense").scores["latency"] == 1.0
    assert all(v.latency_ms > 0 for v in result.variants)
    assert all(v.gate.status == "pending" for v in result.variants)


def test_manifest_update_writes_quality_and_gate_and_keeps_the_rest(bundle, small_suite, dense_floors):
    before = read_manifest(bundle)
    result = evaluate_bundle(bundle, load_suite(small_suite), dense_floors, FAST)
    apply_to_manifest(bundle, result)
    after = read_manifest(bundle)
    assert after.extra == {"note": "kept", "tiers": ["normal", "saver", "critical"]}  # floors declare tiers
    for v in after.variants:
        ev = result.variant(v.name)
        assert v.gate.extra["tiers"] == ev.gate.extra["tiers"]  # the tiers each variant clears
        assert v.quality.scores == ev.scores
        assert v.quality.perplexity == pytest.approx(ev.perplexity)
        assert v.quality.extra["suite_version"] == "1.0.0"
        assert v.gate.status == ev.gate.status and v.gate.failed == ev.gate.failed
        assert v.cost == before.variant(v.name).cost and v.file_bytes == before.variant(v.name).file_bytes
    assert after.variant("magnitude-70").passed is False
    assert not [p for p in bundle.iterdir() if p.name.startswith(".")]  # no temp files left


def test_broken_variant_fails_before_anything_is_written(bundle, small_suite, dense_floors):
    (bundle / "variants/wanda-30/model.onnx").write_bytes(b"garbage")
    manifest = (bundle / "manifest.json").read_bytes()
    with pytest.raises(VariantError, match="variant 'wanda-30': onnxruntime cannot load"):
        evaluate_bundle(bundle, load_suite(small_suite), dense_floors, FAST)
    assert main(["--bundle", str(bundle), "--suite", str(small_suite), "--windows", "2", "--quiet"]) == 2
    assert (bundle / "manifest.json").read_bytes() == manifest
    assert not (bundle / "eval").exists()


def test_missing_variant_file(bundle, small_suite):
    (bundle / "variants/wanda-30/model.onnx").unlink()
    with pytest.raises(VariantError, match=r"variant 'wanda-30': .*model.onnx' is missing; re-export"):
        evaluate_bundle(bundle, load_suite(small_suite), None, FAST)


def test_bundle_without_dense_variant(tmp_path, tok, small_suite):
    root = build_bundle(tmp_path / "nodense", tok, variants=BUNDLE_VARIANTS[1:])
    with pytest.raises(EvalError, match=r"the bundle has no dense unquantized variant \(variants: \['wanda-30', 'magnitude-70'\]\)"):
        evaluate_bundle(root, load_suite(small_suite), None, FAST)


def test_not_a_bundle(tmp_path, small_suite):
    with pytest.raises(BundleError, match="does not exist; build one with edge-export"):
        evaluate_bundle(tmp_path / "nope", load_suite(small_suite), None, FAST)


def test_floors_from_another_suite_version_are_refused(bundle, small_suite, write_suite, dense_floors):
    header = {"suite": "edge-eval", "version": "1.1.0",
              "changelog": [{"version": "1.0.0", "changes": "a"}, {"version": "1.1.0", "changes": "b"}]}
    newer = load_suite(write_suite(SMALL_SUITE, "newer.jsonl", header))
    with pytest.raises(EvalError, match=r"floors were set on suite '1.0.0' but the suite is '1.1.0'; re-run edge-eval --set-floors"):
        evaluate_bundle(bundle, newer, dense_floors, FAST)


def test_floors_for_a_dimension_the_suite_cannot_score(bundle, write_suite):
    suite = load_suite(write_suite([{"id": "c", "slice": "common", "type": "choice", "prompt": "The", "options": [" a", " b"], "answer": 0}]))
    floors = set_floors({"common": 0.5, "edge": 0.5}, {"common": 1, "edge": 1}, {}, suite_version="1.0.0")
    with pytest.raises(EvalError, match=r"floors for \['edge'\] but the suite has no cases for them"):
        evaluate_bundle(bundle, suite, floors, FAST)


def test_limit_refused_when_setting_floors(bundle, small_suite):
    with pytest.raises(EvalError, match="floors need the full suite: drop --limit"):
        floors_from_dense(bundle, load_suite(small_suite), EvalConfig(limit=1))


# --------------------------------------------------------------------------- report


def test_report_files_and_contents(tmp_path, evaluated):
    result = evaluated
    out = write_report(result, tmp_path / "report")
    assert sorted(p.name for p in out.iterdir()) == sorted(REPORT_FILES)
    assert (out / "quality_vs_cost.png").read_bytes()[:4] == b"\x89PNG"
    data = json.loads((out / "report.json").read_text())
    v0 = data["variants"][0]
    assert {"name", "method", "sparsity", "quantization", "onnx", "file_bytes", "quality", "cost", "gate", "eval"} <= set(v0)
    assert len(v0["eval"]["cases"]) == 8 and data["suite"]["version"] == "1.0.0"
    assert set(data["drops"]) == {"wanda-30", "magnitude-70"}
    assert data["cheapest_passing"] == cheapest_passing(result)
    md = (out / "report.md").read_text()
    assert "| variant | method |" in md and "## Drop per slice from dense" in md and "*floor*" in md
    assert "fail (" in md  # magnitude-70 fails and says which dimensions


def test_drops_count_paired_losses(evaluated):
    result = evaluated
    d = slice_drops(result)["magnitude-70"]["common"]
    dense = {c.id: c.correct for c in result.variant("dense").cases}
    lost = sum(1 for c in result.variant("magnitude-70").cases if c.slice == "common" and dense[c.id] and not c.correct)
    assert d["lost"] == lost and d["n"] == 3


def test_report_refuses_a_directory_with_other_files(tmp_path, evaluated):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "thesis.tex").write_text("precious")
    with pytest.raises(EvalError, match=r"holds other files \['thesis.tex'\]; pass a new or empty directory"):
        write_report(evaluated, tmp_path / "mine")
    ungated = replace(evaluated, floors=None)
    assert "gate left pending" in report_markdown(ungated) and report_dict(ungated, cases=False)["floors"] is None


# --------------------------------------------------------------------------- command line


def test_cli_set_floors_then_evaluate(bundle, small_suite, capsys):
    args = ["--bundle", str(bundle), "--suite", str(small_suite), "--windows", "2", "--quiet"]
    assert main([*args, "--set-floors"]) == 0
    floors = Floors.from_toml(bundle / "floors.toml")
    assert floors.version == 1 and "common" in floors.floors
    assert read_manifest(bundle).variant("dense").gate.status == "pending"  # setting floors gates nothing
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "cheapest variant passing every floor:" in out
    m = read_manifest(bundle)
    assert m.variant("dense").gate.status == "pass"
    assert m.variant("magnitude-70").gate.status == "fail"
    assert (bundle / "eval" / "report.md").is_file()
    # whole-system gating from the scores just written, per resource profile
    capsys.readouterr()
    mix = bundle.parent / "mix.json"
    mix.write_text(json.dumps({"plugged": {"dense": 1.0}, "low-battery": {"magnitude-70": 1.0}}))
    code = main(["--bundle", str(bundle), "--mix", str(mix)])
    out = json.loads(capsys.readouterr().out)
    assert out["plugged"]["gate"]["status"] == "pass"
    assert set(out["plugged"]["delivered"]) == {"common", "edge", "adversarial", "multilingual"}
    assert code == (0 if out["low-battery"]["gate"]["status"] == "pass" else 1)
    # the same through edge-sim replays of real profiles with the rule controller
    code = main(["--bundle", str(bundle), "--profiles", "desk-plugged,phone-low-battery", "--controller", "rule"])
    out = json.loads(capsys.readouterr().out)
    # the floors declare tiers: each profile also gets one entry per tier it ran under, held to that tier
    assert {k.partition("@")[0] for k in out} == {"desk-plugged", "phone-low-battery"}
    assert {"desk-plugged", "phone-low-battery"} <= set(out)
    for name, prof in out.items():
        assert prof["tier"] == (name.partition("@")[2] or None)
        assert sum(prof["mix"].values()) == pytest.approx(1.0, abs=1e-3)
        assert prof["gate"]["status"] in ("pass", "fail")
    assert code == (0 if all(p["gate"]["status"] == "pass" for p in out.values()) else 1)
    assert main([*args, "--set-floors"]) == 0
    assert Floors.from_toml(bundle / "floors.toml").version == 2


def test_cli_set_floors_and_gate_scores_dense_once(bundle, small_suite, capsys, monkeypatch):
    import harness.evaluate as E

    scored: list[str] = []
    real = E.score_variant
    monkeypatch.setattr(E, "score_variant", lambda *a, **k: (scored.append(k["name"]), real(*a, **k))[1])
    args = ["--bundle", str(bundle), "--suite", str(small_suite), "--windows", "2", "--quiet"]
    assert main([*args, "--set-floors", "--and-gate"]) == 0
    assert scored == ["dense", "wanda-30", "magnitude-70"]  # dense set the floors and was gated on them too
    assert Floors.from_toml(bundle / "floors.toml").version == 1
    m = read_manifest(bundle)
    assert m.variant("dense").gate.status == "pass" and m.variant("magnitude-70").gate.status == "fail"
    assert (bundle / "eval" / "report.md").is_file() and "cheapest variant passing every floor:" in capsys.readouterr().out
    assert main([*args, "--and-gate"]) == 2
    assert "--and-gate goes with --set-floors" in capsys.readouterr().err


def test_cli_errors_are_one_line_and_exit_2(bundle, write_suite, capsys):
    bad = write_suite([], "bad.jsonl")
    bad.write_text(bad.read_text() + '{"id": "x", "slice": "common"}\n')
    assert main(["--bundle", str(bundle), "--suite", str(bad), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("edge-eval: error: ") and "bad.jsonl:2: missing field 'type'" in err
    assert "\n" not in err


def test_cli_missing_floors_file_named_explicitly(bundle, small_suite, capsys):
    assert main(["--bundle", str(bundle), "--suite", str(small_suite), "--floors", str(bundle / "x.toml")]) == 2
    assert "x.toml' does not exist; write one with edge-eval" in capsys.readouterr().err


def test_cli_missing_bundle_is_the_only_message(tmp_path, capsys):
    assert main(["--bundle", str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"edge-eval: error: bundle directory '{tmp_path / 'nope'}' does not exist; build one with edge-export"


def test_cli_mix_needs_scores(tmp_path, tok):
    root = build_bundle(tmp_path / "fresh", tok)
    mix = tmp_path / "mix.json"
    mix.write_text(json.dumps({"p": {"dense": 1}}))
    assert main(["--bundle", str(root), "--mix", str(mix)]) == 2


# --------------------------------------------------------------------------- a bundle from edge-export


def test_harness_runs_on_a_bundle_exported_by_edge_export(tiny_bundle, tmp_path, small_suite):
    """The real exporter's graphs (GroupQueryAttention, in-place KV cache, int8) through the harness."""
    root = Path(shutil.copytree(tiny_bundle, tmp_path / "tiny"))
    suite = load_suite(small_suite)
    floors, _ = floors_from_dense(root, suite, FAST)
    result = evaluate_bundle(root, suite, floors, FAST)
    assert [v.name for v in result.variants] == ["dense", "dense-int8"]
    assert result.variant("dense").gate.status == "pass"
    int8 = result.variant("dense-int8")
    assert 0 < int8.scores["ppl_retention"] <= 1 and int8.scores["size"] < 1
    m = OrtModel(root / "variants/dense/model.onnx", threads=1)
    prompt = [5, 6, 7, 8]
    assert list(m.generate(prompt, 5, set())) == list(greedy(m, prompt, 5, set()))
    apply_to_manifest(root, result)
    assert read_manifest(root).variant("dense-int8").gate.status == int8.gate.status


def test_reuse_takes_the_dense_run_instead_of_scoring_it_again(bundle, small_suite, monkeypatch):
    suite = load_suite(small_suite)
    floors, dense_run = floors_from_dense(bundle, suite, FAST)
    scored: list[str] = []
    import harness.evaluate as E

    real = E.score_variant
    monkeypatch.setattr(E, "score_variant", lambda *a, **k: (scored.append(k["name"]), real(*a, **k))[1])
    result = evaluate_bundle(bundle, suite, floors, FAST, reuse=dense_run)
    assert scored == ["wanda-30", "magnitude-70"]
    assert result.variant("dense").scores == dense_run.variant("dense").scores
    with pytest.raises(EvalError, match="reuse needs an evaluation with the same suite version and config"):
        evaluate_bundle(bundle, suite, floors, replace(FAST, windows=2), reuse=dense_run)


def test_gate_system_counts_failed_requests_as_zero_quality(evaluated):
    from harness.evaluate import FAILED, gate_system

    m = evaluated.manifest
    for ev in evaluated.variants:
        m = m.replace_variant(replace(m.variant(ev.name), quality=replace(m.variant(ev.name).quality, scores=ev.scores)))
    full = gate_system(m, {"p": {"dense": 1.0}}, evaluated.floors)["p"]
    half = gate_system(m, {"p": {"dense": 0.5, FAILED: 0.5}}, evaluated.floors)["p"]
    for s, q in full["delivered"].items():
        assert half["delivered"][s] == pytest.approx(q / 2, abs=1e-4)
    assert full["gate"]["status"] == "pass"


def test_report_round_trips_through_report_json(tmp_path, evaluated):
    from harness.report import load_report

    out = write_report(evaluated, tmp_path / "r")
    # report.json names the suite and floors by path; here they live in pytest temp dirs that still exist
    back = load_report(out / "report.json")
    assert [v.name for v in back.variants] == [v.name for v in evaluated.variants]
    assert back.variant("magnitude-70").cases == evaluated.variant("magnitude-70").cases
    assert report_markdown(back) == report_markdown(evaluated)
    (tmp_path / "bad.json").write_text("{}")
    with pytest.raises(EvalError, match="not a report.json with per-case results"):
        load_report(tmp_path / "bad.json")


def test_cli_limit_is_a_smoke_run_that_leaves_the_manifest_alone(bundle, small_suite, capsys):
    before = (bundle / "manifest.json").read_bytes()
    assert main(["--bundle", str(bundle), "--suite", str(small_suite), "--windows", "1", "--limit", "1", "--quiet"]) == 0
    assert (bundle / "manifest.json").read_bytes() == before
    assert (bundle / "eval" / "report.md").is_file()
    assert "the manifest was left as it was" in capsys.readouterr().out


@pytest.mark.parametrize("flags, match", [
    (["--limit", "0"], "limit must be >= 1 case per slice, got 0"),
    (["--limit", "-1"], "limit must be >= 1 case per slice, got -1"),
    (["--threads", "0"], "threads must be >= 1, got 0"),
    (["--threads", "-2"], "threads must be >= 1, got -2"),
])
def test_cli_bad_numbers_are_one_line(bundle, small_suite, capsys, flags, match):
    assert main(["--bundle", str(bundle), "--suite", str(small_suite), "--quiet", *flags]) == 2
    err = capsys.readouterr().err
    assert err.startswith("edge-eval: error: ") and match in err and err.count("\n") == 1


def test_cli_context_shorter_than_the_window_is_one_line(bundle, small_suite, capsys):
    raw = json.loads((bundle / "manifest.json").read_text())
    raw["model"]["context_length"] = 256
    (bundle / "manifest.json").write_text(json.dumps(raw))
    assert main(["--bundle", str(bundle), "--suite", str(small_suite), "--quiet"]) == 2
    assert "context (256 tokens) is shorter than the 512-token perplexity window" in capsys.readouterr().err
