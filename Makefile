# Makefile (tool, runs on the build host): builds mod_rwsgi with cargo and installs it into an
# Apache httpd found through apxs. `make help` lists the targets and variables.

SHELL := /bin/sh
# The source tree (this Makefile's directory), so `make -C` and `make -f` both work.
SRCDIR := $(patsubst %/,%,$(dir $(abspath $(lastword $(MAKEFILE_LIST)))))

# apxs of the Apache to build for and install into: `apxs` on PATH, else /usr/bin/apxs.
APXS ?= $(shell command -v apxs 2>/dev/null || echo /usr/bin/apxs)
CARGO ?= cargo
CARGO_TARGET_DIR ?= $(SRCDIR)/target
override CARGO_TARGET_DIR := $(abspath $(CARGO_TARGET_DIR))
A2DISMOD ?= a2dismod
DESTDIR ?=

# The module to install. By default the one cargo builds; MODULE=/path/to/mod_rwsgi.so installs a
# prebuilt file instead (no cargo run).
BUILT_MODULE := $(CARGO_TARGET_DIR)/release/libmod_rwsgi.so
ifeq ($(origin MODULE),undefined)
MODULE := $(BUILT_MODULE)
INSTALL_NEEDS := build
else
INSTALL_NEEDS :=
endif

# Only a given APXS reaches cargo: build.rs has the same default, and passing it unchanged would
# still make cargo rebuild the crate (build.rs reruns when APXS changes, set or unset).
ifneq ($(filter command line environment,$(origin APXS)),)
CARGO_ENV := APXS='$(APXS)'
else
CARGO_ENV :=
endif

# Asked lazily (= not :=) so that `make help` works without apxs.
LIBEXECDIR = $(shell '$(APXS)' -q LIBEXECDIR)
SYSCONFDIR = $(shell '$(APXS)' -q SYSCONFDIR)
# Debian layout: SYSCONFDIR has mods-available/ (on the target system, or already in DESTDIR).
# DEBIAN_LAYOUT=yes|no overrides the detection.
DEBIAN_LAYOUT ?= auto

.PHONY: all build install uninstall help check-apxs
.DEFAULT_GOAL := all

all: build

help:
	@echo 'mod_rwsgi: make targets'
	@echo '  make [build]        build target/release/libmod_rwsgi.so with cargo (if sources changed)'
	@echo '  make install        build if needed, then install mod_rwsgi.so into $$(apxs -q LIBEXECDIR);'
	@echo '                      on a Debian layout also rwsgi.load and rwsgi.conf into mods-available/'
	@echo '                      (then: a2dismod wsgi; a2enmod rwsgi; systemctl restart apache2)'
	@echo '  make uninstall      remove what install put there (runs a2dismod rwsgi first if enabled)'
	@echo '  make help           this list'
	@echo 'Variables:'
	@echo '  APXS=/path/to/apxs  the Apache to build for and install into (now: $(APXS))'
	@echo '  DESTDIR=/staging    install under a staging root (packaging); nothing is enabled'
	@echo '  MODULE=/path/to.so  install this prebuilt module instead of building one'
	@echo '  DEBIAN_LAYOUT=yes|no  force or skip the mods-available/ files (default: detected)'
	@echo '  CARGO=...  CARGO_TARGET_DIR=...  A2DISMOD=...'

check-apxs:
	@'$(APXS)' -q LIBEXECDIR >/dev/null 2>&1 || { \
	  echo "mod_rwsgi: cannot run '$(APXS) -q LIBEXECDIR': install apache2-dev (Debian) or pass APXS=/path/to/apxs" >&2; \
	  exit 1; }

build: check-apxs
	@if command -v '$(CARGO)' >/dev/null 2>&1; then \
	  echo "$(CARGO_ENV) $(CARGO) build --release"; \
	  cd '$(SRCDIR)' && env $(CARGO_ENV) CARGO_TARGET_DIR='$(CARGO_TARGET_DIR)' '$(CARGO)' build --release || exit 1; \
	elif [ -f '$(BUILT_MODULE)' ]; then \
	  echo "mod_rwsgi: '$(CARGO)' is not on PATH (sudo?); using the existing $(BUILT_MODULE) built earlier"; \
	else \
	  echo "mod_rwsgi: '$(CARGO)' is not on PATH: install a Rust toolchain (rustup), run 'make' as your user first, or pass MODULE=/path/to/mod_rwsgi.so" >&2; \
	  exit 1; \
	fi

install: check-apxs $(INSTALL_NEEDS)
	@test -f '$(MODULE)' || { echo "mod_rwsgi: $(MODULE) does not exist" >&2; exit 1; }
	@libexec='$(LIBEXECDIR)'; sysconf='$(SYSCONFDIR)'; \
	test -n "$$libexec" || { echo "mod_rwsgi: '$(APXS) -q LIBEXECDIR' answered nothing" >&2; exit 1; }; \
	set -e; \
	echo "install -m 0644 $(MODULE) $(DESTDIR)$$libexec/mod_rwsgi.so"; \
	install -d -m 0755 '$(DESTDIR)'"$$libexec"; \
	install -m 0644 '$(MODULE)' '$(DESTDIR)'"$$libexec/mod_rwsgi.so"; \
	debian='$(DEBIAN_LAYOUT)'; \
	if [ "$$debian" = auto ]; then \
	  if [ -n "$$sysconf" ] && { [ -d "$$sysconf/mods-available" ] || [ -d '$(DESTDIR)'"$$sysconf/mods-available" ]; }; \
	  then debian=yes; else debian=no; fi; \
	fi; \
	if [ "$$debian" = yes ]; then \
	  avail='$(DESTDIR)'"$$sysconf/mods-available"; \
	  echo "install -m 0644 rwsgi.load rwsgi.conf $$avail/"; \
	  install -d -m 0755 "$$avail"; \
	  sed -e "s|@LIBEXECDIR@|$$libexec|g" '$(SRCDIR)'/conf/debian/rwsgi.load.in > "$$avail/rwsgi.load.tmp"; \
	  chmod 0644 "$$avail/rwsgi.load.tmp"; mv -f "$$avail/rwsgi.load.tmp" "$$avail/rwsgi.load"; \
	  if [ -f "$$avail/rwsgi.conf" ] && ! cmp -s '$(SRCDIR)'/conf/debian/rwsgi.conf "$$avail/rwsgi.conf"; then \
	    install -m 0644 '$(SRCDIR)'/conf/debian/rwsgi.conf "$$avail/rwsgi.conf.dist"; \
	    echo "mod_rwsgi: kept your edited $$avail/rwsgi.conf; the new default is rwsgi.conf.dist"; \
	  else \
	    install -m 0644 '$(SRCDIR)'/conf/debian/rwsgi.conf "$$avail/rwsgi.conf"; \
	  fi; \
	  if [ -z '$(DESTDIR)' ]; then \
	    echo; \
	    echo "Installed. Enable it with:  a2dismod wsgi   # if mod_wsgi is enabled: they cannot be loaded together"; \
	    echo "                            a2enmod rwsgi && systemctl restart apache2"; \
	  fi; \
	elif [ -z '$(DESTDIR)' ]; then \
	  echo; \
	  echo "Installed. Load it from httpd.conf with:  LoadModule rwsgi_module $$libexec/mod_rwsgi.so"; \
	fi

uninstall: check-apxs
	@libexec='$(LIBEXECDIR)'; sysconf='$(SYSCONFDIR)'; \
	test -n "$$libexec" || { echo "mod_rwsgi: '$(APXS) -q LIBEXECDIR' answered nothing" >&2; exit 1; }; \
	set -e; \
	enabled='$(DESTDIR)'"$$sysconf/mods-enabled/rwsgi.load"; \
	if [ -n "$$sysconf" ] && { [ -e "$$enabled" ] || [ -L "$$enabled" ]; }; then \
	  if [ -z '$(DESTDIR)' ] && command -v '$(A2DISMOD)' >/dev/null 2>&1; then \
	    echo "APACHE_CONFDIR=$$sysconf $(A2DISMOD) rwsgi"; \
	    APACHE_CONFDIR="$$sysconf" '$(A2DISMOD)' rwsgi; \
	  else \
	    echo "mod_rwsgi: rwsgi is still enabled ($$enabled); disable it first:" >&2; \
	    echo "  APACHE_CONFDIR=$(DESTDIR)$$sysconf a2dismod rwsgi" >&2; \
	    exit 1; \
	  fi; \
	fi; \
	rm_v() { if [ -e "$$1" ] || [ -L "$$1" ]; then echo "rm -f $$1"; rm -f "$$1"; fi; }; \
	rm_v '$(DESTDIR)'"$$libexec/mod_rwsgi.so"; \
	if [ -n "$$sysconf" ]; then \
	  avail='$(DESTDIR)'"$$sysconf/mods-available"; \
	  rm_v "$$avail/rwsgi.load"; rm_v "$$avail/rwsgi.conf.dist"; \
	  if [ -f "$$avail/rwsgi.conf" ] && ! cmp -s '$(SRCDIR)'/conf/debian/rwsgi.conf "$$avail/rwsgi.conf"; then \
	    echo "mod_rwsgi: kept $$avail/rwsgi.conf (you edited it); remove it by hand if unwanted"; \
	  else \
	    rm_v "$$avail/rwsgi.conf"; \
	  fi; \
	fi
