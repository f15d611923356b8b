# Bulwark — see README.md. Every target installs what it needs (make deps).
SHELL := /bin/bash
export GOTOOLCHAIN := local
export CGO_ENABLED ?= 1
GO      ?= go
BIN     := $(CURDIR)/bin
PKGS    := ./...
# The whole suite boots real VMs under TCG on 2 cores: give it room.
TEST_TIMEOUT ?= 60m

.PHONY: all build tools test test-short bench demo demo-k8s readme-steps deps proto lint fuzz clean

all: build

deps:
	@./scripts/deps.sh

# Binaries are static (CGO_ENABLED=0): the in-process TPM simulator (cgo) is
# for tests only. bulwark-agent is the guest's /init: static and reproducible
# (no paths, VCS stamp or build id), so the base initramfs digest that
# policies pin does not change between checkouts of the same source.
CMDS := $(filter-out bulwark-agent,$(notdir $(wildcard cmd/*)))
REPRO := -trimpath -buildvcs=false -ldflags='-s -w -buildid='
build:
	@mkdir -p $(BIN)
	CGO_ENABLED=0 $(GO) build -trimpath -o $(BIN)/ $(addprefix ./cmd/,$(CMDS))
	CGO_ENABLED=0 $(GO) build $(REPRO) -o $(BIN)/bulwark-agent ./cmd/bulwark-agent

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet $(PKGS)

# cosign itself is the independent verifier in signing/'s interop tests;
# containerd, ctr and crictl drive the containerd shim's e2e test (1-2 min
# to build with a warm module cache, 4-5 min cold; nothing once installed).
tools: deps
	@./scripts/install-cosign.sh
	@./scripts/install-containerd.sh

test: deps tools lint build
	$(GO) test -count=1 -timeout $(TEST_TIMEOUT) $(PKGS)

# Unit tests only: no QEMU boots, no external processes.
test-short: lint
	$(GO) test -short -count=1 $(PKGS)

bench: deps build
	./scripts/bench.sh

demo: deps build
	./scripts/demo.sh

# A pod through containerd's CRI (crictl, as the kubelet) in a measured VM.
demo-k8s: deps tools build
	./scripts/demo-k8s.sh

# README.md's "Using it by hand" block, run as written from a scratch directory.
readme-steps: deps build
	./scripts/readme-steps.sh

# Short fuzzing of every parser that reads untrusted bytes (FUZZTIME each).
FUZZTIME ?= 20s
fuzz:
	./scripts/fuzz.sh $(FUZZTIME)

# Regenerate the committed protobuf code (api/bulwark/v1).
PROTOC_GEN_GO      := google.golang.org/protobuf/cmd/protoc-gen-go@v1.36.12
PROTOC_GEN_GO_GRPC := google.golang.org/grpc/cmd/protoc-gen-go-grpc@v1.5.1
proto: deps
	GOBIN=$(BIN) $(GO) install $(PROTOC_GEN_GO)
	GOBIN=$(BIN) $(GO) install $(PROTOC_GEN_GO_GRPC)
	PATH=$(BIN):$$PATH protoc -I api --go_out=api --go_opt=paths=source_relative \
	  --go-grpc_out=api --go-grpc_opt=paths=source_relative api/bulwark/v1/*.proto

clean:
	rm -rf $(BIN)
