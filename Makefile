# Bulwark — the two commands a newcomer needs are `make run` and `make test`.
SHELL := /bin/bash
GO ?= go
# The Go toolchain is go.mod's toolchain line (go1.27.3: the standard library
# fixes that govulncheck asks for). Machines whose Go is set to
# GOTOOLCHAIN=local ignore that line, so every target exports it; the go
# command fetches it from the module proxy once (about 76 MB). Override with
# GOTOOLCHAIN=local make ... to use the machine's own Go.
GOTOOLCHAIN ?= $(shell sed -n 's/^toolchain //p' go.mod)
export GOTOOLCHAIN
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

.PHONY: train traindata eval all build run test vet fmt-check go-test fuzz bench bench-go bench-load lint tools clean jaeger e2e-jaeger proto lint-proto proto-tools lint-tools staticcheck gosec vulndb vulncheck

all: build

## build: compile bin/bulwark
build:
	$(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN) ./cmd/bulwark

## run: build and serve on the embedded defaults (Envoy gRPC 127.0.0.1:9191, API 127.0.0.1:9193, admin 127.0.0.1:9192)
run: build
	./$(BIN) serve --log-format text

## test: vet, gofmt check, and every test (unit, Rego, fuzz seeds, end-to-end) with the race detector
test: vet fmt-check go-test

vet:
	$(GO) vet ./...

fmt-check:
	@out="$$("$$($(GO) env GOROOT)/bin/gofmt" -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go'))"; \
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
			echo "== $$(date -u +%T) $$pkg $$target ($(FUZZTIME))"; \
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

## train: refit the prompt-injection model from $(DATA)/prompt-injection/train.jsonl into internal/detect/model.bin (deterministic; tools/train)
train:
	$(GO) run ./tools/train -data $(DATA)/prompt-injection/train.jsonl -out internal/detect/model.bin

## traindata: regenerate internal/detect/traindata/indirect.jsonl (planted indirect injections; tools/genindirect, seed 1)
traindata:
	$(GO) run ./tools/genindirect -seed 1 -out internal/detect/traindata/indirect.jsonl

## eval: precision, recall, F1, FPR and MB/s of every detector on $(DATA) (cross-validated for injection; tools/eval)
eval:
	$(GO) run ./tools/eval -data $(DATA)

## lint: vet, gofmt, lint-proto, staticcheck, gosec and govulncheck (offline database); tools pinned below
lint: vet fmt-check lint-proto staticcheck gosec vulncheck

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

# --- Static analysis and vulnerability scanning (make lint) -----------------
# Tools go to bin/tools at pinned versions, like the proto tools, and are
# rebuilt when their version or the Go toolchain changes (they type-check with
# the go/types they were built with). indexdb is golang.org/x/vulndb's own
# command that indexes its OSV entries into the database govulncheck reads.
LINT_TOOLS := $(CURDIR)/bin/tools
STATICCHECK_VERSION ?= v0.8.2
GOSEC_VERSION ?= v2.30.0
GOVULNCHECK_VERSION ?= v1.9.0
# The Go vulnerability database as of this golang.org/x/vulndb commit. To see
# newer advisories, bump it to what `go list -m golang.org/x/vulndb@master` prints.
VULNDB_VERSION ?= v0.0.0-20261105234957-e22db6528018
VULNDB := $(CURDIR)/.cache/vulndb/$(VULNDB_VERSION)
JQ_HINT := jq is needed by make vulndb and vulncheck; install it with: sudo apt-get install -y jq
LINT_TOOL_PKGS := honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK_VERSION) \
	github.com/securego/gosec/v2/cmd/gosec@$(GOSEC_VERSION) \
	golang.org/x/vuln/cmd/govulncheck@$(GOVULNCHECK_VERSION) \
	golang.org/x/vulndb/cmd/indexdb@$(VULNDB_VERSION)
# Reachable standard-library vulnerabilities accepted for now: none. The
# toolchain (go.mod's toolchain line) is past every fix the database of
# VULNDB_VERSION knows. Should a new one appear before a Go release fixes it,
# list its ID here with a comment saying why (make vulncheck says when an
# accepted ID is no longer found). Anything else fails.
GOVULNCHECK_STDLIB_ACCEPT :=

## lint-tools: install staticcheck, gosec, govulncheck and indexdb into bin/tools (the missing or stale ones, in parallel)
lint-tools:
	@mkdir -p $(LINT_TOOLS); want_go=$$($(GO) env GOVERSION); pids=; \
	for pv in $(LINT_TOOL_PKGS); do \
		pkg=$${pv%@*}; ver=$${pv#*@}; \
		have=$$($(GO) version -m $(LINT_TOOLS)/$${pkg##*/} 2>/dev/null | awk 'NR == 1 {g = $$2} $$1 == "mod" {print g, $$3}'); \
		[ "$$have" = "$$want_go $$ver" ] && continue; \
		echo "go install $$pv"; GOBIN=$(LINT_TOOLS) $(GO) install "$$pv" & pids="$$pids $$!"; \
	done; \
	for p in $$pids; do wait $$p || exit 1; done

## staticcheck: staticcheck's default checks on every package, tests included
staticcheck: lint-tools
	$(LINT_TOOLS)/staticcheck ./...

# gosec skips _test.go files (its default): tests write fixtures, start
# redis-server and the binary, and hold throwaway keys by design, which gives
# about a hundred findings with no security value. Generated code is skipped
# too. Every suppression must name its rule and say why: // #nosec G304 -- why
# G115 (integer narrowing) is not checked in internal/detect's own files: the
# detectors narrow offsets to int32 and table entries to uint16/uint8 on
# purpose (dense tables on the hot path), with bounds checked where the tables
# are built (ac.go's outFlag guard), over texts that every entry point keeps
# under 2 GiB (max_recv_msg_bytes, scan's line limit), and take bytes out of
# words by truncation: some forty sites that change with every optimisation.
GOSEC_EXCLUDE_RULES := internal/detect/[^/]+\.go:G115
## gosec: security checks of the non-test, non-generated code
gosec: lint-tools
	$(LINT_TOOLS)/gosec -quiet -color=false -exclude-generated -nosec-require-rules -nosec-require-justification \
		-exclude-rules='$(GOSEC_EXCLUDE_RULES)' ./...

# data/osv carries placeholder timestamps (vulndb's own build sets them from git
# history), so db.json gets the commit time of VULNDB_VERSION instead; the .gz
# copies are dropped because a file:// database is read uncompressed.
## vulndb: index golang.org/x/vulndb's data/osv into .cache/vulndb, the offline database make vulncheck reads
vulndb: $(VULNDB)/index/db.json

$(VULNDB)/index/db.json: | lint-tools
	@command -v jq >/dev/null || { echo "$(JQ_HINT)"; exit 1; }
	@set -euo pipefail; mkdir -p $(dir $(VULNDB)); \
	info=$$($(GO) mod download -json golang.org/x/vulndb@$(VULNDB_VERSION)); \
	src=$$(jq -r .Dir <<<"$$info"); modified=$$(jq -r .Time "$$(jq -r .Info <<<"$$info")"); \
	tmp=$$(mktemp -d $(VULNDB).tmp.XXXXXX); trap 'rm -rf "$$tmp"' EXIT; \
	echo "indexing $$(ls "$$src/data/osv" | wc -l) OSV entries of golang.org/x/vulndb@$(VULNDB_VERSION)"; \
	$(LINT_TOOLS)/indexdb -vulns "$$src/data/osv" -out "$$tmp"; \
	find "$$tmp" -name '*.json.gz' -delete; \
	printf '{"modified":"%s"}\n' "$$modified" >"$$tmp/index/db.json"; \
	rm -rf $(VULNDB); mv "$$tmp" $(VULNDB)

# Over govulncheck's JSON stream: one line per reachable (called) vulnerability
# and module (id, module, version, fixed version, summary), then the IDs found
# only in imported packages or required modules.
JQ_REACHABLE := (map(select(.osv)) | map({key: .osv.id, value: .osv.summary}) | from_entries) as $$s | map(.finding | select(.trace[0].function != null)) | unique_by([.osv, .trace[0].module])[] | [.osv, .trace[0].module, (.trace[0].version // "?"), (.fixed_version // "no fix"), $$s[.osv]] | @tsv
JQ_UNCALLED := map(.finding | select(. != null)) | (map(select(.trace[0].function != null) | .osv) | unique) as $$r | map(.osv) | unique - $$r | join(" ")

## vulncheck: govulncheck against the offline database; fails on any reachable vulnerability not accepted above
vulncheck: vulndb
	@command -v jq >/dev/null || { echo "$(JQ_HINT)"; exit 1; }
	@set -euo pipefail; out=$$(mktemp); trap 'rm -f "$$out"' EXIT; \
	$(LINT_TOOLS)/govulncheck -db file://$(VULNDB) -format json ./... >"$$out"; \
	jq -r 'select(.config) | .config | "govulncheck \(.scanner_version), \(.go_version), database \(.db_last_modified)"' "$$out"; \
	found=$$(jq -rs '$(JQ_REACHABLE)' "$$out"); \
	bad=0; accepted=" $(strip $(GOVULNCHECK_STDLIB_ACCEPT)) "; \
	while IFS=$$'\t' read -r id mod ver fixed summary; do \
		[ -n "$$id" ] || continue; \
		if [ "$$mod" = stdlib ] && [[ "$$accepted" == *" $$id "* ]]; then verdict=accepted; else verdict=FAIL; bad=1; fi; \
		echo "$$verdict: $$id $$mod@$$ver (fixed in $$fixed) $$summary"; \
	done <<<"$$found"; \
	for id in $(GOVULNCHECK_STDLIB_ACCEPT); do \
		grep -q "^$$id"$$'\t'stdlib <<<"$$found" || echo "note: $$id is no longer found; remove it from GOVULNCHECK_STDLIB_ACCEPT"; \
	done; \
	echo "in imported packages or required modules but not called (not failing): $$(jq -rs '$(JQ_UNCALLED)' "$$out")"; \
	if [ "$$bad" = 1 ]; then echo "govulncheck: reachable vulnerabilities above; details:"; \
		$(LINT_TOOLS)/govulncheck -mode convert <"$$out" || true; exit 1; fi
