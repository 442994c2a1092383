#!/usr/bin/env bash
# The device install as a user gets it: build the wheel, install it without extras into a
# fresh venv, print the size of site-packages (and the venv's own pip/setuptools share),
# then run the README's device commands from outside the source tree: edge-sim with a
# bundled profile and edge-serve answering a chat request, on a tiny bundle.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
PY=${PY:-python3}
WORK=$(mktemp -d)
SERVER=""
trap '[ -n "$SERVER" ] && kill "$SERVER" 2>/dev/null; rm -rf "$WORK"' EXIT
$PY -m pip wheel -q --no-deps --no-build-isolation -w "$WORK/dist" . 2>&1 | grep -v "WARNING: Location" || true
$PY -m venv "$WORK/venv"
"$WORK/venv/bin/pip" install -q "$WORK"/dist/*.whl 2>&1 | grep -v "WARNING: Location" || true
SITE=$("$WORK/venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
TOTAL=$(du -sm "$SITE" | cut -f1)
OWN=$(du -smc "$SITE"/pip "$SITE"/pip-* "$SITE"/setuptools "$SITE"/setuptools-* "$SITE"/pkg_resources "$SITE"/_distutils_hack 2>/dev/null | tail -1 | cut -f1)
echo "base install: $TOTAL MB of site-packages ($OWN MB of it the venv's own pip and setuptools), $("$WORK/venv/bin/pip" list 2>/dev/null | tail -n +3 | wc -l) packages"
PYTHONPATH=.:tests $PY -c "from pathlib import Path; from conftest import build_tiny_bundle; build_tiny_bundle(Path('$WORK/tiny'))" >/dev/null 2>&1
cd "$WORK"  # nothing from the source tree from here on
"$WORK/venv/bin/edge-sim" --version
"$WORK/venv/bin/edge-sim" --profile laptop-battery --bundle "$WORK/tiny" --controller rule | tail -3
"$WORK/venv/bin/edge-serve" --bundle "$WORK/tiny" --port 18347 --log-level warning &
SERVER=$!
"$WORK/venv/bin/python" - <<'PYEOF'
import json, time, urllib.request
base = "http://127.0.0.1:18347"
for _ in range(120):
    try:
        if json.load(urllib.request.urlopen(base + "/health"))["status"] == "ok":
            break
    except OSError:
        time.sleep(0.5)
body = json.dumps({"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}).encode()
req = urllib.request.Request(base + "/v1/chat/completions", body, {"content-type": "application/json"})
out = json.load(urllib.request.urlopen(req))
print("edge-serve answered:", out["edge"]["variant"], out["usage"])
PYEOF
