#!/usr/bin/env bash
# The whole test suite: installs missing packages, checks formatting and lints, runs the Rust
# unit tests, builds the module, then runs the integration tests against a real Apache.
# Usage: scripts/test.sh [pytest args...]
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/deps.sh

echo "==> cargo fmt --check"
cargo fmt --all -- --check
if cargo clippy --version >/dev/null 2>&1; then
  echo "==> cargo clippy"
  cargo clippy --all-targets --release -- -D warnings
elif [ "${CI:-}" = true ]; then
  echo "==> cargo clippy is not installed (rustup component add clippy): CI must lint" >&2
  exit 1
else
  echo "==> cargo clippy is not installed (rustup component add clippy); lint step not run"
fi

echo "==> Rust unit tests"
cargo test --release --lib
cargo test --release --bin rwsgi-express

# A short libFuzzer pass of every fuzz target (fuzz/README.md); the unit tests above already
# replay the committed corpus through the same checks.
if [ "${RWSGI_FUZZ_SMOKE:-1}" != 0 ]; then
  echo "==> fuzz smoke pass (RWSGI_FUZZ_SMOKE=0 skips it)"
  bash scripts/fuzz.sh -t "${RWSGI_FUZZ_SECONDS:-15}"
fi

echo "==> building the module and rwsgi-express"
cargo build --release
export RWSGI_SO="$PWD/target/release/libmod_rwsgi.so"
export RWSGI_EXPRESS="$PWD/target/release/rwsgi-express"

echo "==> integration tests (real Apache on 127.0.0.1)"
/usr/bin/python3 -m pytest -q -p no:cacheprovider tests "$@"
