"""Recovery inside edge-export: the manifest records it, parity holds, bad input stops before any work."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from edge_runtime.bundle import Recovery, Variant, read_manifest
from edge_runtime.errors import RecipeError
from export import cli
from export.load import tiny_model
from export.pipeline import PARITY_LIMIT, ExportOptions, export_bundle
from export.recipe import Recipe
from export.teacher import work_dir

pytestmark = pytest.mark.usefixtures("one_thread")


def _recipe(prompts: Path, **variant_recovery) -> dict:
    return {
        "name": "tiny-recovery",
        "calibration": {"samples": 4, "seq_len": 32},
        "evaluation": {"ppl_windows": 0},
        "recovery": {"tokens": 300, "batch_tokens": 100, "top_k": 8, "max_new_tokens": 6, "prose_len": 32,
                     "prompts": str(prompts)},
        "variant": [
            {"name": "dense", "method": "dense"},
            {"name": "structured-30", "method": "structured", "sparsity": 0.3, "recovery": variant_recovery},
            {"name": "structured-30-int8", "parent": "structured-30", "quantization": "int8"},
            {"name": "magnitude-50", "method": "magnitude", "sparsity": 0.5, "recovery": {}},
        ],
    }


@pytest.fixture
def prompts(tmp_path: Path) -> Path:
    p = tmp_path / "prompts.jsonl"
    p.write_text("\n".join(json.dumps({"prompt": f"Tell me about the number {i}."}) for i in range(4)), encoding="utf-8")
    return p


def test_recovered_variants_export_with_parity_and_are_recorded(tmp_path: Path, prompts: Path) -> None:
    out = tmp_path / "b"
    export_bundle(tiny_model(), out, Recipe.from_dict(_recipe(prompts)), options=ExportOptions(
        threads=1, measure_cost=False, progress=False))
    m = read_manifest(out)
    rec = m.variant("structured-30").recovery
    assert rec is not None and rec.tokens >= 300 and rec.steps == 3 and set(rec.data) == {"chat", "prose"}
    assert rec.extra["config"]["tokens"] == 300 and rec.seconds > 0
    child = m.variant("structured-30-int8").recovery
    assert child is not None and child.extra["inherited"] and child.tokens == rec.tokens
    assert m.variant("dense").recovery is None
    for name in ("structured-30", "magnitude-50"):
        v = m.variant(name)
        assert max(v.parity.prefill_max_abs, v.parity.decode_max_abs) < PARITY_LIMIT
    assert m.variant("magnitude-50").nonzero_params < m.variant("dense").nonzero_params
    assert not work_dir(out).exists()  # checkpoints go once the bundle is complete
    assert "k tok" in cli.summary(m).splitlines()[3]


def test_old_manifests_without_recovery_still_load() -> None:
    d = {"name": "v", "method": "dense", "sparsity": 0.0, "structured": False, "quantization": "none", "parent": None,
         "onnx": "variants/v/model.onnx", "params": 1, "nonzero_params": 1, "file_bytes": 1}
    v = Variant.from_dict(d)
    assert v.recovery is None and "recovery" not in v.to_dict()
    again = Variant.from_dict({**d, "recovery": Recovery(10, 2, 1.5, {"chat": 10}).to_dict()})
    assert again.recovery == Recovery(10, 2, 1.5, {"chat": 10})


def test_recovery_without_a_dense_parent_is_refused(prompts: Path) -> None:
    r = _recipe(prompts)
    r["variant"] = r["variant"][1:]
    with pytest.raises(RecipeError, match="no dense variant is listed before it"):
        Recipe.from_dict(r)


def _run(tmp_path: Path, capsys, recipe_toml: str, *flags: str) -> tuple[int, list[str], Path]:
    path = tmp_path / "r.toml"
    path.write_text(recipe_toml, encoding="utf-8")
    out = tmp_path / "bundle"
    rc = cli.main(["--out", str(out), "--recipe", str(path), "-q", *flags])
    err = [x for x in capsys.readouterr().err.splitlines() if x.strip()]
    return rc, err, out


def _toml(prompts: Path, extra: str = "") -> str:
    return f"""name = "t"
[recovery]
tokens = 300
prompts = "{prompts}"
{extra}
[[variant]]
name = "dense"
method = "dense"
[[variant]]
name = "s"
method = "structured"
sparsity = 0.3
recovery = {{}}
"""


@pytest.mark.parametrize(
    ("case", "flags", "match"),
    [
        ("tokens", ["--recovery", "tokens=0"], "recovery tokens must be a positive integer, got 0"),
        ("steps", ["--recovery", "steps=-1"], "recovery steps must be a positive integer, got -1"),
        ("spec", ["--recovery", "tokens"], "expected 'off' or KEY=VALUE pairs"),
        ("empty", [], "is empty; it needs text to train on"),
        ("utf8", [], "is not UTF-8"),
        ("no-dense", [], "no dense variant is listed before it"),
        pytest.param("cuda", ["--device", "cuda"], "torch sees no CUDA GPU",
                     marks=pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is present")),
    ],
)
def test_bad_input_is_one_line_exit_2_and_no_bundle(tmp_path: Path, capsys, prompts: Path, case: str,
                                                    flags: list[str], match: str) -> None:
    text = _toml(prompts)
    if case == "empty":
        prompts.write_text("", encoding="utf-8")
    elif case == "utf8":
        prompts.write_bytes(b'{"prompt": "\xff"}')
    elif case == "no-dense":
        text = text.replace('name = "dense"\nmethod = "dense"\n[[variant]]\n', "")
    rc, err, out = _run(tmp_path, capsys, text, *flags)
    assert rc == 2 and len(err) == 1 and err[0].startswith("edge-export: error: ")
    assert match in err[0], err[0]
    assert not out.exists() and not work_dir(out).exists()


def test_recovery_off_drops_it_everywhere(prompts: Path) -> None:
    r = cli.apply_recovery_flags(Recipe.from_dict(_recipe(prompts)), "off", None)
    assert not r.recovers
    r = cli.apply_recovery_flags(Recipe.from_dict(_recipe(prompts)), "tokens=123,lr=2e-4", None)
    assert {v.recovery.tokens for v in r.variants if v.recovery} == {123}


def test_resume_refuses_teacher_data_of_another_recipe(tmp_path: Path, prompts: Path) -> None:
    from edge_runtime.errors import RecoveryError
    from export.load import tiny_tokenizer
    from export.teacher import TEACHER_FILE, Teacher

    work = tmp_path / ".b.recovery"
    work.mkdir()
    torch.save({"fingerprint": "0" * 16, "identity": {"recipe": "other", "model": "m"}}, work / TEACHER_FILE)
    teacher = Teacher(Recipe.from_dict(_recipe(prompts)), tiny_tokenizer(), None, work,
                      {"recipe": "tiny-recovery", "model": "tiny"}, resume=True, progress=False)
    with pytest.raises(RecoveryError, match=r"--resume: teacher data .* belongs to recipe 'other', model 'm', "
                       r"not recipe 'tiny-recovery', model 'tiny'; delete"):
        teacher.cache(tmp_path / "unused.onnx")
