# `make demo` runs the main job, `make test` the test suite (what CI runs); both set up .venv first.
PY := .venv/bin/python
VENV_STAMP := .venv/.glrast-installed
# A second, small environment with triton beside CPU torch, for tests/beside_triton (glrast from the checkout).
TRITON_PY := .venv-triton/bin/python
TRITON_STAMP := .venv-triton/.glrast-installed
# The kernel tests once more with the host build under AddressSanitizer + UBSan.
SANITIZE := GLRAST_CACHE_DIR=$(CURDIR)/.venv/sanitizer-cache \
	GLRAST_HOST_CFLAGS="-fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer" \
	LD_PRELOAD="$$(c++ -print-file-name=libasan.so) $$(c++ -print-file-name=libubsan.so)" \
	ASAN_OPTIONS=detect_leaks=0
KERNEL_TESTS := tests/test_raster.py tests/test_depth_peeler.py tests/test_interpolate.py tests/test_texture.py \
	tests/test_texture_limits.py tests/test_antialias.py

# The window tests start their own X server (Xvfb), send it input with xdotool and photograph its
# windows with ImageMagick's `import`; glfw's windows need Mesa's GLX. Installed through apt when missing.
X_TOOLS := Xvfb:xvfb xdotool:xdotool import:imagemagick
SUDO := $(shell [ "$$(id -u)" = 0 ] || command -v sudo)

.PHONY: demo test test-sanitizers test-triton lint bench venv system-packages

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

lint: $(VENV_STAMP)
	$(PY) -m ruff check glrast tests examples benchmarks

$(TRITON_STAMP): tests/beside_triton/requirements.txt
	python3 -m venv .venv-triton
	$(TRITON_PY) -m pip install -q -r tests/beside_triton/requirements.txt
	touch $@

system-packages:
	@missing=""; \
	for pair in $(X_TOOLS); do command -v $${pair%%:*} >/dev/null || missing="$$missing $${pair#*:}"; done; \
	dpkg -s libglx-mesa0 libgl1 >/dev/null 2>&1 || missing="$$missing libglx-mesa0 libgl1"; \
	if [ -n "$$missing" ]; then \
		echo "installing$$missing"; \
		$(SUDO) apt-get update -q && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -q --no-install-recommends $$missing; \
	fi

test: lint system-packages $(VENV_STAMP)
	$(PY) -m pytest -q
	$(MAKE) test-sanitizers
	$(MAKE) test-triton

test-sanitizers: $(VENV_STAMP)
	$(SANITIZE) $(PY) -m pytest -q -p no:cacheprovider $(KERNEL_TESTS)

test-triton: $(TRITON_STAMP)
	PYTHONPATH=$(CURDIR) $(TRITON_PY) -m pytest -q -p no:cacheprovider tests/beside_triton

bench: $(VENV_STAMP)
	$(PY) benchmarks/bench_raster.py
