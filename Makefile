# Two commands on a fresh machine (README): `make demo` and `make test` (`make test-fast` for
# developers: the suite without its end-to-end runs).
# Both install what they need first: a venv with the CPU build of torch, the
# project, the viewer's npm packages, Debian's chromium for browser tests, and a
# C compiler for the teacher's CPU kernels (built on first use).
PY := .venv/bin/python
APT := $(shell [ "$$(id -u)" = 0 ] && echo apt-get || echo sudo apt-get)

.PHONY: setup demo test test-fast serve chromium cc lint

.venv/.ready: pyproject.toml
	python3 -m venv .venv
	.venv/bin/pip install -q --upgrade pip
	# the CPU build (local wheel here); GPU users: install their CUDA torch first
	.venv/bin/python -c "import torch" 2>/dev/null || .venv/bin/pip install -q torch==2.13.0
	.venv/bin/pip install -q -e ".[test]"
	touch $@

site/vendor/.ready: site/package.json site/package-lock.json
	npm ci --prefix site --no-audit --no-fund
	touch $@

chromium:
	@command -v chromium >/dev/null || $(APT) install -y chromium || ($(APT) update && $(APT) install -y chromium)

cc:
	@command -v cc >/dev/null || command -v gcc >/dev/null || $(APT) install -y gcc || ($(APT) update && $(APT) install -y gcc)

setup: .venv/.ready site/vendor/.ready chromium cc

# The main job: the toy scene end to end, then the site is ready to serve.
demo: setup
	$(PY) -m pipeline run configs/toy.yaml

test: setup
	$(PY) -m pytest -v tests

# the suite without the end-to-end runs (marker `slow`): what a developer runs after each change
test-fast: setup
	$(PY) -m pytest -q -m "not slow" tests

serve:
	$(PY) -m http.server -d site 8000

lint: .venv/.ready
	.venv/bin/ruff check pipeline teacher distill student export report tests bench
