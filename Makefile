# Shortcuts; each target only calls a script, so the scripts stay the one source of truth.
# ARGS are passed through, e.g. `make test ARGS="tests/unit -x"`, `make replay ARGS="--limit 2000"`.
IMAGE ?= nudge:dev
ARGS ?=

.PHONY: setup proto test replay lint image

setup:  ## create .venv and install the project with its dev extras
	scripts/setup

proto:  ## regenerate the Python stubs in clients/python from proto/
	scripts/gen-proto

test:  ## services, stub drift check, pytest
	scripts/test $(ARGS)

replay:  ## the Open Bandit Dataset replay, end to end
	scripts/run-replay $(ARGS)

lint:  ## shellcheck, ruff, mypy
	scripts/lint

image:  ## build the server image (needs a Docker engine)
	docker build -t $(IMAGE) .
