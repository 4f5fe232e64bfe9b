#!/usr/bin/env bash
# Set-up for a fresh Debian machine with Node and npm (as the README's commands assume): the system packages zprune's
# tests use, then `npm ci` (Deno, Bun and the JavaScript dependencies all come from npm). Safe to run again: it
# installs only what is missing.
#   - mesa-vulkan-drivers: Mesa's lavapipe, a software Vulkan device, so the WebGPU tests run without a GPU
#   - python3-*: the Python client's tests and notebooks (Debian's packages; no PyPI needed)
#   - openssl: makes the certificate of the Python client's TLS upload tests
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(mesa-vulkan-drivers python3-numpy python3-msgpack python3-pytest python3-jsonschema python3-torch
  python3-tqdm python3-matplotlib python3-ipykernel python3-nbconvert jupyter-nbconvert python3-mypy openssl)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  SUDO=""
  [ "$(id -u)" = 0 ] || SUDO="sudo"
  echo "setup: installing ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
npm ci --no-audit --no-fund
