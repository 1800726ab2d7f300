#!/usr/bin/env bash
# Installs what is missing, builds, and runs the program a newcomer should
# see first.  Until the ledgerd daemon exists this is the runtime demo.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build -j"$(nproc)" --target rtdemo
exec ./build/cmd/rtdemo "$@"
