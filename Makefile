# Portcullis. `make help` lists the targets.
SHELL := /bin/bash
GO ?= $(shell command -v go 2>/dev/null || echo /usr/local/go/bin/go)

# Pinned BPF toolchain: Debian 12's clang 14. The generated objects are committed and
# byte-identical across runs, so CI regenerates and diffs them.
BPF_CLANG ?= clang-14
BPF_STRIP ?= llvm-strip-14
BPF_CFLAGS ?= -O2 -g -Wall -Werror -mcpu=v2
export BPF_CLANG BPF_STRIP BPF_CFLAGS

# make test's fuzz runs are bounded by executions, not by a duration: Go's fuzz
# coordinator can fail a duration-bounded run with "context deadline exceeded" and no
# crasher when a loaded machine starves its workers at the deadline
# (https://go.dev/issue/75804). On 2 vCPUs these take about 15, 5, 5 and 5 s; a busy
# machine takes longer, never fails for it.
FUZZEXECS ?= 150000x

.PHONY: help generate build demo demo-fleet test fuzz lint bench bench-veth clean

help: ## list the targets, with roughly how long each takes on 2 vCPUs (instant)
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-10s %s\n", $$1, $$2}'

generate: ## rebuild the BPF object and Go bindings (needs clang-14, llvm; ~15 s)
	$(GO) generate ./bpf/

# The commit `portcullis version` names when the Go toolchain does not stamp one (in a
# linked git worktree, or with GOFLAGS=-buildvcs=false); empty outside git.
COMMIT = $(shell git rev-parse HEAD 2>/dev/null)$(shell git status --porcelain 2>/dev/null | grep -q . && echo +dirty)

build: ## build bin/portcullis (no clang needed: the BPF object is committed; ~10 s, the first build also downloads modules)
	$(GO) build -ldflags '-X github.com/portcullis/portcullis/buildinfo.commit=$(COMMIT)' -o bin/portcullis ./cmd/portcullis

demo: build ## as root: a test ISP in namespaces, real mail through Portcullis, example policy (~10 s)
	bin/portcullis demo $(DEMO_FLAGS)

demo-fleet: ## as root: the fleet version: 3 etcd members and 2 routers in namespaces; push, refusal, member loss, partition, real mail (~30 s)
	$(GO) test -count=1 -v -run '^TestFleetEndToEnd$$' ./cmd/portcullis/

test: ## run all tests (as root: BPF, XDP, netns) plus bounded fuzz runs (~5-8 min)
	$(GO) test -count=1 ./...
	$(GO) test -count=1 -run '^$$' -fuzz '^FuzzProgramVsModel$$' -fuzztime $(FUZZEXECS) ./loader/
	$(GO) test -count=1 -run '^$$' -fuzz '^FuzzDestinationsAndInterfaces$$' -fuzztime 60000x ./loader/
	$(GO) test -count=1 -run '^$$' -fuzz '^FuzzParse$$' -fuzztime 30000x ./policy/
	$(GO) test -count=1 -run '^$$' -fuzz '^FuzzCapture$$' -fuzztime 30000x ./replay/

fuzz: ## long fuzz runs: program vs model, the policy parser, the capture reader (10 min each, ~40 min)
	$(GO) test -run '^$$' -fuzz '^FuzzProgramVsModel$$' -fuzztime 10m ./loader/
	$(GO) test -run '^$$' -fuzz '^FuzzDestinationsAndInterfaces$$' -fuzztime 10m ./loader/
	$(GO) test -run '^$$' -fuzz '^FuzzParse$$' -fuzztime 10m ./policy/
	$(GO) test -run '^$$' -fuzz '^FuzzCapture$$' -fuzztime 10m ./replay/

lint: ## gofmt and go vet (~30 s)
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || { gofmt -l $$(git ls-files '*.go'); echo "run gofmt -w"; exit 1; }
	$(GO) vet ./...

bench: ## as root: program cost per packet (by policy size, hot and cold), policy swap, table memory, a 1M policy end to end, parse+compile, readers during a 1M apply, replay, fleet convergence through etcd; docs/BENCHMARKS.md (~9 min; real packets on veth: make bench-veth)
	$(GO) test -run '^$$' -bench '^BenchmarkDataPlane$$' -benchtime 2000000x ./loader/
	$(GO) test -run '^$$' -bench '^BenchmarkRelayScope$$' -benchtime 2000000x ./loader/
	$(GO) test -run '^$$' -bench '^BenchmarkLookupScale$$' -benchtime 1400000x ./loader/
	$(GO) test -run '^$$' -bench '^BenchmarkPolicyLoad$$' -benchtime 2x ./loader/
	$(GO) test -run '^$$' -bench '^BenchmarkProof$$' -benchtime 2x ./controller/
	$(GO) test -run '^$$' -bench '^BenchmarkApply$$' -benchtime 100x ./loader/
	$(GO) test -run '^$$' -bench '^BenchmarkTableMemory$$' -benchtime 1x ./loader/
	$(GO) test -run '^$$' -bench '^BenchmarkParseCompile$$' -benchtime 1x ./policy/
	$(GO) test -run '^$$' -bench '^BenchmarkParseCompileListFile$$' -benchtime 1x ./policy/
	$(GO) test -run '^$$' -bench '^BenchmarkReadersDuringApply$$' -benchtime 1x ./daemon/
	$(GO) test -run '^$$' -bench '^BenchmarkReplay$$' -benchtime 3x ./replay/
	$(GO) test -run '^$$' -bench '^BenchmarkConvergence$$' -benchtime 1x ./fleet/

# Not part of bench: it needs trafgen, nft, ipset and iptables, and it measures whole
# packets through the kernel, not the program alone. VETH_FLAGS passes the benchmark's
# own flags, e.g. VETH_FLAGS='-vethbench.rounds=3 -vethbench.sizes=10,100000'.
bench-veth: ## as root: real packets on veth, Portcullis against nftables, iptables+ipset, bare XDP_DROP and plain forwarding at 10/100k/1M prefixes; needs netsniff-ng, nftables, iptables, ipset (~5 min)
	$(GO) test -run '^$$' -bench '^BenchmarkVeth$$' -benchtime 1x -timeout 20m ./internal/vethbench/ $(VETH_FLAGS)

clean: ## remove build output (instant)
	rm -rf bin
