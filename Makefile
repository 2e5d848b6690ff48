# Set-up and checks. Every target installs what it needs by itself.
#   make run    QGIS with the plugin (separate profile) and a sample raster; Xvfb when there is no screen
#   make test   lint, type check and the test suite
#   make demo   headless: build a sample raster, index it, search, write a GeoPackage
#   make package  dist/clip_search_plugin.zip for the QGIS plugins site (bandit-checked)

PYTHON ?= python3
ENGINE_VENV ?= .venv-engine
ENGINE_PY := $(ENGINE_VENV)/bin/python
STAMP := $(ENGINE_VENV)/.installed
# QGIS's Python is Debian's /usr/bin/python3; plugin tests run in a venv that sees its packages
QGIS_VENV ?= .venv-qgis
QGIS_PY := $(QGIS_VENV)/bin/python
QGIS_STAMP := $(QGIS_VENV)/.installed

.PHONY: env qgis-env servers run demo package bench test lint typecheck pytest pytest-plugin clean

env: $(STAMP)

$(STAMP): requirements-engine.txt clip_search_plugin/requirements/linux.txt requirements-dev.txt
	@$(PYTHON) -c "import ensurepip, venv" 2>/dev/null || scripts/apt-install.sh python3-venv
	@test -x $(ENGINE_PY) || $(PYTHON) -m venv $(ENGINE_VENV)
	$(ENGINE_PY) -m pip install --quiet --upgrade pip
	$(ENGINE_PY) -m pip install --quiet -r requirements-engine.txt -r requirements-dev.txt
	$(ENGINE_PY) -c "import pathlib, sysconfig; pathlib.Path(sysconfig.get_paths()['purelib'], 'clip_search_plugin.pth').write_text('$(CURDIR)\n')"
	$(ENGINE_PY) -c "import torch, open_clip, faiss, rasterio, shapely, pyproj, pyogrio, pyarrow, dask.distributed; print('engine environment ready: torch', torch.__version__, '| open_clip', open_clip.__version__, '| faiss', faiss.__version__)"
	@touch $@

$(QGIS_STAMP): requirements-qgis-test.txt
	scripts/apt-install.sh qgis python3-qgis python3-venv xvfb
	@test -x $(QGIS_PY) || /usr/bin/python3 -m venv --system-site-packages $(QGIS_VENV)
	$(QGIS_PY) -m pip install --quiet -r requirements-qgis-test.txt
	$(QGIS_PY) -c "import qgis.core; print('QGIS', qgis.core.Qgis.QGIS_VERSION)"
	@touch $@

qgis-env: $(QGIS_STAMP)

run: env qgis-env
	$(ENGINE_PY) scripts/demo.py --output demo-output --sample-only
	scripts/run_qgis.sh $(ENGINE_PY) demo-output/sample.tif

demo: env
	$(ENGINE_PY) scripts/demo.py --output demo-output

# speed and memory benchmarks (figures in BENCHMARKS.md; JSON in build/bench); BENCH_ARGS e.g. --device cuda
bench: env
	$(ENGINE_PY) scripts/bench_index.py --size 4096 --naive-tiles 256 --json build/bench/index.json $(BENCH_ARGS)
	$(ENGINE_PY) scripts/bench_query.py --json build/bench/query.json $(BENCH_ARGS)
	$(ENGINE_PY) scripts/bench_memory.py --base-size 4096 --json build/bench/memory.json
	$(ENGINE_PY) scripts/bench_web.py --size 4096 --json build/bench/web.json $(BENCH_ARGS)

# bandit -ll: no medium or high finding may remain (the low ones are explained in DESIGN.md)
package: env
	$(ENGINE_VENV)/bin/bandit -q -ll -r clip_search_plugin
	$(ENGINE_PY) scripts/package_plugin.py

lint: env
	$(ENGINE_VENV)/bin/ruff check clip_search_plugin tests scripts

typecheck: env
	$(ENGINE_VENV)/bin/mypy clip_search_plugin

# the real test servers: a WMS is MapServer's mapserv (Debian package mapserver-bin)
servers:
	scripts/apt-install.sh mapserver-bin

# a suite that hangs is ended well inside CI's limit, with every thread's stack written out (SIGABRT: faulthandler)
SUITE_LIMIT := timeout --signal=ABRT --kill-after=60

pytest: env servers
	$(SUITE_LIMIT) 1800 $(ENGINE_PY) -m pytest tests/engine

pytest-plugin: env qgis-env servers
	QT_QPA_PLATFORM=offscreen $(SUITE_LIMIT) 2400 $(QGIS_PY) -m pytest tests/plugin

test: lint typecheck pytest pytest-plugin

clean:
	rm -rf demo-output dist .pytest_cache .mypy_cache .ruff_cache
