# Bulwark — the two commands a newcomer needs are `make run` and `make test`.
SHELL := /bin/bash
GO ?= go
BIN := bin/bulwark
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -s -w -X main.version=$(VERSION)
FUZZTIME ?= 5s
BENCH_CONCURRENCY ?= 16
BENCH_REQUESTS ?= 50000
GHZ_VERSION ?= v0.120.0
# Jaeger v2 all-in-one for the tracing end-to-end test; its version is pinned
# in tools/jaeger/go.mod (a module of its own: go get -tool ...@v1.76.0).
JAEGER := .cache/bin/jaeger

DATA ?= ../shared/data

.PHONY: train eval all build run test vet fmt-check go-test fuzz bench bench-go bench-load lint tools clean jaeger e2e-jaeger proto lint-proto proto-tools

all: build

## build: compile bin/bulwark
build:
	$(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN) ./cmd/bulwark

## run: build and serve on the embedded defaults (gRPC 127.0.0.1:9191, admin 127.0.0.1:9192)
run: build
	./$(BIN) serve --log-format text

## test: vet, gofmt check, and every test (unit, Rego, fuzz seeds, end-to-end) with the race detector
test: vet fmt-check go-test

vet:
	$(GO) vet ./...

fmt-check:
	@out="$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go'))"; \
	if [ -n "$$out" ]; then echo "gofmt needed on:"; echo "$$out"; exit 1; fi

go-test:
	@command -v redis-server >/dev/null || { \
		echo "redis-server is needed by the tests and is not installed."; \
		echo "Install it with: sudo apt-get update && sudo apt-get install -y redis-server"; exit 1; }
	$(GO) test -race -shuffle=on -count=1 -timeout 20m ./...

## fuzz: run every fuzz target for FUZZTIME (default 5s; a count such as 1000x in CI; e.g. make fuzz FUZZTIME=10m)
fuzz:
	@set -e; for pkg in $$($(GO) list ./...); do \
		for target in $$($(GO) test -list '^Fuzz' $$pkg 2>/dev/null | grep '^Fuzz' || true); do \
			echo "== $$pkg $$target ($(FUZZTIME))"; \
			$(GO) test $$pkg -run '^$$' -fuzz "^$$target$$" -fuzztime $(FUZZTIME); \
		done; \
	done

## bench: in-process Go benchmarks, then a real gRPC load with ghz against the binary
bench: bench-go bench-load

bench-go:
	$(GO) test -run '^$$' -bench . -benchmem -count 3 ./internal/extauthz/ ./internal/policy/

bench-load: build tools
	BULWARK=./$(BIN) GHZ=$$($(GO) env GOPATH)/bin/ghz CONCURRENCY=$(BENCH_CONCURRENCY) \
		REQUESTS=$(BENCH_REQUESTS) ./test/load/ghz.sh

## jaeger: build Jaeger v2 all-in-one into .cache/bin/jaeger (minutes the first time; see README, Tracing)
jaeger: $(JAEGER)

$(JAEGER): tools/jaeger/go.mod tools/jaeger/go.sum
	@mkdir -p $(dir $(JAEGER))
	cd tools/jaeger && $(GO) build -trimpath -o $(CURDIR)/$(JAEGER) github.com/jaegertracing/jaeger/cmd/jaeger

## e2e-jaeger: the end-to-end tracing test against a real Jaeger (make test skips it unless Jaeger is built)
e2e-jaeger: jaeger
	JAEGER_BIN=$(CURDIR)/$(JAEGER) $(GO) test -race -count=1 -run '^TestJaeger$$' -v ./test/e2e/

## tools: install the load generator used by make bench
tools:
	@test -x $$($(GO) env GOPATH)/bin/ghz || $(GO) install github.com/bojand/ghz/cmd/ghz@$(GHZ_VERSION)

## train: refit the prompt-injection model from $(DATA)/prompt-injection/train.jsonl (deterministic)
train:
	$(GO) run ./internal/detect/cmd/train -data $(DATA)/prompt-injection/train.jsonl -out internal/detect/model.bin

## eval: precision, recall, F1, FPR and MB/s of every detector on $(DATA) (cross-validated for injection)
eval:
	$(GO) run ./internal/detect/cmd/eval -data $(DATA)

## lint: static checks
lint: vet fmt-check

clean:
	rm -rf bin

# --- Bulwark's own gRPC API (proto/bulwark/v1), managed with buf -------------
# Tools go to bin/tools at pinned versions, so generation is reproducible and
# needs no remote plugins: protoc-gen-go at go.mod's google.golang.org/protobuf
# version, protoc-gen-go-grpc and buf at the versions below.
PROTO_TOOLS := $(CURDIR)/bin/tools
BUF_VERSION ?= v1.75.0
PROTOC_GEN_GO_GRPC_VERSION ?= v1.6.2
# buf breaking compares with the latest release tag, or main when there is none.
BUF_AGAINST_REF ?= $(shell git describe --tags --abbrev=0 2>/dev/null || echo main)

## proto-tools: install buf, protoc-gen-go and protoc-gen-go-grpc into bin/tools
proto-tools:
	@mkdir -p $(PROTO_TOOLS)
	@want=$$($(GO) list -m -f '{{.Version}}' google.golang.org/protobuf); \
	[ "$$($(PROTO_TOOLS)/protoc-gen-go --version 2>/dev/null)" = "protoc-gen-go $$want" ] || \
		GOBIN=$(PROTO_TOOLS) $(GO) install google.golang.org/protobuf/cmd/protoc-gen-go
	@[ "$$($(PROTO_TOOLS)/protoc-gen-go-grpc --version 2>/dev/null)" = "protoc-gen-go-grpc $(PROTOC_GEN_GO_GRPC_VERSION:v%=%)" ] || \
		GOBIN=$(PROTO_TOOLS) $(GO) install google.golang.org/grpc/cmd/protoc-gen-go-grpc@$(PROTOC_GEN_GO_GRPC_VERSION)
	@[ "$$($(PROTO_TOOLS)/buf --version 2>/dev/null)" = "$(BUF_VERSION:v%=%)" ] || \
		GOBIN=$(PROTO_TOOLS) $(GO) install github.com/bufbuild/buf/cmd/buf@$(BUF_VERSION)

## proto: regenerate the Go code beside proto/bulwark/v1/*.proto (commit the result)
proto: proto-tools
	PATH="$(PROTO_TOOLS):$$PATH" $(PROTO_TOOLS)/buf generate

## lint-proto: buf lint, buf breaking against the last tag (or main), generated code up to date
lint-proto: proto-tools
	$(PROTO_TOOLS)/buf lint
	@ref='$(BUF_AGAINST_REF)'; \
	if git ls-tree -r --name-only "$$ref" -- proto 2>/dev/null | grep -q '\.proto$$'; then \
		echo "buf breaking --against .git#ref=$$ref"; \
		$(PROTO_TOOLS)/buf breaking --against ".git#ref=$$ref"; \
	else \
		echo "buf breaking: $$ref has no .proto files yet; nothing to break"; \
	fi
	@tmp=$$(mktemp -d); trap 'rm -rf "$$tmp"' EXIT; \
	PATH="$(PROTO_TOOLS):$$PATH" $(PROTO_TOOLS)/buf generate -o "$$tmp" && \
	for f in "$$tmp"/proto/bulwark/v1/*.go; do \
		cmp -s "$$f" proto/bulwark/v1/$$(basename "$$f") || { echo "generated code out of date: run make proto ($$(basename "$$f"))"; exit 1; }; \
	done; \
	n=$$(ls proto/bulwark/v1/*.pb.go | wc -l); [ "$$n" = "$$(ls "$$tmp"/proto/bulwark/v1/*.pb.go | wc -l)" ] || { echo "stale generated files in proto/bulwark/v1"; exit 1; }
