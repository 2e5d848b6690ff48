# Set-up and checks. Every target installs what it needs by itself.
#   make run    QGIS with the plugin and a sample raster (until the plugin lands: the headless demo)
#   make test   lint, type check and the test suite
#   make demo   headless: build a sample raster, index it, search, write a GeoPackage

PYTHON ?= python3
ENGINE_VENV ?= .venv-engine
ENGINE_PY := $(ENGINE_VENV)/bin/python
STAMP := $(ENGINE_VENV)/.installed

.PHONY: env run demo test lint typecheck pytest clean

env: $(STAMP)

$(STAMP): requirements-engine.txt requirements-dev.txt
	@$(PYTHON) -c "import ensurepip, venv" 2>/dev/null || scripts/apt-install.sh python3-venv
	@test -x $(ENGINE_PY) || $(PYTHON) -m venv $(ENGINE_VENV)
	$(ENGINE_PY) -m pip install --quiet --upgrade pip
	$(ENGINE_PY) -m pip install --quiet -r requirements-engine.txt -r requirements-dev.txt
	$(ENGINE_PY) -c "import pathlib, sysconfig; pathlib.Path(sysconfig.get_paths()['purelib'], 'clip_search_plugin.pth').write_text('$(CURDIR)\n')"
	$(ENGINE_PY) -c "import torch, open_clip, faiss, rasterio, shapely, pyogrio; print('engine environment ready: torch', torch.__version__, '| open_clip', open_clip.__version__, '| faiss', faiss.__version__)"
	@touch $@

run: demo

demo: env
	$(ENGINE_PY) scripts/demo.py --output demo-output

lint: env
	$(ENGINE_VENV)/bin/ruff check clip_search_plugin tests scripts

typecheck: env
	$(ENGINE_VENV)/bin/mypy clip_search_plugin/engine

pytest: env
	$(ENGINE_PY) -m pytest tests/engine

test: lint typecheck pytest

clean:
	rm -rf demo-output .pytest_cache .mypy_cache .ruff_cache
