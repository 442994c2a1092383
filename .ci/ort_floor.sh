#!/usr/bin/env bash
# The lowest onnxruntime and llguidance pyproject claims (dependencies: "onnxruntime>=FLOOR",
# "llguidance>=FLOOR") must load a tiny bundle and generate the same greedy tokens (and
# tokenize the same chat, and follow the same JSON schema) as the development versions.
# A venv holding the floors (.ci/.venv-ort-floor, git-ignored) is made once (about a minute
# from the package index) and reused while the floors stay the same.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-python3}
floor() { $PY -c 'import re, sys, tomllib; deps = tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"]; print(next(m.group(1) for d in deps if (m := re.fullmatch(sys.argv[1] + r">=([\d.]+)", d.split(";")[0].split("#")[0].strip()))))' "$1"; }
FLOOR=$(floor onnxruntime)
LLG_FLOOR=$(floor llguidance)
VENV=.ci/.venv-ort-floor
if ! "$VENV/bin/python" -c "import importlib.metadata as m, sys; sys.exit((m.version('onnxruntime'), m.version('llguidance')) != ('$FLOOR', '$LLG_FLOOR'))" 2>/dev/null; then
    $PY -m venv --clear "$VENV"
    "$VENV/bin/pip" install -q "onnxruntime==$FLOOR" "llguidance==$LLG_FLOOR" numpy psutil jinja2 prometheus-client
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
    sys.exit(f"onnxruntime {floor['onnxruntime']} and llguidance {floor['llguidance']} (the floors) give "
             f"{floor['tokens']}; {dev['onnxruntime']} and {dev['llguidance']} give {dev['tokens']}")
print(f"floors onnxruntime {floor['onnxruntime']} and llguidance {floor['llguidance']}: the same {len(floor['tokens'])} "
      f"token lists (variants' greedy tokens, a chat prompt, a JSON schema) as {dev['onnxruntime']} and {dev['llguidance']}")
PYEOF
