#!/usr/bin/env bash
# Runs every Fuzz target in the module for a short time each.
set -euo pipefail
cd "$(dirname "$0")/.."
t=${1:-10s}
for pkg in $(go list ./... | grep -v /test); do
	dir=$(go list -f '{{.Dir}}' "$pkg")
	for f in $(grep -ho '^func Fuzz[A-Za-z0-9_]*' "$dir"/*_test.go 2>/dev/null | sed 's/^func //'); do
		echo "fuzz: $pkg $f ($t)"
		go test -run '^$' -fuzz "^${f}\$" -fuzztime "$t" "$pkg"
	done
done
