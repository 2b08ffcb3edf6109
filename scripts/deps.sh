#!/usr/bin/env bash
# Installs the Debian packages mod_rwsgi needs to build and test, when they are missing.
# Runs on the build/test host (as root, or with sudo available); prints what it does.
# Usage: scripts/deps.sh [extra-package ...]   (scripts/bench.sh adds wrk)
set -euo pipefail

# python3-venv: the framework tests' venv; g++: libFuzzer (C++) for the fuzz smoke pass.
PKGS=(apache2 apache2-dev libapache2-mod-wsgi-py3 libclang-dev clang python3 python3-dev libpython3-dev python3-pytest python3-venv curl gcc g++ make pkg-config "$@")
missing=()
for p in "${PKGS[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done
if [ "${#missing[@]}" -gt 0 ]; then
  echo "==> installing missing Debian packages: ${missing[*]}"
  SUDO=""
  if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# Debian starts the packaged apache2 service on install; our tests and demo run their own
# servers on their own ports, so the packaged one is left alone.
if ! command -v cargo >/dev/null 2>&1; then
  echo "mod_rwsgi needs a Rust toolchain (cargo, Rust >= 1.85 for edition 2024): install it with rustup" >&2
  exit 1
fi
