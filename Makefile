# `make demo` runs the main job, `make test` the test suite; both set up .venv first.
PY := .venv/bin/python
VENV_STAMP := .venv/.glrast-installed

.PHONY: demo test lint bench venv

venv: $(VENV_STAMP)

$(VENV_STAMP): pyproject.toml
	python3 -m venv .venv
	$(PY) -m pip install -q --upgrade pip
	# the CPU build of torch (a plain `torch` would pull a multi-GB CUDA build)
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[test,examples]'
	touch $@

demo: $(VENV_STAMP)
	$(PY) -m glrast demo cube --out out/cube

test: $(VENV_STAMP)
	$(PY) -m ruff check glrast tests examples benchmarks
	$(PY) -m pytest -q

bench: $(VENV_STAMP)
	$(PY) benchmarks/bench_raster.py
