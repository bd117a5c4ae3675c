# The two commands in README.md are `make run` and `make test`.
# Everything installs into .venv from pinned versions (pyproject.toml + constraints.txt).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: install run serve demo test test-fast lint typecheck bench bench-tools browser db-start db-stop kafka-start kafka-stop clean

install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	# torch first and alone: the CPU wheel on this machine satisfies the exact pin, so
	# nothing later pulls a CUDA build.
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -c constraints.txt -e '.[dev]'
	touch $(STAMP)

run: install
	$(BIN)/tradecore demo

serve: install
	$(BIN)/tradecore serve

demo: install
	$(BIN)/tradecore demo

db-start:
	bash infra/postgres.sh start

db-stop:
	bash infra/postgres.sh stop

# the dev/CI Kafka-protocol broker (Tansu, memory only); tests of the distributed
# deployment use it. Production runs Apache Kafka: see docs/operations.md.
kafka-start: install
	bash infra/kafka.sh start

kafka-stop:
	bash infra/kafka.sh stop

test: install db-start kafka-start browser
	$(BIN)/ruff check .
	$(BIN)/lint-imports
	$(BIN)/mypy aggregates kernels streams inference projections api infra
	$(BIN)/pytest -q --hypothesis-profile=ci

test-fast: install
	$(BIN)/pytest -q -m "not postgres and not slow"

lint: install
	$(BIN)/ruff check .
	$(BIN)/lint-imports
	$(BIN)/ruff format --check .

typecheck: install
	$(BIN)/mypy aggregates kernels streams inference projections api infra

# Debian's chromium runs the desk console's browser tests (tests/api/test_console_browser.py,
# through Playwright; its own browser download is not reachable). apt as root; without it
# those tests skip, or fail under TRADECORE_REQUIRE_DATA=1.
browser:
	@command -v /usr/bin/chromium >/dev/null || { test "$$(id -u)" = 0 && apt-get update -qq \
		&& apt-get install -y -qq chromium; } || echo "chromium missing: the console's browser tests will skip"

# wrk drives benchmarks/api_load.py (apt as root; without it that benchmark skips).
bench-tools:
	@command -v wrk >/dev/null || { test "$$(id -u)" = 0 && apt-get update -qq \
		&& apt-get install -y -qq wrk; } || echo "wrk missing: api_load.py will skip"

bench: install db-start kafka-start bench-tools
	$(BIN)/python benchmarks/write_path.py
	$(BIN)/python benchmarks/restart.py
	$(BIN)/python benchmarks/matching.py
	$(BIN)/python benchmarks/matching_stage.py
	$(BIN)/python benchmarks/codec.py
	$(BIN)/python benchmarks/audit_figures.py
	$(BIN)/python benchmarks/backtest.py
	$(BIN)/python benchmarks/intraday.py
	$(BIN)/python benchmarks/features.py
	$(BIN)/python benchmarks/inference.py
	$(BIN)/python benchmarks/projections.py
	$(BIN)/python benchmarks/api_load.py
	$(BIN)/python benchmarks/distributed.py
	$(BIN)/python benchmarks/streams.py

clean:
	rm -rf $(VENV) .local .pytest_cache .mypy_cache .ruff_cache .hypothesis
