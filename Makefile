# onceflow developer targets. Plain make + the go tool; nothing else needed.
GO      ?= go
PKGS    ?= ./...
TIMEOUT ?= 45m
# make chaos: length of the load and fault phase, and the seed of its schedule.
DURATION ?= 2m
SEED     ?= 1
FUZZTIME ?= 20s
CHAOS_BIN = .onceflow/bin/onceflow-chaos

.PHONY: all build test vet fmt fmt-check demo bench clean help chaos chaos-high chaos-payments chaos-bite fuzz

all: fmt-check vet build ## check formatting, vet and build

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-10s %s\n", $$1, $$2}'

build: ## compile every package and command
	$(GO) build $(PKGS)

test: ## run all tests with the race detector (starts private Postgres clusters and kfake brokers)
	$(GO) test -race -count=1 -timeout $(TIMEOUT) $(PKGS)

vet: ## go vet
	$(GO) vet $(PKGS)

fmt: ## gofmt every package in place
	$(GO) fmt $(PKGS)

fmt-check: ## fail if a Go file is not gofmt'ed
	@out=$$(gofmt -l .); if [ -n "$$out" ]; then echo "not gofmt'ed:"; echo "$$out"; exit 1; fi

demo: ## run the inventory sample (embedded Kafka broker and Postgres under ./.onceflow)
	$(GO) run ./samples/inventory

demo-payments: ## run the payments sample, a TigerBeetle-style ledger (embedded Kafka broker and Postgres under ./.onceflow/payments)
	$(GO) run ./samples/payments

bench: ## run the benchmark command (writes a report)
	$(GO) run ./cmd/onceflow-bench

chaos: ## fault harness: 3-5 service processes, broker, Postgres, seeded faults, exactly-once checker (DURATION=2m SEED=1)
	$(GO) build -o $(CHAOS_BIN) ./cmd/onceflow-chaos
	$(CHAOS_BIN) -duration $(DURATION) -seed $(SEED)

chaos-high: ## fault harness, high-load mode: 1500 cmds/s offered over 2,000 aggregates, 2s passivation, same checker (DURATION=2m SEED=1)
	$(GO) build -o $(CHAOS_BIN) ./cmd/onceflow-chaos
	$(CHAOS_BIN) -duration $(DURATION) -seed $(SEED) -high-load -require-all-faults=false

chaos-payments: ## fault harness on the payments sample: ledger invariants and every answer checked under the same faults (DURATION=2m SEED=1)
	$(GO) build -o $(CHAOS_BIN) ./cmd/onceflow-chaos
	$(CHAOS_BIN) -service payments -duration $(DURATION) -seed $(SEED) -require-all-faults=false

chaos-bite: ## the checker's self-test: the harness against protocol-breaking builds (offset before state; a skipped publish; a process manager with random command ids) must report violations
	ONCEFLOW_CHAOS_BITE=1 $(GO) test -count=1 -timeout 25m -run 'TestUnsafeBuildIsCaught|TestSkippedPublishIsCaught|TestRandomCommandIDsAreCaught' -v ./internal/chaos

fuzz: ## short fuzz runs of command decoding, batched replies and the HTTP API (FUZZTIME=20s each)
	$(GO) test -run '^$$' -fuzz FuzzCommandRecord -fuzztime $(FUZZTIME) ./actor
	$(GO) test -run '^$$' -fuzz FuzzBatchedReply -fuzztime $(FUZZTIME) ./actor
	$(GO) test -run '^$$' -fuzz FuzzAPI -fuzztime $(FUZZTIME) ./samples/inventory/api

clean: ## remove the demo's embedded state (stop the demo first)
	rm -rf .onceflow

# Integration suite through testkit (testcontainers or the local fallback).
INTEGRATION ?= ./actor/... ./testkit/... ./samples/inventory/... ./cmd/onceflow-devbroker/...

.PHONY: images test-docker test-local

images: ## build the local test images if missing (onceflow/postgres:15-local, onceflow/devbroker:local)
	scripts/build-test-images.sh

test-docker: ## integration suite through testcontainers (official images unless ONCEFLOW_TEST_*_IMAGE say otherwise)
	ONCEFLOW_TESTENV=docker $(GO) test -race -count=1 -timeout $(TIMEOUT) $(INTEGRATION)

test-local: ## integration suite on the local fallback: in-process broker, private Postgres, no Docker
	ONCEFLOW_TESTENV=local $(GO) test -race -count=1 -timeout $(TIMEOUT) $(INTEGRATION)
