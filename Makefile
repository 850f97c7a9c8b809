# The two commands of the README: `make demo` and `make test`. Both install what they need first.
PYBUILD := .venv/bin/pybuild

.PHONY: demo test test-fast bench

demo:
	bash scripts/setup.sh demo
	$(PYBUILD) -t pybuild/busybox testdata/busybox
	$(PYBUILD) -f testdata/app/Dockerfile -t me/app testdata/app
	$(PYBUILD) run --rm me/app

test:
	bash scripts/setup.sh test
	.venv/bin/pytest

test-fast:
	bash scripts/setup.sh test
	.venv/bin/pytest -m "not slow"

bench:
	bash scripts/setup.sh bench
	.venv/bin/python -m bench $(BENCH_ARGS)
