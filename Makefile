# onceflow developer targets. Plain make + the go tool; nothing else needed.
GO      ?= go
PKGS    ?= ./...
TIMEOUT ?= 45m

.PHONY: all build test vet fmt fmt-check demo bench clean help

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

bench: ## run the benchmark command (writes a report)
	$(GO) run ./cmd/onceflow-bench

clean: ## remove the demo's embedded state (stop the demo first)
	rm -rf .onceflow
