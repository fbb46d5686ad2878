# busylamp — build, test, benchmark.
GO      ?= go
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -X main.version=$(VERSION)
BIN     := bin/busylamp
# Packages with goroutines run under the race detector; the pure ones
# (tables, config, the CLI's own tests) without it. Each runs once.
RACE_PKGS  := ./pubsub/... ./agent/... ./internal/...
PLAIN_PKGS := ./devstate/... ./mwi/... ./config/... ./cmd/...

.PHONY: build test test-unit lint bench demo servers clean

build:
	$(GO) build -ldflags "$(LDFLAGS)" -o $(BIN) ./cmd/busylamp

# The whole suite: lint, unit tests, and integration tests against real
# Prosody and ejabberd (installed here first when running as root).
test: servers lint
	$(GO) test -count=1 -timeout 15m $(PLAIN_PKGS)
	$(GO) test -count=1 -race -timeout 15m $(RACE_PKGS)

test-unit:
	$(GO) test -count=1 ./devstate/... ./mwi/... ./config/...

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	  if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...

# Three agents and a Prosody on loopback, driven with the CLI.
demo: build
	bash examples/demo.sh $(BIN)

bench:
	$(GO) test -run=NONE -bench=. -benchmem ./devstate/... ./mwi/... ./agent/...

# Prosody and ejabberd from Debian, when we may install them.
servers:
	@if [ "$$(id -u)" = 0 ]; then sh internal/xmpptest/install.sh; \
	  elif ! command -v prosody >/dev/null || ! command -v ejabberdctl >/dev/null; then \
	  echo "integration tests need prosody and ejabberd: sudo apt-get install prosody ejabberd" >&2; exit 1; fi

clean:
	rm -rf bin
