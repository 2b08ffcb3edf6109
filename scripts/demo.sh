#!/usr/bin/env bash
# Builds mod_rwsgi and serves the demo WSGI app through Apache in the foreground on
# http://127.0.0.1:${PORT:-8000}/ (Ctrl-C stops it). Installs missing packages first.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/deps.sh
cargo build --release

PORT="${PORT:-8000}"
ROOT="${RWSGI_DEMO_ROOT:-/tmp/rwsgi-demo}"
mkdir -p "$ROOT/logs" "$ROOT/run" "$ROOT/htdocs" "$ROOT/app"
install -m 0644 target/release/libmod_rwsgi.so "$ROOT/mod_rwsgi.so"
install -m 0644 conf/demo/demo.wsgi "$ROOT/app/demo.wsgi"
chmod 0755 "$ROOT" "$ROOT/app" "$ROOT/htdocs"
sed -e "s|@ROOT@|$ROOT|g" -e "s|@PORT@|$PORT|g" conf/demo/httpd.conf.in > "$ROOT/httpd.conf"
/usr/sbin/apache2 -f "$ROOT/httpd.conf" -t
echo "==> serving the demo app on http://127.0.0.1:$PORT/ (logs: $ROOT/logs/error.log; Ctrl-C stops)"
exec /usr/sbin/apache2 -f "$ROOT/httpd.conf" -DFOREGROUND
