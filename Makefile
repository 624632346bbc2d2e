# PanAdapter for QGIS: set-up, demo, tests and packaging.
#   make demo    pansharpen a real scene through qgis_process (demo/fused.tif, demo/fused.png)
#   make test    install what is missing (as root on Debian 12), then run the whole test suite
#   make zip     the plugin zip for the QGIS plugin repository (dist/)

SHELL := /bin/bash
.DEFAULT_GOAL := help

SYSTEM_PYTHON := /usr/bin/python3
VENV := .venv
PY := $(VENV)/bin/python
TORCH_SPEC ?= torch==2.13.0
# optional (SCHEDULER: tiles on a Dask cluster; tests/test_cluster.py): pure Python, it needs no numpy
DASK_SPEC ?= dask[distributed]==2026.8.0
QGIS_PROCESS := /usr/bin/qgis_process.bin
PROFILE := $(CURDIR)/.qgis-profile
PACKAGE := panadapter_qgis
VERSION := $(shell sed -n 's/^version=//p' metadata.txt)
DIST ?= dist
ZIP_BUILD ?= build/zip
ZIP = $(abspath $(DIST))/$(PACKAGE)-$(VERSION).zip

# qgis_process runs QGIS's Python (/usr/bin/python3); torch lives in the venv, so hand it the venv's
# site-packages. Debian's /usr/bin/qgis_process wrapper is broken: call qgis_process.bin directly.
QGIS_PROCESS_ENV = QT_QPA_PLATFORM=offscreen QGIS_CUSTOM_CONFIG_PATH=$(PROFILE) QGIS_PLUGINPATH=$(CURDIR) \
	PYTHONPATH="$$($(PY) -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"

# Demo scene (relative to this repository; the data is never copied into it).
DEMO_SCENE := ../shared/data/pansharpening/wv3_cristianics
DEMO_SENSOR := 2
PAN ?=
MS ?=
SENSOR ?=

IS_ROOT := $(shell [ "$$(id -u)" = 0 ] && echo yes)

.PHONY: help deps venv qgis xvfb peers profile demo test bench bench-gpu bench-cluster bench-quality weights zip clean

help:
	@echo "make demo   - pansharpen a real scene (MTF-GLP-FS) through qgis_process: demo/fused.tif + demo/fused.png"
	@echo "              other data: make demo PAN=/path/pan.tif MS=/path/ms.tif [SENSOR=0..9]"
	@echo "make test   - install what is missing, then run the tests"
	@echo "make zip    - build $(ZIP)"
	@echo "make bench-quality - indices and seconds of every method and installed peer on the real scenes"
	@echo "              (reduced and full resolution; BENCH_QUALITY_ARGS=\"--scenes all\" for every scene)"
	@echo "make weights - train the bundled PanAdapter, SSDiff and INF weights (about 80 min on a 2-core CPU)"
	@echo "make bench-gpu - the deep models on a GPU machine (100-MP mosaic): bench/out/gpu.md"
	@echo "make bench-cluster - a local Dask cluster of 1 and 2 workers against in-process: bench/out/cluster.md"
	@echo "make venv | qgis | xvfb | peers | profile | bench | clean"

deps: qgis venv

qgis:
	@if [ -x $(QGIS_PROCESS) ] && $(SYSTEM_PYTHON) -c 'import qgis.core, osgeo.gdal' 2>/dev/null; then \
		echo "QGIS: $(QGIS_PROCESS) present"; \
	elif [ "$(IS_ROOT)" = yes ]; then \
		apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y \
			qgis python3-qgis qgis-providers python3-gdal gdal-bin; \
	else \
		echo "QGIS is missing ($(QGIS_PROCESS) or the qgis Python bindings). Install it as root:" >&2; \
		echo "  sudo apt-get install qgis python3-qgis qgis-providers python3-gdal gdal-bin" >&2; \
		exit 1; \
	fi

venv: qgis
	@if [ ! -x $(PY) ]; then \
		if ! $(SYSTEM_PYTHON) -c 'import ensurepip' 2>/dev/null; then \
			if [ "$(IS_ROOT)" = yes ]; then \
				apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y python3-venv; \
			else \
				echo "python3-venv is missing: sudo apt-get install python3-venv" >&2; exit 1; \
			fi; \
		fi; \
		echo "Creating $(VENV) from $(SYSTEM_PYTHON) (with the system site-packages, for qgis and GDAL)"; \
		$(SYSTEM_PYTHON) -m venv --system-site-packages $(VENV); \
	fi
	@$(PY) -c 'import torch' 2>/dev/null || $(PY) -m pip install '$(TORCH_SPEC)'
	@$(PY) -c 'import pytest' 2>/dev/null || $(PY) -m pip install pytest
	@$(PY) -c 'import pytest_qgis' 2>/dev/null || $(PY) -m pip install pytest-qgis
	@$(PY) -c 'import h5py' 2>/dev/null || $(PY) -m pip install h5py
	@$(PY) -c 'import distributed' 2>/dev/null || $(PY) -m pip install '$(DASK_SPEC)'

# A virtual X display for tests/test_desktop.py, which drives the real QGIS desktop (skipped without Xvfb).
xvfb:
	@if command -v Xvfb >/dev/null; then \
		echo "Xvfb: present"; \
	elif [ "$(IS_ROOT)" = yes ]; then \
		apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y xvfb; \
	else \
		echo "WARNING: Xvfb missing and not root; the desktop test will be skipped (sudo apt-get install xvfb)" >&2; \
	fi

# Peer tools the benchmarks compare with (OTB, GRASS). Optional: their tests skip when absent.
peers:
	@if command -v otbcli_Pansharpening >/dev/null && command -v grass >/dev/null; then \
		echo "Peers: OTB and GRASS present"; \
	elif [ "$(IS_ROOT)" = yes ]; then \
		( apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y otb-bin grass-core ) \
			|| echo "WARNING: could not install otb-bin grass-core; the peer tests will be skipped" >&2; \
	else \
		echo "WARNING: OTB or GRASS missing and not root; the peer tests will be skipped" \
			"(sudo apt-get install otb-bin grass-core)" >&2; \
	fi

# A throwaway QGIS profile with this checkout's plugin enabled.
profile: qgis
	@mkdir -p $(PROFILE)
	@export QT_QPA_PLATFORM=offscreen QGIS_CUSTOM_CONFIG_PATH=$(PROFILE) QGIS_PLUGINPATH=$(CURDIR); \
	if $(QGIS_PROCESS) plugins 2>/dev/null | grep -q '^\* $(PACKAGE)$$'; then \
		echo "Profile $(PROFILE): $(PACKAGE) enabled"; \
	elif $(QGIS_PROCESS) plugins enable $(PACKAGE) >/dev/null 2>&1; then \
		echo "Profile $(PROFILE): $(PACKAGE) enabled now"; \
	else \
		echo "qgis_process could not enable $(PACKAGE) from $(CURDIR)" >&2; exit 1; \
	fi

demo: deps profile
	@set -e; pan="$(PAN)"; ms="$(MS)"; sensor="$(SENSOR)"; \
	if [ -z "$$pan" ] && [ -z "$$ms" ]; then \
		if [ -f "$(DEMO_SCENE)/pan.tif" ] && [ -f "$(DEMO_SCENE)/ms.tif" ]; then \
			pan="$(DEMO_SCENE)/pan.tif"; ms="$(DEMO_SCENE)/ms.tif"; sensor="$${sensor:-$(DEMO_SENSOR)}"; \
			echo "Demo scene: $(DEMO_SCENE) (WorldView-3, 8 bands, ratio 4; SENSOR=$$sensor)"; \
		else \
			echo "The demo scene $(DEMO_SCENE) is not here. Give your own pair:" >&2; \
			echo "  make demo PAN=/path/to/pan.tif MS=/path/to/ms.tif [SENSOR=0..9]" >&2; \
			exit 2; \
		fi; \
	elif [ -z "$$pan" ] || [ -z "$$ms" ]; then \
		echo "Give both PAN=... and MS=... (got PAN='$$pan' MS='$$ms')" >&2; exit 2; \
	else \
		echo "Demo scene: PAN=$$pan MS=$$ms (SENSOR=$${sensor:-from the image metadata, else generic})"; \
	fi; \
	pan="$$(realpath "$$pan")"; ms="$$(realpath "$$ms")"; \
	mkdir -p demo; rm -f demo/fused.tif demo/fused.png; \
	$(QGIS_PROCESS_ENV) $(QGIS_PROCESS) run panadapter:mtf_glp_fs \
		--PAN="$$pan" --MS="$$ms" $${sensor:+--SENSOR="$$sensor"} --OUTPUT="$(CURDIR)/demo/fused.tif"; \
	$(PY) scripts/quicklook.py demo/fused.tif demo/fused.png; \
	echo "Wrote demo/fused.tif and demo/fused.png"

test: deps peers xvfb
	$(PY) -m pytest -q tests

# Speed against GDAL on a real scene (repeated 10x10), then peak memory on a >= 20000 x 20000 PAN.
# On a machine with an NVIDIA GPU: installs torch's CUDA build over a CPU one, then the deep models on a 100-MP
# mosaic (MP/s, peak GPU memory, batch) and scene adaptation: bench/out/gpu.md
bench-gpu: venv
	$(PY) bench/bench_gpu.py --install

# Throughput on a local Dask cluster of 1 and 2 workers against in-process: bench/out/cluster.md
bench-cluster: venv
	$(PY) bench/bench_cluster.py

bench: venv
	$(PY) bench/bench_speed.py
	$(PY) bench/bench_speed.py --large
	$(PY) bench/bench_defaults.py
	$(PY) bench/bench_deep_speed.py
	$(PY) bench/bench_memory.py

# The bundled weights (backend/weights/*.pt + .json cards): PanAdapter's multi-sensor presets, fast (the
# default weights, about 35 min on a 2-core CPU) and universal (about an hour) (restoration pre-training on
# natural photographs and single bands, then the two stages on every training sensor of
# ../shared/data/pretraining mixed, over a classical base: scripts/train_multisensor.py), SSDiff on the FuseBox training scenes (main diffusion training, then L-BAF;
# about 15 min), then the INF trunk on the hyperspectral scenes (about 6 min); resumable (build/weights/);
# WEIGHTS_ARGS="--device cuda" on a GPU. Then the held-out scores of each go into its card.
weights: venv
	$(PY) scripts/train_multisensor.py --preset fast --iters 10000 --restore-iters 2000 $(WEIGHTS_ARGS)
	$(PY) scripts/train_multisensor.py $(WEIGHTS_ARGS)
	$(PY) scripts/train_ssdiff_weights.py $(WEIGHTS_ARGS)
	$(PY) scripts/train_inf_weights.py $(WEIGHTS_ARGS)
	$(PY) scripts/weights_card.py

# Quality table (bench/out/quality.md): every method and installed peer, every default scene of ../shared/data.
BENCH_QUALITY_ARGS ?=
bench-quality: venv
	$(PY) bench/bench_quality.py $(BENCH_QUALITY_ARGS)
	$(PY) bench/bench_multisensor.py --hqnr $(BENCH_MULTISENSOR_ARGS)
	$(PY) bench/bench_hyperspectral.py --loo-iterations 600

# The zip holds one folder, $(PACKAGE)/, with metadata.txt, LICENSE and resources/ inside it; no tests,
# caches, data or weights other than backend/weights/*.pt|*.json (and the registry's .py files there).
zip:
	@test -n "$(VERSION)" || { echo "no version= in metadata.txt" >&2; exit 1; }
	@rm -rf $(ZIP_BUILD) && mkdir -p $(ZIP_BUILD) $(DIST)
	@tar -C . --exclude='__pycache__' --exclude='*.pyc' --exclude='*.pyo' --exclude='.pytest_cache' \
		--exclude='tests' --exclude='test_*.py' --exclude='*.part.tif' --exclude='*.tif' --exclude='*.tiff' \
		--exclude='*.h5' --exclude='*.npy' --exclude='*.npz' --exclude='*.mat' \
		--exclude='$(PACKAGE)/metadata.txt' --exclude='$(PACKAGE)/backend/weights/*' \
		-cf - $(PACKAGE) | tar -C $(ZIP_BUILD) -xf -
	@if [ -d $(PACKAGE)/backend/weights ]; then \
		mkdir -p $(ZIP_BUILD)/$(PACKAGE)/backend/weights; \
		find $(PACKAGE)/backend/weights -maxdepth 1 -type f \( -name '*.pt' -o -name '*.json' -o -name '*.py' \) \
			-exec cp {} $(ZIP_BUILD)/$(PACKAGE)/backend/weights/ \; ; \
	fi
	@cp metadata.txt LICENSE $(ZIP_BUILD)/$(PACKAGE)/
	@cp -r resources $(ZIP_BUILD)/$(PACKAGE)/
	@rm -f $(ZIP)
	@cd $(ZIP_BUILD) && $(SYSTEM_PYTHON) -m zipfile -c $(ZIP) $(PACKAGE)
	@$(SYSTEM_PYTHON) -c 'import sys, zipfile; z = zipfile.ZipFile(sys.argv[1]); \
		n = [i for i in z.infolist() if not i.is_dir()]; \
		print(f"Wrote {sys.argv[1]}: {len(n)} files, {sum(i.file_size for i in n) / 1e6:.2f} MB unpacked")' $(ZIP)

clean:
	rm -rf build dist demo $(PROFILE) .pytest_cache .qgis-settings
	find . -path ./$(VENV) -prune -o -name __pycache__ -type d -exec rm -rf {} +
