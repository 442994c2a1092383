"""Packaging: what the wheel holds, which extra each tool needs, `--version` on every tool.

The slow end-to-end check (a fresh venv, `pip install` of the wheel, the README's device
commands) is `make wheel-size` (.ci/wheel_install.sh); here the parts that take seconds.
"""

from __future__ import annotations

import importlib
import re
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

from edge_runtime import extras
from edge_runtime.errors import MissingExtra

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
TOOLS = {  # entry point -> the module whose main() it runs
    "edge-export": "export.cli", "edge-eval": "harness.cli", "edge-train": "controller.cli",
    "edge-serve": "edge_runtime.serve.cli", "edge-sim": "edge_runtime.sim.cli",
}


def _name(requirement: str) -> str:
    return re.match(r"[A-Za-z0-9_.-]+", requirement).group(0).lower()


def test_package_list_covers_the_tree():
    from setuptools import find_packages

    found = set(find_packages(str(ROOT), include=["edge_runtime*", "harness*", "export*", "controller*"]))
    assert set(PYPROJECT["tool"]["setuptools"]["packages"]) == found | {"edge_runtime.profiles"}


def test_extras_table_matches_pyproject():
    declared = PYPROJECT["project"]["optional-dependencies"]
    for extra, pairs in extras.EXTRAS.items():
        assert {d for d, _ in pairs} == {_name(r) for r in declared[extra]}, extra
    assert set(PYPROJECT["project"]["scripts"]) == set(TOOLS)
    base = {_name(r) for r in PYPROJECT["project"]["dependencies"]}
    # the device carries none of them (tokenizers: its huggingface-hub dependency is 30 MB)
    assert not base & {"matplotlib", "tqdm", "torch", "tokenizers", "huggingface-hub"}


def test_serving_a_byte_level_bundle_never_imports_tokenizers(tiny_bundle):
    """The tiny bundle's byte-level BPE is read by llguidance: a chat, a stream and a JSON schema
    later, neither `tokenizers` nor `huggingface_hub` has been imported."""
    code = ("import sys\n"
            "from edge_runtime import Runtime, SamplingParams\n"
            f"with Runtime.open({str(tiny_bundle)!r}, threads=1, allow_ungated=True) as rt:\n"
            "    r = rt.chat([{'role': 'user', 'content': 'hi <|im_end|>'}], params=SamplingParams(max_tokens=4))\n"
            "    text = ''.join(rt.stream('Once', params=SamplingParams(max_tokens=4)))\n"
            "    c = rt.grammars.compile_json_schema({'type': 'integer'}, 'response_format')\n"
            "    rt.generate('n:', constraint=c, params=SamplingParams(max_tokens=4))\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('tokenizers', 'huggingface_hub')))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_missing_extra_is_one_line_naming_it(monkeypatch):
    monkeypatch.setitem(extras.EXTRAS, "plot", (("matplotlib", "matplotlib_absent_for_this_test"),))
    assert extras.missing("plot") == ["matplotlib"]
    with pytest.raises(MissingExtra, match=r"^edge-sim --plot needs the \[plot\] extra \(matplotlib not installed\): "
                       r"pip install 'edge-sparsity-runtime\[plot\]'$"):
        extras.require("plot", "edge-sim --plot")


def test_tool_without_its_extra_says_so(monkeypatch, capsys, tmp_path):
    from edge_runtime.sim import cli

    monkeypatch.setitem(extras.EXTRAS, "plot", (("matplotlib", "matplotlib_absent_for_this_test"),))
    assert cli.main(["--bundle", str(tmp_path), "--profile", "laptop-battery", "--plot", "x.png"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "pip install 'edge-sparsity-runtime[plot]'" in err


@pytest.mark.parametrize("tool", sorted(TOOLS))
def test_every_tool_has_version(tool, capsys):
    main = importlib.import_module(TOOLS[tool]).main
    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0
    assert capsys.readouterr().out.strip() == f"{tool} {extras.version()}"


def test_wheel_ships_profiles_read_through_importlib_resources(tmp_path):
    out = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                          "-w", str(tmp_path / "dist"), str(ROOT)], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    (wheel,) = (tmp_path / "dist").glob("*.whl")
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    bundled = sorted(p.stem for p in (ROOT / "profiles").glob("*.toml"))
    code = ("from edge_runtime.sim.profile import list_profiles, load_profile\n"
            "found = list_profiles(); print(sorted(found))\n"
            f"assert all(str(p).startswith({str(site)!r}) for p in found.values()), found\n"
            "load_profile('trace-office')\n")  # its trace CSV rides along too
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path,
                         env={"PYTHONPATH": str(site), "PATH": "/usr/bin:/bin"})
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == str(bundled)
