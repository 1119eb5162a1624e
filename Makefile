# Shortcuts; the README's two commands (bin/run, bin/test) need no make.
.PHONY: run demo test lint bench bench-strategies bench-apply bench-pages bench-sampler bench-health bench-load bench-hosts bench-hosts-planning

run:
	bin/run

demo:
	bin/run --demo

test:
	bin/test

lint:
	.venv/bin/ruff check .
	.venv/bin/ruff format --check .
	.venv/bin/mypy .

bench: bench-strategies bench-pages bench-apply bench-sampler bench-health bench-load bench-hosts bench-hosts-planning

bench-strategies:
	.venv/bin/python -m bench.bench_strategies

bench-pages:
	.venv/bin/python -m bench.bench_pages

bench-apply:
	.venv/bin/python -m bench.bench_apply

bench-sampler:
	.venv/bin/python -m bench.bench_sampler

bench-health:
	.venv/bin/python -m bench.bench_health

bench-load:
	.venv/bin/python -m bench.bench_load

bench-hosts:
	.venv/bin/python -m bench.bench_hosts

bench-hosts-planning:
	.venv/bin/python -m bench.bench_hosts_planning
