#!/bin/sh
# docker/rwsgi-image.sh (tool; runs at image build time, in the httpd:2.4 image or any Apache
# tree with an apxs): every build and install step of docker/Dockerfile, in one place, so that
# tests/test_docker_image.py runs exactly these steps against a relocated Apache tree.
#
#   rwsgi-image.sh build-deps     apt-get: python3, libpython3-dev, APR headers, clang, make;
#                                 rustup (Rust) if cargo is missing            (builder stage)
#   rwsgi-image.sh build          make build APXS=...: compile against that Apache's headers
#   rwsgi-image.sh install        make install APXS=...: modules/mod_rwsgi.so, then
#                                 conf/extra/rwsgi.conf, the Include line in httpd.conf and the
#                                 example app (DESTDIR= stages all of it, as `make install` does)
#   rwsgi-image.sh runtime-deps   apt-get: python3 and the libpython the module links against
#
# Environment: APXS (default: apxs on PATH, else /usr/local/apache2/bin/apxs), DESTDIR,
# RWSGI_APP_DIR (default /srv/app), RWSGI_SRC (the source tree, default this script's ../),
# CARGO_TARGET_DIR (passed on to make/cargo).
set -eu

SRC="${RWSGI_SRC:-$(cd "$(dirname "$0")/.." && pwd)}"
APP_DIR="${RWSGI_APP_DIR:-/srv/app}"
DESTDIR="${DESTDIR:-}"
if [ -z "${APXS:-}" ]; then
    APXS="$(command -v apxs 2>/dev/null || echo /usr/local/apache2/bin/apxs)"
fi

say() { echo "==> rwsgi-image: $*"; }

apt_install() {
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "$@"
    rm -rf /var/lib/apt/lists/*
}

python_version() {
    /usr/bin/python3 -c 'import sys; print("%d.%d" % sys.version_info[:2])'
}

build_deps() {
    # The image's httpd is built against Debian's APR, whose headers it does not keep; apxs is a
    # perl script; bindgen needs libclang; the Makefile needs make.
    say "installing build dependencies"
    apt_install ca-certificates curl gcc libc6-dev make perl pkg-config clang libclang-dev \
        libapr1-dev libaprutil1-dev python3 libpython3-dev
    if ! command -v cargo >/dev/null 2>&1 && [ ! -x "${HOME:-/root}/.cargo/bin/cargo" ]; then
        say "installing Rust with rustup (minimal profile)"
        curl -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal
    fi
}

with_cargo_path() {
    if [ -d "${HOME:-/root}/.cargo/bin" ]; then PATH="${HOME:-/root}/.cargo/bin:$PATH"; fi
    export PATH
}

build() {
    with_cargo_path
    say "building against $APXS (INCLUDEDIR $("$APXS" -q INCLUDEDIR))"
    make -C "$SRC" build APXS="$APXS"
}

install_all() {
    libexec="$("$APXS" -q LIBEXECDIR)"
    sysconf="$("$APXS" -q SYSCONFDIR)"
    if [ -z "$libexec" ] || [ -z "$sysconf" ]; then
        echo "rwsgi-image: $APXS -q LIBEXECDIR/SYSCONFDIR answered nothing" >&2
        exit 1
    fi
    with_cargo_path
    make -C "$SRC" install APXS="$APXS" DESTDIR="$DESTDIR" DEBIAN_LAYOUT=no

    conf="$DESTDIR$sysconf/extra/rwsgi.conf"
    say "writing $conf (application in $APP_DIR)"
    install -d -m 0755 "$DESTDIR$sysconf/extra"
    sed -e "s|@LIBEXECDIR@|$libexec|g" -e "s|@APP_DIR@|$APP_DIR|g" \
        "$SRC/docker/rwsgi.conf.in" > "$conf"
    chmod 0644 "$conf"

    httpd_conf="$DESTDIR$sysconf/httpd.conf"
    if [ -n "$DESTDIR" ] && [ ! -f "$httpd_conf" ]; then
        # Staged install: start from the image's own httpd.conf.
        install -m 0644 "$sysconf/httpd.conf" "$httpd_conf"
    fi
    include="Include $sysconf/extra/rwsgi.conf"
    if grep -qxF "$include" "$httpd_conf"; then
        say "$httpd_conf already includes rwsgi.conf"
    else
        say "adding '$include' to $httpd_conf"
        printf '\n# mod_rwsgi (docker/rwsgi-image.sh)\n%s\n' "$include" >> "$httpd_conf"
    fi

    say "installing the example application into $DESTDIR$APP_DIR"
    install -d -m 0755 "$DESTDIR$APP_DIR"
    install -m 0644 "$SRC/docker/app/app.wsgi" "$DESTDIR$APP_DIR/app.wsgi"
}

runtime_deps() {
    say "installing python3"
    apt_install python3
    ver="$(python_version)"
    say "installing libpython$ver (the libpython mod_rwsgi links against)"
    apt_install "libpython$ver"
}

case "${1:-}" in
    build-deps) build_deps ;;
    build) build ;;
    install) install_all ;;
    runtime-deps) runtime_deps ;;
    *)
        echo "usage: $0 build-deps|build|install|runtime-deps" >&2
        exit 2
        ;;
esac
