# logcatch — the two commands a newcomer needs: `make run` and `make test`.
SHELL := /bin/bash
CARGO ?= cargo

.PHONY: run test deps build lint fmt deny check-config demo bench bench-deps bench-node soak bench-fleet clean

## Run the agent on config/local.yaml (example logs + a live writer → stdout). Ctrl-C stops it.
run: build
	scripts/run-local.sh

build:
	$(CARGO) build

## Install the test tools (protoc, etcd, tansu, cargo-deny), then format check, clippy,
## the import-cycle lint, cargo deny (licenses, bans, sources, advisories) and every test;
## the last line counts them (`tests: N passed, N failed, N skipped`).
test: deps
	$(CARGO) fmt --check
	$(CARGO) clippy --all-targets -- -D warnings
	scripts/import-cycles.py
	scripts/deny.sh
	scripts/test.sh

## The whole product: local etcd + tansu broker, a log declared in etcd, records read back from Kafka.
demo:
	scripts/demo.sh

## Benchmarks against baselines and peers measured in the same run; rewrites BENCHMARKS.md
## (about 15–20 minutes on 2 shared cores; QUICK=1 for a short trial that leaves BENCHMARKS.md alone).
bench: deps bench-deps
	scripts/bench.sh

## The loads a node has (issue #26 §2): 100 files × 100 lines/s, 1,000 × 10, 10,000 × 1 and
## 300 CRI files with P/F fragments into Kafka (tansu, lz4), logcatch and Fluent Bit side by
## side in one run: CPU per line, RSS, append → Kafka latency, start-up; 1,000 × 10 against
## logcatch's bulk figure measured in the same run (about 17 minutes).
bench-node: deps bench-deps
	bench/node.sh

## The soak of issue #23: a simulated kubelet (300 pods, churn, rotation, CRI fragments),
## the broker frozen 5 minutes, an etcd password rotation; every line accounted for from
## Kafka, RSS / CPU / fds / checkpoints / deleted files / lag plotted (30 minutes; QUICK=1: 3).
soak: deps bench-deps
	bench/soak.sh

## The fleet benchmark of issue #24: N simulated agents (the real etcd source and status
## writer) on one real etcd per row; convergence p50/p99/max, etcd CPU / memory / writes
## (ROWS="100:1 1000:1 ..." as AGENTS:KEYS; about 15 minutes).
bench-fleet: deps
	bench/fleet.sh

## Install the benchmark peers (kcat, rsyslog + omkafka, Fluent Bit built once from source into
## ~/.cache/logcatch, librdkafka from PyPI), perf, gnuplot.
bench-deps:
	scripts/bench-deps.sh

## Install what the tests need (idempotent; tansu is built once into ~/.cache/logcatch).
deps:
	scripts/deps.sh

## cargo deny check; advisories from ../shared/advisory-db when present (offline).
deny:
	scripts/deny.sh

lint:
	$(CARGO) fmt --check
	$(CARGO) clippy --all-targets -- -D warnings
	scripts/import-cycles.py

fmt:
	$(CARGO) fmt

check-config: build
	target/debug/logcatch check --config config/local.yaml

clean:
	$(CARGO) clean
	rm -rf data

## Build the container image and run it (podman, local base images; needs root): scripts/image-test.sh
.PHONY: image-test
image-test:
	scripts/image-test.sh
