#!/usr/bin/env bash
# Runs the benchmark (bench/bench.py): mod_rwsgi vs mod_wsgi, Apache static files and the stacks
# users run instead (gunicorn, uWSGI, uvicorn, granian; alone or behind Apache's proxy modules),
# on 127.0.0.1 with wrk. Tool run on the benchmark host (as root: Apache children drop to
# www-data). Arguments select cells by workload, server or workload/server name (none: all);
# `scripts/bench.sh --list` lists them, `--help` shows the options.
#   --python X.Y   (repeatable) also build mod_rwsgi for that Python (scripts/python.sh finds
#                  it) and add its embedded and daemon hello cells (py<X.Y.Z>-* servers)
set -euo pipefail
cd "$(dirname "$0")/.."

# wrk drives the load; matplotlib draws the charts next to the results file.
bash scripts/deps.sh wrk python3-matplotlib
args=()
pythons=()
while [ $# -gt 0 ]; do
  case "$1" in
    --python) pythons+=("${2:?--python needs a version or an interpreter path}"); shift 2 ;;
    --python=*) pythons+=("${1#--python=}"); shift ;;
    *) args+=("$1"); shift ;;
  esac
done
# The other Pythons' modules first: they share target/release with the system Python's build,
# which is rebuilt last so RWSGI_SO below is the system Python's.
for spec in "${pythons[@]}"; do
  py="$(bash scripts/python.sh "$spec")"
  version="$("$py" -c 'import sys; print("%d.%d.%d" % sys.version_info[:3])')"
  PYO3_PYTHON="$py" cargo build --release --quiet --lib
  mkdir -p "target/modules/$version"
  cp target/release/libmod_rwsgi.so "target/modules/$version/libmod_rwsgi.so"
  args+=(--python-module "$version=$PWD/target/modules/$version/libmod_rwsgi.so")
done
if [ -z "${RWSGI_SO:-}" ]; then
  cargo build --release --quiet
  export RWSGI_SO="$PWD/target/release/libmod_rwsgi.so"
fi
exec /usr/bin/python3 bench/bench.py "${args[@]}"
