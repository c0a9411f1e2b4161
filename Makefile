# Den: two commands set up everything on a fresh machine: `make demo` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export LITELLM_LOCAL_MODEL_COST_MAP := True
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: dev test test-unit lint crds image image-operator demo bench clean

dev: $(STAMP) ## venv with Den installed editable, test, k8s and gateway extras

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test,k8s,gateway]'
	touch $(STAMP)

# pytest exits 5 when it collects nothing: that is a failure, not a pass. Test files run on
# PYTEST_WORKERS workers (pytest-xdist; each test its own installation, a module's tests on one
# worker): on 2 cores the suite takes 7 minutes instead of 20, the Docker tests being mostly waiting.
PYTEST_WORKERS ?= 2
test: dev ## ruff, then the whole suite (Docker tests too; DEN_REQUIRE_DOCKER=1 makes them mandatory)
	$(BIN)/ruff check .
	$(BIN)/pytest -q -n $(PYTEST_WORKERS) --dist loadfile --durations=15 $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests: failing" >&2; exit 1; fi; exit $$rc

test-unit: dev
	$(BIN)/pytest -q tests/unit $(PYTEST_ARGS)

lint: dev
	$(BIN)/ruff check .

crds: dev ## regenerate crds/ from the pydantic models
	$(BIN)/python -m den.api.crd > crds/agents.den.dev.yaml
	cp crds/agents.den.dev.yaml charts/den/crds/agents.den.dev.yaml

image: dev ## den-runtime and den-gateway (python:3.12-slim, or a Debian base built offline); skipped when unchanged
	PYTHON=$(BIN)/python bash hack/build-image.sh

image-operator: dev ## den-operator (the Helm chart's operator: the k8s extra) on top of the image target's two
	PYTHON=$(BIN)/python bash hack/build-image.sh --operator

demo: ## venv and images (built side by side), the hello agent up and answering
	PYTHON=$(PYTHON) bash hack/demo.sh

bench: dev image ## measurements as JSON under bench/results/ plus a table
	$(BIN)/python hack/bench.py

clean:
	rm -rf $(VENV) .den-build build *.egg-info
