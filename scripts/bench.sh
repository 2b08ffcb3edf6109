#!/usr/bin/env bash
# Runs the benchmark (bench/bench.py): mod_rwsgi vs mod_wsgi vs Apache static files, on
# 127.0.0.1 with wrk. Tool run on the benchmark host (as root: Apache children drop to
# www-data). Arguments select cells by workload, server or workload/server name (none: all);
# `scripts/bench.sh --list` lists them, `--help` shows the options.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/deps.sh wrk
if [ -z "${RWSGI_SO:-}" ]; then
  cargo build --release --quiet
  export RWSGI_SO="$PWD/target/release/libmod_rwsgi.so"
fi
exec /usr/bin/python3 bench/bench.py "$@"
