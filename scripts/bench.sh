#!/usr/bin/env bash
# Runs the benchmark (bench/bench.py): mod_rwsgi vs mod_wsgi vs Apache static files, on
# 127.0.0.1 with wrk. Tool run on the benchmark host (as root: Apache children drop to
# www-data). Arguments select cells by workload, server or workload/server name (none: all);
# `scripts/bench.sh --list` lists them, `--help` shows the options.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v wrk >/dev/null 2>&1 || need+=(wrk)
[ -e /usr/lib/apache2/modules/mod_wsgi.so ] || need+=(libapache2-mod-wsgi-py3)
command -v apache2 >/dev/null 2>&1 || [ -x /usr/sbin/apache2 ] || need+=(apache2)
if [ "${#need[@]}" -gt 0 ]; then
  echo "==> installing ${need[*]}"
  SUDO=""
  if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
if [ -z "${RWSGI_SO:-}" ]; then
  cargo build --release --quiet
  export RWSGI_SO="$PWD/target/release/libmod_rwsgi.so"
fi
exec /usr/bin/python3 bench/bench.py "$@"
