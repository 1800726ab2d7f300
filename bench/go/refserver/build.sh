#!/usr/bin/env bash
# Builds the Go reference server offline against Debian's Go packages
# (golang-go, golang-github-mattn-go-sqlite3-dev; scripts/install-deps.sh
# --bench installs them).
#
#   bench/go/refserver/build.sh [OUTPUT]     default: build-bench/refserver
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../../.." && pwd)
OUT=${1:-$ROOT/build-bench/refserver}
mkdir -p "$(dirname "$OUT")"
cd "$HERE"
GOFLAGS=-mod=mod GOPROXY=off GO111MODULE=on go build -trimpath -o "$OUT" .
echo "$OUT"
