.PHONY: help setup demo test up down bench
help:  ## Show the targets
	@grep -E '^[a-z]+:.*##' $(MAKEFILE_LIST) | sed 's/:.*## /\t/'
setup:  ## Install ClickHouse, the virtualenv and the pinned packages
	bash scripts/setup.sh
demo:  ## Set up, start the local stack and run the demo
	bash scripts/demo.sh
test:  ## Set up, then ruff, mypy and the whole test suite
	bash scripts/test.sh
up:  ## Start the local stack
	.venv/bin/omniseg dev up
down:  ## Stop the local stack
	.venv/bin/omniseg dev down
bench:  ## Run the ingest benchmark on the local stack
	.venv/bin/omniseg bench ingest
