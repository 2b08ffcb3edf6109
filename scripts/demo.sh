#!/usr/bin/env bash
# Builds mod_rwsgi and rwsgi-express, then serves the demo WSGI app (conf/demo/demo.wsgi) with
# `rwsgi-express start-server` in the foreground on http://127.0.0.1:${PORT:-8000}/ (daemon
# mode, logs and access log on the terminal; Ctrl-C stops it). Installs missing packages first.
# PYTHON=3.13 (or an interpreter path) builds and serves with that Python (scripts/python.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/deps.sh
if [ -n "${PYTHON:-}" ]; then
  PYO3_PYTHON="$(bash scripts/python.sh "$PYTHON")"
  export PYO3_PYTHON
fi
cargo build --release

PORT="${PORT:-8000}"
ROOT="${RWSGI_DEMO_ROOT:-/tmp/rwsgi-demo}"
# The application runs as an unprivileged user (www-data when started as root), which may not
# be able to reach this checkout: serve a copy of the script.
mkdir -p "$ROOT/app"
chmod 0755 "$ROOT" "$ROOT/app"
install -m 0644 conf/demo/demo.wsgi "$ROOT/app/demo.wsgi"
echo "==> serving the demo app on http://127.0.0.1:$PORT/ (Ctrl-C stops it)"
exec target/release/rwsgi-express start-server "$ROOT/app/demo.wsgi" \
  --host 127.0.0.1 --port "$PORT" --server-root "$ROOT/server" \
  --access-log --log-level info
