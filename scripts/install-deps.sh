#!/usr/bin/env bash
# Installs every Debian package ledgerd needs to build, test and benchmark.
# Non-interactive, and a no-op (no apt call at all) when everything is present.
#
#   scripts/install-deps.sh          build + test dependencies
#   scripts/install-deps.sh --bench  also the benchmark tools (Go, wrk)
set -euo pipefail

packages=(
  build-essential cmake pkg-config git ca-certificates
  libuv1-dev libjansson-dev libsqlite3-dev libsodium-dev node-llhttp
  python3 curl
  # aarch64 cross build of the runtime, run under qemu-user by the tests
  gcc-aarch64-linux-gnu libc6-dev-arm64-cross qemu-user
)
if [[ "${1:-}" == "--bench" ]]; then
  packages+=(golang-go wrk golang-github-mattn-go-sqlite3-dev)
fi

missing=()
for pkg in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$pkg")
  fi
done

if [[ ${#missing[@]} -eq 0 ]]; then
  exit 0
fi

echo "install-deps: installing ${missing[*]}" >&2
SUDO=""
if [[ $(id -u) -ne 0 ]]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
