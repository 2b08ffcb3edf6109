#!/usr/bin/env bash
# The whole test suite: installs missing packages, checks formatting and lints, runs the Rust
# unit tests, builds the module, then runs the integration tests against a real Apache.
# Usage: scripts/test.sh [pytest args...]
#   PYTHON=/path/to/python3.X or PYTHON=3.X   build and test against that Python (default: Debian's
#                                              /usr/bin/python3, the one Debian's Apache loads);
#                                              scripts/python.sh finds and, if need be, stages it
#   RWSGI_EXTRA_PYTHONS="3.12 3.13"            then, for each, build the module again and run the
#                                              integration suite against it (event MPM, both modes,
#                                              the frameworks in a venv of that Python); a Python
#                                              that is not on the machine fails the run
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/deps.sh

# The Python every cargo step below builds against (.cargo/config.toml's default is the same
# /usr/bin/python3), and that the integration tests make their venvs with.
if [ -n "${PYTHON:-}" ]; then
  PYO3_PYTHON="$(bash scripts/python.sh "$PYTHON")"
else
  PYO3_PYTHON=/usr/bin/python3
fi
export PYO3_PYTHON
export RWSGI_PYTHON="$PYO3_PYTHON"
# Resolved up front, so a Python that is missing fails before the long steps.
extra=()
for spec in ${RWSGI_EXTRA_PYTHONS:-}; do
  extra+=("$(bash scripts/python.sh "$spec")")
done

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

echo "==> integration tests against $("$PYO3_PYTHON" -V 2>&1) (real Apache on 127.0.0.1)"
/usr/bin/python3 -m pytest -q -p no:cacheprovider tests "$@"

# The other Pythons: only what depends on the Python runs again. The other steps above (fmt,
# unit tests, fuzz; clippy but for the code behind cfg(rwsgi_py312)) are the same for every
# Python, and so are these tests, run once above: the worker and prefork MPMs; the tools' own
# tests (make install, the Docker steps, the harness); rwsgi-express's MPM sizing under load.
ONCE_ONLY=(
  --ignore=tests/test_install.py --ignore=tests/test_docker_image.py
  --ignore=tests/test_harness.py --ignore=tests/test_soak.py
  --deselect=tests/test_express.py::test_keepalive_clients_lose_no_request_under_load
  --deselect=tests/test_express.py::test_prefork_loses_no_request_under_load
)
# Each Python's build comes first (they share target/release), then its tests start in the
# background: the sessions mostly wait on servers and clients, so they overlap well on two
# cores. Each has its own servers, ports, logs and venv; output goes to a file, printed at the end.
pids=()
logs=()
trap 'for p in "${pids[@]}"; do kill -- "$p" 2>/dev/null || true; done' EXIT
for py in "${extra[@]}"; do
  version="$("$py" -c 'import sys; print("%d.%d.%d" % sys.version_info[:3])')"
  echo "==> Python $version ($py): lints (the code only this Python compiles) and the module"
  # The same target directory: only pyo3 and mod_rwsgi are rebuilt for another Python.
  if cargo clippy --version >/dev/null 2>&1; then
    PYO3_PYTHON="$py" cargo clippy --release --lib -- -D warnings
  fi
  PYO3_PYTHON="$py" cargo build --release --lib
  dir="target/modules/$version"
  mkdir -p "$dir"
  cp target/release/libmod_rwsgi.so "$dir/libmod_rwsgi.so"
  echo "==> Python $version: integration tests (event MPM, both modes) started; log $dir/pytest.log"
  RWSGI_SO="$PWD/$dir/libmod_rwsgi.so" RWSGI_PYTHON="$py" RWSGI_MPMS=event \
    RWSGI_LOG_DIR="${RWSGI_LOG_DIR:-/tmp/rwsgi-test-logs}/python$version" \
    /usr/bin/python3 -m pytest -q -p no:cacheprovider tests "${ONCE_ONLY[@]}" "$@" \
    >"$dir/pytest.log" 2>&1 &
  pids+=("$!")
  logs+=("$dir/pytest.log")
done
failed=0
for i in "${!pids[@]}"; do
  rc=0
  wait "${pids[$i]}" || rc=$?
  echo "==> ${logs[$i]} (exit $rc)"
  cat "${logs[$i]}"
  [ "$rc" = 0 ] || failed=1
done
pids=()
exit "$failed"
