#!/usr/bin/env bash
# Runs every Fuzz target in the module for a short time each. A crash (the
# fuzzer writes the failing input under testdata/fuzz) fails the run. Go's
# fuzz coordinator can also give up with "context deadline exceeded" when a
# loaded machine is slow to minimise a new input, without any failing input;
# that target is run once more instead of failing CI on the machine's load.
set -euo pipefail
cd "$(dirname "$0")/.."
t=${1:-10s}
for pkg in $(go list ./... | grep -v /test); do
	dir=$(go list -f '{{.Dir}}' "$pkg")
	for f in $(grep -ho '^func Fuzz[A-Za-z0-9_]*' "$dir"/*_test.go 2>/dev/null | sed 's/^func //'); do
		for attempt in 1 2; do
			echo "fuzz: $pkg $f ($t, attempt $attempt)"
			if out=$(go test -run '^$' -fuzz "^${f}\$" -fuzztime "$t" -fuzzminimizetime 5s "$pkg" 2>&1); then
				echo "$out" | tail -1
				break
			fi
			echo "$out" | tail -20
			if echo "$out" | grep -q "Failing input written to" || ! echo "$out" | grep -q "context deadline exceeded"; then
				echo "fuzz: $f found a failure"
				exit 1
			fi
			if [ "$attempt" = 2 ]; then
				echo "fuzz: $f: the fuzz engine timed out twice without a failing input"
				exit 1
			fi
		done
	done
done
