# Everything the project needs is installed from here: a fresh clone runs `make demo` / `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
DEMO := demo_out
PYTEST_WORKERS ?= 2

.PHONY: install demo test lint bench samples clean

export COUNT := import json, sys; print(json.load(sys.stdin)["count"])

# constraints.txt pins the versions tested together: a fresh install resolves in seconds
# instead of backtracking through ray / s3fs / moto releases.
# Package downloads break off on flaky networks (a wheel cut at 42 of 55 MB failed a whole run):
# pip retries and resumes each download, and the whole step is tried again with a growing pause.
export PIP_RETRIES := 10
export PIP_RESUME_RETRIES := 20
RETRY := sh -c 'for n in 1 2 3 4; do "$$@" && exit 0; echo "attempt $$n failed; retrying in $$((n * 15)) s" >&2; sleep $$((n * 15)); done; "$$@"' retry

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(RETRY) $(PY) -m pip install --quiet --upgrade pip
	$(RETRY) $(PY) -m pip install --quiet -c constraints.txt -e '.[all,ray,dev]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	@rm -rf $(DEMO) && mkdir -p $(DEMO)
	$(VENV)/bin/vecferry convert sample_data/vectors.npy $(DEMO)/points.parquet \
		--ids sample_data/ids.npy --payloads sample_data/payloads.jsonl
	$(VENV)/bin/vecferry convert $(DEMO)/points.parquet $(DEMO)/points.jsonl
	$(VENV)/bin/vecferry inspect $(DEMO)/points.jsonl
	$(VENV)/bin/vecferry convert $(DEMO)/points.parquet qdrant-local://$(DEMO)/qdrant_data/docs \
		--distance Dot
	$(VENV)/bin/vecferry convert qdrant-local://$(DEMO)/qdrant_data/docs \
		$(DEMO)/from_qdrant.parquet
	$(VENV)/bin/vecferry verify $(DEMO)/points.parquet $(DEMO)/from_qdrant.parquet
	@printf 'points: source %s, qdrant-local %s\n' \
		"$$($(VENV)/bin/vecferry inspect $(DEMO)/points.parquet --json | $(PY) -c "$$COUNT")" \
		"$$($(VENV)/bin/vecferry inspect qdrant-local://$(DEMO)/qdrant_data/docs --json \
			| $(PY) -c "$$COUNT")"

test: $(STAMP)
	$(PY) -m ruff check src tests benchmarks sample_data
	$(PY) -m pytest -n $(PYTEST_WORKERS) -q

lint: $(STAMP)
	$(PY) -m ruff check src tests benchmarks sample_data

bench: $(STAMP)
	$(PY) benchmarks/run.py

samples: $(STAMP)
	$(PY) sample_data/make_samples.py

clean:
	rm -rf $(VENV) $(DEMO) bench_out .pytest_cache .ruff_cache
