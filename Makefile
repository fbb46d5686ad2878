# busylamp — build, test, benchmark.
GO      ?= go
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -X main.version=$(VERSION)
BIN     := bin/busylamp
# Packages with goroutines run under the race detector; the pure ones
# (tables, config, the CLI's own tests) without it. Each runs once.
RACE_PKGS  := ./pubsub/... ./agent/... ./internal/...
PLAIN_PKGS := ./devstate/... ./mwi/... ./config/... ./cmd/... ./packaging/...

.PHONY: build test test-unit lint fuzz faults bench demo servers clean

build:
	$(GO) build -ldflags "$(LDFLAGS)" -o $(BIN) ./cmd/busylamp

# The whole suite: lint, unit tests, and integration tests against real
# Prosody and ejabberd (installed here first when running as root).
test: servers lint
	$(GO) test -count=1 -timeout 15m $(PLAIN_PKGS)
	$(GO) test -count=1 -race -timeout 15m $(RACE_PKGS)
	$(MAKE) fuzz FUZZTIME=$(FUZZTIME)
	$(MAKE) faults

# The fault suite: agents on a real Prosody and a driver with a model of
# what each PBX set, through server kills, an agent kill, a black-holed
# path and a burst; prints each fault's convergence time.
faults:
	$(GO) test -tags faults -run TestFaults -count=1 -v -timeout 10m ./internal/e2e/

# A short budget of the stanza reader's differential fuzz test (against
# encoding/xml); its corpus runs as seeds in every plain test run too.
FUZZTIME ?= 15s
fuzz:
	$(GO) test -run=NONE -fuzz=FuzzXMLReader -fuzztime=$(FUZZTIME) ./internal/xmppstream/

test-unit:
	$(GO) test -count=1 ./devstate/... ./mwi/... ./config/... ./internal/jid/ ./agent/core/

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	  if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...

# Three agents and a Prosody on loopback, driven with the CLI.
demo: build
	bash examples/demo.sh $(BIN)

# Micro-benchmarks, then the end-to-end run against real servers
# (internal/bench, 18 to 21 minutes here): on Prosody (PubSub in memory)
# and ejabberd, baseline vs busylamp latency (with the per-hop breakdown)
# and throughput for 2 and 5 agents, the burst; on Prosody also the
# resync of a joining agent (scale), live changes during a republish
# (live) and 2 and 8 agents in processes of their own (many); and the
# publishing agent's CPU profile. BENCHFLAGS are added last and win:
# BENCHFLAGS='-phases e2e -ejabberd-phases e2e' for the latency part only,
# BENCHFLAGS=-quick for a short run, -many-sizes 2,8,32 for 32 agents.
BENCHFLAGS ?=
bench: servers
	$(GO) test -run=NONE -bench=. -benchmem ./devstate/... ./mwi/... ./agent/... ./pubsub/ ./internal/xmppstream/
	@mkdir -p bin && rm -f bin/bench-cpu.pprof
	$(GO) run ./internal/bench -cpuprofile bin/bench-cpu.pprof -ejabberd -phases e2e,burst,scale,live,many \
	  -ejabberd-phases e2e,burst -many-sizes 2,8 $(BENCHFLAGS)
	@if [ -f bin/bench-cpu.pprof ]; then \
	  $(GO) tool pprof -top -cum -nodecount=25 -tagfocus=node=agent1 bin/bench-cpu.pprof; fi

# Prosody and ejabberd from Debian (and chromium for the lamp field's
# browser tests, prometheus for promtool), when we may install them.
servers:
	@if [ "$$(id -u)" = 0 ]; then sh internal/xmpptest/install.sh && sh internal/browsertest/install.sh && \
	  sh internal/e2e/install.sh; \
	  elif ! command -v prosody >/dev/null || ! command -v ejabberdctl >/dev/null; then \
	  echo "integration tests need prosody and ejabberd: sudo apt-get install prosody ejabberd" >&2; exit 1; fi

clean:
	rm -rf bin

# The Debian package, bin/busylamp_<version>_<arch>.deb (packaging/): the
# binary, the systemd unit, the example config as a conffile, the man
# page. VERSION (git describe) is mapped to a Debian version.
.PHONY: deb
deb: build
	$(GO) run ./packaging/mkdeb -bin $(BIN) -version "$(VERSION)" -arch "$$($(GO) env GOARCH)" -o bin
