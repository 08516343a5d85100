# openvica-sim: `make demo` and `make test` work from a fresh clone on a fresh machine.
#
# The venv gets torch first (TORCH_SPEC; on a CPU machine pip resolves torch==2.13.0 to the CPU build
# here), then the project; every dependency range admits the installed torch, so pip never replaces it
# with a multi-GB CUDA build. On a GPU machine: make install TORCH_SPEC="torch==2.13.0" with your CUDA index.

PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
PY := $(VENV)/bin/python
PIP := $(PY) -m pip --disable-pip-version-check -q
DEMO_OUT ?= demo-out
PYTEST_ARGS ?=

.PHONY: install demo embedded test test-all bench clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --upgrade pip
	$(PIP) install "$(TORCH_SPEC)"
	$(PIP) install -e ".[dev]"
	touch $@

# The main job on the embedded default (openvica_sim/embedded/: a tiny simulator trained on the synthetic world):
# continue the first 2 frames of a held-out seed clip by 14 predicted frames (3.5 s at 4 fps).
demo: install
	$(VENV)/bin/openvica rollout --steps 14 --seed 0 --out $(DEMO_OUT)/rollout.mp4
	@echo "demo: $(DEMO_OUT)/rollout.mp4 and $(DEMO_OUT)/rollout.png"

# Rebuild the embedded default from scratch with the project's own training scripts (training/embedded.sh).
embedded: install
	bash training/embedded.sh

# CI's suite: everything but the `slow` and `gpu` markers (keeps under 20 minutes on 2 cores).
test: install
	$(PY) -m pytest -q -m "not slow and not gpu" $(PYTEST_ARGS)

# Heavier checks too (still CPU): pytest -m slow
test-all: install
	$(PY) -m pytest -q -m "not gpu" $(PYTEST_ARGS)

bench: install
	$(PY) benchmarks/wm_decode.py --preset tiny --batch 1 4 --frames 6 --json

clean:
	rm -rf $(VENV) $(DEMO_OUT) build *.egg-info
