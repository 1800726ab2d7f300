#!/usr/bin/env bash
# Installs what is missing, builds, and runs the ledgerd daemon in the
# foreground on its defaults: listen 127.0.0.1:8080, database ./ledgerd.db
# (SQLite, created on first start).  Arguments are passed to ledgerd
# (scripts/run.sh --help lists every setting).  Ctrl-C drains and exits.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build -j"$(nproc)" --target ledgerd
exec ./build/cmd/ledgerd/ledgerd "$@"
