# Sluice — governed stream-sharing gateway for Kafka.
#
#   make run    start the embedded demo (kfake cluster + gateway), no Docker needed
#   make test   install test dependencies and run the whole suite
#   make bench  direct-vs-gateway benchmarks (see docs/benchmarks.md)

GO        ?= go
BIN       ?= bin/sluice
VERSION   ?= $(shell git describe --always --dirty 2>/dev/null || echo dev)
LDFLAGS   := -X main.version=$(VERSION)
FUZZTIME  ?= 10s

.PHONY: all build run test test-deps unit race fuzz e2e bench bench-e2e bench-micro clean

all: build

build:
	$(GO) build -ldflags "$(LDFLAGS)" -o $(BIN) ./cmd/sluice

run: build
	./$(BIN) dev

test: test-deps build unit race fuzz e2e

# test-deps installs what the end-to-end tests drive: kcat (librdkafka),
# confluent-kafka-python and Apache Avro for Python from Debian, kafkajs from
# npm (pinned by test/clients/package-lock.json), and the Go modules.
test-deps:
	./test/install-deps.sh

unit:
	$(GO) vet ./...
	$(GO) test -count=1 $$($(GO) list ./... | grep -v /test)

race:
	$(GO) test -race -count=1 ./proxy/...

fuzz:
	./test/fuzz.sh $(FUZZTIME)

e2e: build
	SLUICE_BIN=$(CURDIR)/$(BIN) $(GO) test -count=1 -timeout 15m ./test/...

# bench: direct-vs-gateway end to end (test/bench), then the packages'
# micro-benchmarks (docs/benchmarks.md lists both with their targets).
bench: build bench-e2e bench-micro

bench-e2e: build
	SLUICE_BIN=$(CURDIR)/$(BIN) $(GO) test -run '^$$' -bench . -benchmem -benchtime 1x -timeout 30m ./test/bench/

bench-micro:
	$(GO) test -run '^$$' -bench . -benchmem ./proxy/
	$(GO) test -run '^$$' -bench 'Decide|Filter' -benchmem ./policy/
	GOMAXPROCS=1 $(GO) test -run '^$$' -bench 'Plan|RewriteBatch|RewritePartition|Reference|KeyedHash|FilterProduceMasking' -benchmem ./masking/
	$(GO) test -run '^$$' -bench 'OnResponse|EncodeEvent' -benchmem -benchtime 50000x ./audit/
	$(GO) test -run '^$$' -bench 'Verify$$' -benchmem ./audit/

clean:
	rm -rf bin
