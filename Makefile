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

.PHONY: install demo test test-all bench clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --upgrade pip
	$(PIP) install "$(TORCH_SPEC)"
	$(PIP) install -e ".[dev]"
	touch $@

# The main job on the embedded default: continue two synthetic seed frames by 14 predicted frames.
# Until the embedded default is trained (issue 7) this uses a random tiny bundle: the video is noise.
demo: install
	$(VENV)/bin/openvica bundle random --preset tiny --out $(DEMO_OUT)/bundle
	$(VENV)/bin/openvica synthetic frames --out $(DEMO_OUT)/seeds --frames 2
	$(VENV)/bin/openvica rollout --bundle $(DEMO_OUT)/bundle --frames $(DEMO_OUT)/seeds/000000.png \
		$(DEMO_OUT)/seeds/000001.png --steps 14 --seed 0 --out $(DEMO_OUT)/rollout.mp4
	@echo "demo: $(DEMO_OUT)/rollout.mp4 and $(DEMO_OUT)/rollout.png"

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
