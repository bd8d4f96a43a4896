# One install, one demo, one test command. Everything runs from the project's own .venv.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
FS := $(VENV)/bin/featurestream
PYTEST_ARGS ?=
# The stream materializer's Rust kernels (native/): rebuilt whenever their sources change.
NATIVE := native/Cargo.toml native/Cargo.lock native/pyproject.toml $(wildcard native/src/*.rs)

.PHONY: install services-up services-down test demo bench clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml $(NATIVE)
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	@command -v cargo >/dev/null || test -x "$$HOME/.cargo/bin/cargo" || { echo "native/ needs Rust's cargo (rustup.rs)"; exit 1; }
	PATH="$$PATH:$$HOME/.cargo/bin" $(PY) -m pip install -q ./native
	@touch $@

services-up: install
	$(FS) services up

services-down: install
	$(FS) services down

# Starts what is not already running, runs the suite, stops only what it started; exit code is pytest's.
test: install
	@started="$$($(FS) services up --print-started)" || exit $$?; \
	echo "services started for the tests: $${started:-none}"; \
	$(PY) -m pytest $(PYTEST_ARGS); rc=$$?; \
	if [ -n "$$started" ]; then $(FS) services down $$started; fi; \
	exit $$rc

demo: install
	$(FS) demo

# Benchmarks start the services they need (and leave them running); they print numbers, never assert.
# The serving benchmark's load comes from wrk (Debian's package).
bench: install
	@command -v wrk >/dev/null || apt-get install -y wrk || sudo apt-get install -y wrk
	@for b in bench/bench_*.py; do m=$$(basename "$$b" .py); echo "== $$m"; $(PY) -m "bench.$$m" || exit $$?; done

clean:
	rm -rf .services/*/data .pytest_cache feature_repo/data native/target
