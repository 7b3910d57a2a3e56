# medgate: `make demo` runs the gateway end to end; `make test` runs the whole suite.
# Both install first (Debian packages, .venv with the CPU torch build) when needed.

VENV := .venv
BIN := $(VENV)/bin

.PHONY: install demo test test-long test-deploy lint models bench gpu-wheels clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml scripts/install.sh
	bash scripts/install.sh

demo: install
	$(BIN)/medgate demo

# The whole suite: the lint first, the main tests, then the container tests (image from a
# debootstrapped base, `docker run`, the compose stack, a head + worker Ray cluster of containers).
test: lint
	$(BIN)/python -m pytest
	bash deploy/scripts/test-deploy.sh

test-long: install
	$(BIN)/python -m pytest --long

# Only the container tests (installs docker.io, debootstrap, compose; ~3.5 min warm, ~7.5 cold).
test-deploy: install
	bash deploy/scripts/test-deploy.sh

# ruff (lint + format) over src, tests and bench; mypy over src (settings: pyproject [tool.mypy]).
lint: install
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench
	$(BIN)/mypy

models: install
	$(BIN)/python -m medgate.training.make_models

bench: install
	$(BIN)/python bench/ingest.py
	$(BIN)/python bench/serving.py
	$(BIN)/python bench/cds.py

# Wheels for scripts/gpu-check.sh on a lent GPU machine (Python 3.12 there; pins = this venv's).
GPU_WHEELS = pydantic pydantic-core pydantic-settings python-dotenv annotated-types \
	typing-inspection pydicom monai highdicom pyjpegls
gpu-wheels: install
	rm -rf .whl && $(BIN)/python -m pip download -q --no-deps --only-binary=:all: \
	  --python-version 3.12 --implementation cp --platform manylinux_2_28_x86_64 \
	  --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .whl \
	  $$($(BIN)/python -m pip list --format=freeze | grep -iE "^($$(echo $(GPU_WHEELS) | \
	    sed -e 's/-/[-_]/g' -e 's/ /|/g'))==")

clean:
	rm -rf $(VENV) var demo-output .pytest_cache .ruff_cache
