"""edge-export's command line: expected failures are one line and exit 2, before the model loads."""

from __future__ import annotations

import pytest

from export.cli import main


@pytest.mark.parametrize("flags, match", [
    (["--threads", "-3"], "--threads must be >= 1, got -3"),
    (["--threads", "0"], "--threads must be >= 1, got 0"),
])
def test_bad_threads_is_one_line(tmp_path, capsys, flags, match):
    assert main(["--out", str(tmp_path / "b"), *flags]) == 2
    err = capsys.readouterr().err
    assert err.startswith("edge-export: error: ") and match in err and err.count("\n") == 1


def test_out_under_a_file_is_refused_before_loading(tmp_path, capsys, monkeypatch):
    import export.pipeline as P

    def no_loading(*a, **k):
        raise AssertionError("the model was loaded before the output path was checked")

    monkeypatch.setattr(P, "load_model", no_loading)
    (tmp_path / "file").write_text("x")
    assert main(["--out", str(tmp_path / "file" / "sub" / "bundle"), "-q"]) == 2
    err = capsys.readouterr().err
    assert "is under" in err and "which is a file; choose another --out" in err and err.count("\n") == 1
