# Every target runs with Keras 2 selected before TensorFlow is imported (TFRS needs it).
export TF_USE_LEGACY_KERAS := 1
export TF_CPP_MIN_LOG_LEVEL := 2
export PYTHONUNBUFFERED := 1

PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
# Extracted MovieLens 100K to read instead of downloading it; empty (the default) downloads it
# into the cache ($$TWOTOWER_DATA_HOME or ~/.cache/twotower), checksum-verified.
DATA_DIR ?=
RUN_DIR ?= runs/ml100k
MODEL_BASE_PATH ?= models/twotower
STAMP := $(VENV)/.installed

.PHONY: setup test lint demo clean

setup: $(STAMP) system-deps

# Re-installs only when the project's dependency list changes, so `make setup` is idempotent and cheap.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

test: setup
	$(BIN)/python -m pytest -q

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

demo: setup
	$(BIN)/twotower demo $(if $(DATA_DIR),--data-dir $(DATA_DIR)) --run-dir $(RUN_DIR) --model-base-path $(MODEL_BASE_PATH)

clean:
	rm -rf $(VENV) runs models .pytest_cache

# System tools the tests need (kubectl renders Kustomize, PostgreSQL serves the SQL-source tests).
# Installed from Debian's packages when missing and when we can (root with apt-get); otherwise
# the tests that need them say what to install.
.PHONY: system-deps
system-deps:
	@missing=""; \
	command -v kubectl >/dev/null 2>&1 || missing="$$missing kubectl"; \
	command -v initdb >/dev/null 2>&1 || ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing="$$missing postgresql"; \
	if [ -n "$$missing" ] && [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		echo "installing:$$missing"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	fi
