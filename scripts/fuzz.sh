#!/usr/bin/env bash
# Build host tool: runs the cargo-fuzz targets in fuzz/ one after the other, each over a
# scratch copy of its committed corpus (fuzz/corpus/<target>, read only) with its dictionary
# (fuzz/dict/), and fails if any target finds a crash (the input is copied to
# fuzz/artifacts/<target>/). Installs cargo-fuzz when it is missing. scripts/test.sh runs it
# as the CI smoke pass.
# Usage: scripts/fuzz.sh [-t SECONDS_PER_TARGET] [-r MAX_RUNS] [target ...]
set -euo pipefail
cd "$(dirname "$0")/.."

seconds=15
runs=0
while getopts "t:r:" opt; do
  case $opt in
    t) seconds=$OPTARG ;;
    r) runs=$OPTARG ;;
    *) echo "usage: $0 [-t seconds-per-target] [-r max-runs] [target ...]" >&2; exit 2 ;;
  esac
done
shift $((OPTIND - 1))

if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "==> installing cargo-fuzz (cargo install --locked cargo-fuzz)"
  start=$SECONDS
  cargo install --locked cargo-fuzz
  echo "    cargo-fuzz installed in $((SECONDS - start)) s"
fi

# cargo-fuzz passes nightly-only flags; a stable toolchain accepts them with this.
export RUSTC_BOOTSTRAP=1
# No sanitizer (the fuzzed code is safe Rust, forbid(unsafe_code)); debug assertions on, so
# an integer overflow is a crash.
flags=(--sanitizer none --debug-assertions)

if [ $# -eq 0 ]; then
  set -- $(cd fuzz/fuzz_targets && ls -- *.rs | sed 's/\.rs$//')
fi

echo "==> building the fuzz targets"
start=$SECONDS
(cd fuzz && cargo fuzz build "${flags[@]}")
echo "    built in $((SECONDS - start)) s"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
failed=()
for t in "$@"; do
  mkdir -p "$work/$t/corpus"
  args=(-max_total_time="$seconds" -print_final_stats=1 -artifact_prefix="$work/$t/")
  [ "$runs" != 0 ] && args+=(-runs="$runs")
  for d in "fuzz/dict/$t.dict" "fuzz/dict/${t%%_*}.dict"; do
    if [ -f "$d" ]; then
      args+=(-dict="$PWD/$d")
      break
    fi
  done
  seeds=()
  [ -d "fuzz/corpus/$t" ] && seeds=("$PWD/fuzz/corpus/$t")
  echo "==> fuzz $t (${seconds} s)"
  if (cd fuzz && cargo fuzz run "${flags[@]}" "$t" "$work/$t/corpus" "${seeds[@]}" -- "${args[@]}") \
    >"$work/$t.log" 2>&1; then
    grep -E '^(stat::number_of_executed_units|stat::peak_rss_mb)|DONE' "$work/$t.log" | sed 's/^/    /'
  else
    failed+=("$t")
    tail -n 40 "$work/$t.log"
    mkdir -p "fuzz/artifacts/$t"
    for f in "$work/$t"/crash-* "$work/$t"/leak-* "$work/$t"/timeout-* "$work/$t"/oom-*; do
      [ -f "$f" ] && cp "$f" "fuzz/artifacts/$t/" && echo "    input kept: fuzz/artifacts/$t/${f##*/}"
    done
    echo "    $t FAILED"
  fi
done
if [ ${#failed[@]} -ne 0 ]; then
  echo "fuzz targets failed: ${failed[*]}" >&2
  exit 1
fi
