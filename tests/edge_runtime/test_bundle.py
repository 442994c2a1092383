"""The bundle format: manifest validation, atomic writes, file checks."""

from __future__ import annotations

import json
import shutil

import pytest

from edge_runtime import bundle as B
from edge_runtime.errors import BundleError, VariantError


def test_tiny_bundle_round_trips(tiny_bundle):
    m = B.read_manifest(tiny_bundle)
    B.check_files(tiny_bundle, m)
    assert m.format == B.FORMAT
    assert m.names[0] == "dense"
    again = B.Manifest.from_dict(json.loads(m.to_json()))
    assert again == m


def test_variant_keys_spelled_as_design(tiny_bundle):
    raw = json.loads((tiny_bundle / "manifest.json").read_text())
    v = raw["variants"][0]
    for key in ("name", "method", "sparsity", "structured", "quantization", "parent", "onnx", "params",
                "nonzero_params", "file_bytes", "parity", "quality", "cost", "gate"):
        assert key in v
    assert set(v["parity"]) >= {"prefill_max_abs", "decode_max_abs"}
    assert set(v["cost"]) >= {"prefill_ms_per_token", "decode_ms_per_token", "peak_rss_mb"}
    assert v["gate"]["status"] in ("pass", "fail", "pending")


def _copy(tiny_bundle, tmp_path):
    dst = tmp_path / "b"
    shutil.copytree(tiny_bundle, dst)
    return dst, json.loads((dst / "manifest.json").read_text())


def test_unknown_format_is_refused(tiny_bundle, tmp_path):
    dst, raw = _copy(tiny_bundle, tmp_path)
    raw["format"] = "edge-bundle/99"
    (dst / "manifest.json").write_text(json.dumps(raw))
    with pytest.raises(BundleError, match=r"unknown bundle format 'edge-bundle/99'.*re-export"):
        B.read_manifest(dst)


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda r: r["variants"][0].pop("onnx"), r"variant #0 'dense': missing key 'onnx'"),
        (lambda r: r["variants"][0].update(sparsity="half"), r"'sparsity' must be int/float, got str"),
        (lambda r: r["variants"][0].update(sparsity=1.5), r"sparsity must be in \[0, 1\), got 1.5"),
        (lambda r: r["variants"][0].update(gate={"status": "maybe"}), r"gate status must be one of"),
        (lambda r: r["variants"][1].update(parent="ghost"), r"parent 'ghost' is not in the bundle"),
        (lambda r: r.update(variants=[]), r"'variants' must be a non-empty list"),
        (lambda r: r["variants"].append(dict(r["variants"][0])), r"duplicate variant names \['dense'\]"),
        (lambda r: r.update(tokenizer=3), r"manifest: 'tokenizer' must be a relative path inside the bundle \(no '..'\), got 3"),
        (lambda r: r["model"].update(context_length=0), r"'context_length' must be a positive integer, got 0"),
        (lambda r: r["model"].update(context_length=-5), r"'context_length' must be a positive integer, got -5"),
        (lambda r: r["model"].update(bos_token_id="<s>"), r"'bos_token_id' .* must be integers in \[0, \d+\) or null, got '<s>'"),
        (lambda r: r["model"].update(bos_token_id=10**9), r"must be integers in \[0, \d+\) or null, got 1000000000"),
        (lambda r: r["variants"][0].update(onnx="/etc/passwd"), r"'onnx' must be a relative path inside the bundle .* got '/etc/passwd'"),
        (lambda r: r["variants"][0].update(onnx="variants/../../x.onnx"), r"'onnx' must be a relative path inside the bundle"),
        (lambda r: r.update(tokenizer="../tokenizer.json"), r"'tokenizer' must be a relative path inside the bundle"),
        (lambda r: r.update(controller={"policy": "../p.onnx"}), r"'policy' must be a relative path inside the bundle"),
        (lambda r: r.update(controller={"policy": "C:\\p.onnx"}), r"'policy' must be a relative path inside the bundle"),
    ],
)
def test_malformed_manifest_names_the_problem(tiny_bundle, tmp_path, mutate, message):
    dst, raw = _copy(tiny_bundle, tmp_path)
    mutate(raw)
    (dst / "manifest.json").write_text(json.dumps(raw))
    with pytest.raises(BundleError, match=message):
        B.read_manifest(dst)


def test_not_json_and_not_a_bundle(tmp_path):
    with pytest.raises(BundleError, match="does not exist"):
        B.read_manifest(tmp_path / "nowhere")
    with pytest.raises(BundleError, match="is not a bundle"):
        B.read_manifest(tmp_path)
    (tmp_path / "manifest.json").write_text("{not json")
    with pytest.raises(BundleError, match="is not valid JSON"):
        B.read_manifest(tmp_path)


def test_missing_file_is_named(tiny_bundle, tmp_path):
    dst, _ = _copy(tiny_bundle, tmp_path)
    (dst / "variants" / "dense-int8" / "model.onnx").unlink()
    m = B.read_manifest(dst)
    with pytest.raises(BundleError, match=r"missing 'variants/dense-int8/model.onnx'"):
        B.check_files(dst, m)


def test_missing_policy_file_is_not_a_missing_bundle_file(tiny_bundle, tmp_path):
    dst, raw = _copy(tiny_bundle, tmp_path)
    raw["controller"] = {"policy": "controller/policy.onnx", "observation": [], "actions": []}
    (dst / "manifest.json").write_text(json.dumps(raw))
    B.check_files(dst, B.read_manifest(dst))  # the rule policy decides instead (test_runtime)


def test_unknown_variant(tiny_bundle):
    with pytest.raises(VariantError, match=r"unknown variant 'nope'; this bundle has \['dense', 'dense-int8'\]"):
        B.read_manifest(tiny_bundle).variant("nope")


def test_atomic_directory_keeps_old_on_failure(tmp_path):
    target = tmp_path / "out"
    target.mkdir()
    (target / "keep.txt").write_text("old")
    with pytest.raises(BundleError, match="exists; pass --force"):
        with B.atomic_directory(target):
            pass
    with pytest.raises(RuntimeError):
        with B.atomic_directory(target, force=True) as tmp:
            (tmp / "new.txt").write_text("new")
            raise RuntimeError("crash mid-export")
    assert (target / "keep.txt").read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["out"]  # no partial dirs left
    with B.atomic_directory(target, force=True) as tmp:
        (tmp / "new.txt").write_text("new")
    assert [p.name for p in target.iterdir()] == ["new.txt"]


def test_manifest_write_is_atomic_and_validated(tiny_bundle, tmp_path):
    dst, _ = _copy(tiny_bundle, tmp_path)
    m = B.read_manifest(dst)
    v = m.variants[0]
    updated = m.replace_variant(B.Variant(**{**v.__dict__, "gate": B.Gate("pass")}))
    B.write_manifest(dst, updated)
    assert B.read_manifest(dst).variants[0].gate.status == "pass"
    assert not list(dst.glob(".manifest.json.*"))
