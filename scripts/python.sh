#!/usr/bin/env bash
# Finds a Python to build and test mod_rwsgi against, and prints the interpreter to use: one
# whose installation Apache's children (www-data) can read. Runs on the build/test host.
#
# Usage: scripts/python.sh SPEC
#   SPEC  an interpreter path (/opt/python3.13/bin/python3), or a version: 3.13 or 3.13.0.
#         A version is looked up in /usr/bin, /usr/local/bin and pyenv's versions
#         ($PYENV_ROOT, default ~/.pyenv), newest patch release first.
#
# The Python needs a shared libpython (configure --enable-shared; Debian's and pyenv's builds
# of this machine have one). An installation Apache's user cannot read (pyenv's under /root)
# is copied once to target/python/<version>/ without its test suite (its interpreter's RUNPATH
# set to the copy's lib/ with Debian's patchelf); a copied installation finds its standard
# library from its own place, so nothing else needs to be set. Exits 1 with one line naming
# what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
spec="${1:?usage: scripts/python.sh /path/to/python3.X | X.Y[.Z]}"

die() { echo "scripts/python.sh: $*" >&2; exit 1; }

find_version() {
  local want="$1" xy="${1%.*}" cand
  [[ "$want" =~ ^[0-9]+\.[0-9]+$ ]] && xy="$want"
  for cand in "/usr/bin/python$xy" "/usr/local/bin/python$xy"; do
    if [ -x "$cand" ] && "$cand" -c "import sys; v='%d.%d.%d' % sys.version_info[:3]; \
        raise SystemExit(0 if v == '$want' or v.startswith('$want.') else 1)" 2>/dev/null; then
      echo "$cand"; return 0
    fi
  done
  local root
  for root in "${PYENV_ROOT:-$HOME/.pyenv}" "$(pyenv root 2>/dev/null || true)"; do
    root="$root/versions"
    [ -d "$root" ] || continue
    # Newest patch release first; only plain CPython builds (3.13.0, not 3.13.0t or miniconda).
    for cand in $(ls "$root" | grep -E "^${want//./\\.}(\\.[0-9]+)?$" | sort -rV); do
      if [ -x "$root/$cand/bin/python$xy" ]; then echo "$root/$cand/bin/python$xy"; return 0; fi
    done
  done
  return 1
}

if [[ "$spec" == */* ]]; then
  [ -x "$spec" ] || die "$spec is not an executable Python interpreter"
  python="$spec"
elif [[ "$spec" =~ ^[0-9]+\.[0-9]+(\.[0-9]+)?$ ]]; then
  python="$(find_version "$spec")" ||
    die "no Python $spec on this machine (looked in /usr/bin, /usr/local/bin and ${PYENV_ROOT:-$HOME/.pyenv}/versions)"
else
  die "'$spec' is neither an interpreter path nor a version such as 3.13"
fi

# version, prefix, shared libpython?, and whether www-data can reach the prefix (every
# directory on the way searchable by others, the standard library readable).
read -r version xy prefix shared readable < <("$python" - <<'EOF'
import os, sys, sysconfig
prefix = sys.prefix
shared = 1 if sysconfig.get_config_var("Py_ENABLE_SHARED") else 0
ok = True
d = prefix
while True:
    if not os.stat(d).st_mode & 0o001:
        ok = False
    parent = os.path.dirname(d)
    if parent == d:
        break
    d = parent
stdlib = sysconfig.get_paths()["stdlib"]
if not os.path.exists(os.path.join(stdlib, "os.py")) or not os.stat(os.path.join(stdlib, "os.py")).st_mode & 0o004:
    ok = False
print("%d.%d.%d" % sys.version_info[:3], "%d.%d" % sys.version_info[:2], prefix, shared, int(ok))
EOF
)
[ "$shared" = 1 ] || die "$python ($version) has no shared libpython, which Apache must load: build it with ./configure --enable-shared"
if [ "$readable" = 1 ]; then
  echo "$python"
  exit 0
fi

dest="$PWD/target/python/$version"
stamp="$dest/.rwsgi-staged"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$prefix" ]; then
  echo "scripts/python.sh: copying $prefix (Python $version) to $dest, where www-data can read it" >&2
  rm -rf "$dest"
  mkdir -p "$dest"
  tar -C "$prefix" --exclude="./lib/python$xy/test" -cf - . | tar -C "$dest" -xf -
  # The interpreter's own RUNPATH names the original libpython's directory; the copy's is next
  # to it (a venv's python, run as www-data by the framework tests, is this binary).
  command -v patchelf >/dev/null 2>&1 || bash scripts/deps.sh patchelf >&2
  patchelf --set-rpath '$ORIGIN/../lib' "$dest/bin/python$xy"
  chmod -R o+rX "$dest"
  echo "$prefix" >"$stamp"
fi
# Every directory from / to the copy must be searchable by www-data too.
d="$dest"
while [ "$d" != / ]; do
  [ $(( $(stat -c %a "$d" | tail -c 2) & 1 )) = 1 ] || die "$d is not searchable by other users (www-data); clone the repository elsewhere or chmod o+x it"
  d="$(dirname "$d")"
done
echo "$dest/bin/python$xy"
