#!/usr/bin/env bash
# The lowest onnxruntime pyproject claims (dependencies: "onnxruntime>=FLOOR") must load a
# tiny bundle and generate the same greedy tokens as the development onnxruntime.
# A venv holding the floor (.ci/.venv-ort-floor, git-ignored) is made once (about a minute
# from the package index) and reused while the floor stays the same.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-python3}
FLOOR=$($PY -c 'import re, tomllib; deps = tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"]; print(next(re.fullmatch(r"onnxruntime>=([\d.]+)", d).group(1) for d in deps if d.startswith("onnxruntime")))')
VENV=.ci/.venv-ort-floor
if ! "$VENV/bin/python" -c "import onnxruntime, sys; sys.exit(onnxruntime.__version__ != '$FLOOR')" 2>/dev/null; then
    $PY -m venv --clear "$VENV"
    "$VENV/bin/pip" install -q "onnxruntime==$FLOOR" numpy psutil tokenizers jinja2 prometheus-client
fi
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
PYTHONPATH=.:tests $PY -c "from pathlib import Path; from conftest import build_tiny_bundle; build_tiny_bundle(Path('$WORK/tiny'))" >/dev/null 2>&1
PYTHONPATH=. $PY .ci/ort_floor_check.py "$WORK/tiny" > "$WORK/dev.json"
PYTHONPATH=. "$VENV/bin/python" .ci/ort_floor_check.py "$WORK/tiny" > "$WORK/floor.json"
$PY - "$WORK/dev.json" "$WORK/floor.json" <<'PYEOF'
import json, sys
dev, floor = (json.load(open(p)) for p in sys.argv[1:])
if dev["tokens"] != floor["tokens"]:
    sys.exit(f"onnxruntime {floor['onnxruntime']} (the floor) generates {floor['tokens']}, "
             f"{dev['onnxruntime']} generates {dev['tokens']}")
print(f"onnxruntime floor {floor['onnxruntime']}: {len(floor['tokens'])} variants, same greedy tokens as {dev['onnxruntime']}")
PYEOF
