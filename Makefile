# perceive-ir: set-up and common tasks. Run `make demo` or `make test` on a fresh machine.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
# torch and torchvision are pinned as a pair that imports together (torchvision::nms).
TORCH  := torch==2.14.1 torchvision==0.29.1
DEMO_IN  := sample_data/fluorescence_degraded.tif
DEMO_OUT := demo_output

export HF_HUB_OFFLINE := 1
export PYTHONUNBUFFERED := 1

.PHONY: demo test test-fast gui-deps train-smoke clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install $(TORCH)
	$(BIN)/pip install -e .
	touch $@

$(VENV)/.installed-test: pyproject.toml $(VENV)/.installed
	$(BIN)/pip install -e '.[test,train]'
	touch $@

# Restore the bundled sample and write the result plus its quality report.
demo: $(VENV)/.installed
	mkdir -p $(DEMO_OUT)
	$(BIN)/perceive-ir restore $(DEMO_IN) $(DEMO_OUT)/fluorescence_restored.tif \
		--report $(DEMO_OUT)/fluorescence_quality.json --reference sample_data/fluorescence_clean.tif --overwrite

# Debian packages that napari's Qt tests need under a virtual screen (root on CI).
gui-deps:
	@command -v xvfb-run >/dev/null 2>&1 || { \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq xvfb xauth \
		libxkbcommon-x11-0 libxcb-icccm4 libxcb-image0 libxcb-keysyms1 libxcb-randr0 libxcb-render-util0 \
		libxcb-xinerama0 libxcb-xfixes0 libxcb-shape0 libxcb-cursor0 libfontconfig1 libgl1 libegl1 libdbus-1-3; }

# Every test, GUI tests included, under Xvfb.
test: $(VENV)/.installed-test gui-deps
	QT_QPA_PLATFORM=xcb xvfb-run -a -s "-screen 0 1600x1000x24" $(BIN)/python -m pytest -q

# Without the GUI tests and the slow marker, for quick iterations.
test-fast: $(VENV)/.installed-test
	$(BIN)/python -m pytest -q -m "not slow and not gui"

train-smoke: $(VENV)/.installed-test
	$(BIN)/python training/run.py --config smoke --out runs/smoke

clean:
	rm -rf $(DEMO_OUT) runs/smoke .pytest_cache
