# gaussdiff: `make book` builds the book, `make test` runs the tests. Both set up .venv first.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PROFILE ?= cpu
# training processes before the notebooks run: auto = 1 on a GPU, 2 on a CPU (two runs at a time, a core each)
JOBS ?= auto
# trained networks, Gaussian statistics and downloads live in the library's one cache, $GAUSSDIFF_CACHE (default
# ~/.cache/gaussdiff), shared with Jupyter and Colab sessions: a rebuild after a prose change trains nothing
export PYDEVD_DISABLE_FILE_VALIDATION := 1

.PHONY: book test venv data assets notebooks html smoke-book bench clean

venv: $(STAMP)
$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade-strategy only-if-needed -c constraints.txt -e ".[book,test]"
	touch $@

data: $(STAMP)
	$(PY) -m gaussdiff_lib data

# pinned, checksummed MathJax, require.js and widget manager for a book that renders offline
assets: $(STAMP)
	$(PY) -m gaussdiff_lib assets

# the build's time record (gaussdiff_lib.chapters.timings): set-up, training, execution and rendering, each run's
# and each notebook's seconds; the Status page shows it
TIMINGS := _build/timings.json

notebooks: data
	$(PY) -m gaussdiff_lib train --profile $(PROFILE) --jobs $(JOBS) --timings $(TIMINGS)
	$(PY) -m gaussdiff_lib execute --all --profile $(PROFILE) --out book --jobs $(JOBS) --timings $(TIMINGS)

html: assets
	$(VENV)/bin/jupyter-book build . --warningiserror --nitpick --keep-going

book:
	@mkdir -p _build && date +%s > _build/.book-started
	$(MAKE) venv data assets
	$(PY) -m gaussdiff_lib timings start --since _build/.book-started --phase "set-up (install, data, assets)"
	$(MAKE) notebooks
	$(MAKE) html
	$(PY) -m gaussdiff_lib timings mark --phase rendering
	$(PY) -m gaussdiff_lib timings show
	@echo "book: $(CURDIR)/_build/html/index.html"

# tests/test_book.py executes the notebooks under the smoke profile into _build/smoke/src and
# builds that book with warnings as errors; tests/test_browser.py loads its pages in headless Chromium
# with the network off (screenshots in _build/screenshots); nbval then re-runs the executed notebooks.
test: data assets
	$(PY) -m pytest tests
	$(PY) -m pytest --nbval-lax -p no:cacheprovider _build/smoke/src/book/*.ipynb

bench: $(STAMP)
	$(PY) benchmarks/gaussian_sampling.py
	$(PY) benchmarks/empirical_memory.py
	$(PY) benchmarks/linear_fit.py
	$(PY) benchmarks/readme_example.py
	$(PY) benchmarks/diagnose.py
	$(PY) benchmarks/training_cost.py

clean:
	rm -rf _build book/*.ipynb
