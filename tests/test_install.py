"""`make install` / `make uninstall` and Debian's a2enmod/a2dismod (tool side: pytest runs make,
a2enmod and Debian's apache2 against private copies; the real /etc/apache2, /var/lib/apache2
and /usr/lib/apache2/modules are never written).

The module file is the one the other tests load (RWSGI_SO), given to make as MODULE= so these
tests never start a cargo build.
"""

from __future__ import annotations

import os
import re
import shutil
import stat
import tempfile
from pathlib import Path

import pytest

import harness
import layouts

CONF_SRC = harness.REPO / "conf" / "debian" / "rwsgi.conf"
CONFLICT_MESSAGE = "Module wsgi is enabled - cannot proceed due to conflicts"


@pytest.fixture
def destdir():
    d = Path(tempfile.mkdtemp(prefix="rwsgi-destdir-", dir="/tmp"))
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def debian_copy(request):
    """A private copy of /etc/apache2 (tests/layouts.py) with mod_rwsgi installed into it by
    `make install` through an apxs that reports the copy's paths (no DESTDIR: the .load file
    then names the module's real location). Debian's mod_wsgi is enabled in the copy, as after
    installing libapache2-mod-wsgi-py3 (scripts/deps.sh installs it)."""
    harness.check_so()
    srv = layouts.DebianCopy(request.node.name)
    try:
        if not (srv.confdir / "mods-available" / "wsgi.load").is_file():
            pytest.fail("mods-available/wsgi.load is missing: install libapache2-mod-wsgi-py3 "
                        "(scripts/deps.sh)", pytrace=False)
        rc, out = srv.a2(layouts.A2ENMOD, "wsgi")
        assert rc == 0 and srv.enabled("wsgi"), out
        rc, out = layouts.make("install", f"APXS={srv.apxs}", f"MODULE={harness.SO_PATH}")
        assert rc == 0, out
        yield srv
    finally:
        srv.stop()
        bad = srv.log_violations()
        if not os.environ.get("RWSGI_KEEP"):
            srv.cleanup()
    assert not srv.problems, srv.problems
    assert not bad, bad


def _files(root: Path) -> dict[str, int]:
    """Every file and directory under root (relative path -> permission bits)."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for n in dirnames + filenames:
            p = Path(dirpath) / n
            out[str(p.relative_to(root))] = stat.S_IMODE(p.lstat().st_mode)
    return out


def _apxs(var: str) -> str:
    return layouts.debian_apxs_query(var)


def test_make_help_lists_targets_and_variables():
    rc, out = layouts.make("help")
    assert rc == 0, out
    for word in ("make install", "make uninstall", "make help", "APXS=", "DESTDIR=", "MODULE="):
        assert word in out, (word, out)


def test_install_and_uninstall_with_destdir(destdir):
    libexec, sysconf = _apxs("LIBEXECDIR"), _apxs("SYSCONFDIR")
    rc, out = layouts.make("install", f"DESTDIR={destdir}", f"MODULE={harness.SO_PATH}")
    assert rc == 0, out
    so = f"{libexec}/mod_rwsgi.so".lstrip("/")
    load = f"{sysconf}/mods-available/rwsgi.load".lstrip("/")
    conf = f"{sysconf}/mods-available/rwsgi.conf".lstrip("/")
    files = _files(destdir)
    # Exactly the module and the two Debian files; files 0644, directories 0755.
    assert {k: v for k, v in files.items() if not (destdir / k).is_dir()} == \
        {so: 0o644, load: 0o644, conf: 0o644}, files
    assert all(v == 0o755 for k, v in files.items() if (destdir / k).is_dir()), files
    assert (destdir / so).read_bytes() == harness.SO_PATH.read_bytes()
    load_text = (destdir / load).read_text()
    # a2enmod reads "# Conflicts:" from the header comment, before the first directive.
    assert load_text.splitlines()[0] == "# Conflicts: wsgi"
    assert re.search(rf"^LoadModule rwsgi_module {re.escape(libexec)}/mod_rwsgi.so$",
                     load_text, re.M), load_text
    assert (destdir / conf).read_bytes() == CONF_SRC.read_bytes()
    # Nothing was enabled in the staging tree.
    assert not (destdir / sysconf.lstrip("/") / "mods-enabled").exists()

    rc, out = layouts.make("uninstall", f"DESTDIR={destdir}")
    assert rc == 0, out
    left = [k for k in _files(destdir) if not (destdir / k).is_dir()]
    assert left == [], left


def test_uninstall_keeps_an_edited_rwsgi_conf(destdir):
    rc, out = layouts.make("install", f"DESTDIR={destdir}", f"MODULE={harness.SO_PATH}")
    assert rc == 0, out
    conf = destdir / _apxs("SYSCONFDIR").lstrip("/") / "mods-available" / "rwsgi.conf"
    conf.write_text(conf.read_text() + "WSGIPythonOptimize 1\n")
    # A reinstall keeps the edit and puts the new default next to it.
    rc, out = layouts.make("install", f"DESTDIR={destdir}", f"MODULE={harness.SO_PATH}")
    assert rc == 0, out
    assert conf.read_text().endswith("WSGIPythonOptimize 1\n")
    assert conf.with_name("rwsgi.conf.dist").read_bytes() == CONF_SRC.read_bytes()
    rc, out = layouts.make("uninstall", f"DESTDIR={destdir}")
    assert rc == 0, out
    assert "kept" in out and conf.is_file()
    assert not conf.with_name("rwsgi.conf.dist").exists()
    assert not conf.with_name("rwsgi.load").exists()


def test_install_into_a_non_debian_layout(destdir):
    # An Apache whose SYSCONFDIR has no mods-available/ gets the module only.
    tree = destdir / "apache"
    (tree / "conf").mkdir(parents=True)
    apxs = layouts.write_apxs(destdir / "apxs", {"LIBEXECDIR": str(tree / "modules"),
                                                 "SYSCONFDIR": str(tree / "conf")})
    rc, out = layouts.make("install", f"APXS={apxs}", f"MODULE={harness.SO_PATH}")
    assert rc == 0, out
    assert f"LoadModule rwsgi_module {tree}/modules/mod_rwsgi.so" in out
    assert sorted(_files(tree)) == ["conf", "modules", "modules/mod_rwsgi.so"]
    rc, out = layouts.make("uninstall", f"APXS={apxs}")
    assert rc == 0, out
    assert not (tree / "modules" / "mod_rwsgi.so").exists()


def test_install_without_cargo_uses_the_module_built_before(destdir):
    """`sudo make install` after `make`: root's PATH has no cargo, the built module is used;
    with nothing built either, make says what to do and installs nothing."""
    target, root = destdir / "target", destdir / "root"
    args = ("install", "CARGO=/nonexistent/cargo", f"CARGO_TARGET_DIR={target}",
            f"DESTDIR={root}")
    rc, out = layouts.make(*args)
    assert rc != 0
    assert "is not on PATH" in out and "MODULE=" in out, out
    assert not root.exists()
    (target / "release").mkdir(parents=True)
    shutil.copy(harness.SO_PATH, target / "release" / "libmod_rwsgi.so")
    rc, out = layouts.make(*args)
    assert rc == 0, out
    assert "using the existing" in out, out
    installed = root / _apxs("LIBEXECDIR").lstrip("/") / "mod_rwsgi.so"
    assert installed.read_bytes() == harness.SO_PATH.read_bytes()


def test_bad_apxs_is_a_clear_error(destdir):
    rc, out = layouts.make("install", f"APXS={destdir}/no-such-apxs", f"DESTDIR={destdir}",
                           f"MODULE={harness.SO_PATH}")
    assert rc != 0
    assert "cannot run" in out and "APXS=/path/to/apxs" in out, out
    assert _files(destdir) == {}


def test_a2enmod_refuses_while_wsgi_is_enabled(debian_copy):
    srv = debian_copy
    rc, out = srv.a2(layouts.A2ENMOD, "rwsgi")
    assert rc != 0, out
    assert CONFLICT_MESSAGE in out, out
    assert not srv.enabled("rwsgi")
    assert not (srv.confdir / "mods-enabled" / "rwsgi.conf").exists()


def test_a2enmod_after_a2dismod_wsgi_serves(debian_copy, mode):
    """After `a2dismod wsgi`, `a2enmod rwsgi` enables rwsgi.load and rwsgi.conf; the Debian
    configuration passes `apache2 -t` and serves an application."""
    srv = debian_copy
    rc, out = srv.a2(layouts.A2DISMOD, "wsgi")
    assert rc == 0 and not srv.enabled("wsgi"), out
    rc, out = srv.a2(layouts.A2ENMOD, "rwsgi")
    assert rc == 0, out
    assert srv.enabled("rwsgi")
    assert (srv.confdir / "mods-enabled" / "rwsgi.conf").resolve() == \
        (srv.confdir / "mods-available" / "rwsgi.conf")
    # a2enmod's state markers went to the private state directory.
    assert (srv.a2state / "module" / "enabled_by_admin" / "rwsgi").is_file()

    script = srv.write_file("apps/app.wsgi", (harness.REPO / "docker" / "app" / "app.wsgi")
                            .read_text())
    daemon = "WSGIDaemonProcess inst processes=1 threads=4\n" if mode == "daemon" else ""
    group = " process-group=inst" if mode == "daemon" else ""
    fragment = (f"{daemon}WSGIScriptAlias /app {script}{group}\n"
                f"<Directory {srv.apps}>\n    Require all granted\n</Directory>\n")
    rc, out = srv.configtest(fragment)
    assert rc == 0 and "Syntax OK" in out, out
    srv.start(fragment)
    try:
        r = srv.get("/app/x")
        assert r.status == 200, (r, srv.error_log()[-3000:])
        expected = "daemon (process group inst)" if mode == "daemon" else "embedded"
        assert r.text.splitlines()[:2] == ["Hello from mod_rwsgi!", f"mode: {expected}"]
    finally:
        srv.stop()
    assert not harness.pid_alive(srv.parent_pid)
    assert not srv.pid_file.exists()


def test_enabling_wsgi_next_to_rwsgi_stops_configtest(debian_copy):
    """Debian's wsgi.load has no Conflicts line, so `a2enmod wsgi` after rwsgi succeeds; the
    module's own check (RW0003) then stops `apache2 -t` and names the fix."""
    srv = debian_copy
    assert srv.a2(layouts.A2DISMOD, "wsgi")[0] == 0
    assert srv.a2(layouts.A2ENMOD, "rwsgi")[0] == 0
    rc, out = srv.a2(layouts.A2ENMOD, "wsgi")
    assert rc == 0 and srv.enabled("wsgi"), out
    rc, out = srv.configtest("")
    assert rc != 0, out
    assert "RW0003" in out and "a2dismod wsgi" in out, out


def test_uninstall_disables_rwsgi_first(debian_copy):
    srv = debian_copy
    assert srv.a2(layouts.A2DISMOD, "wsgi")[0] == 0
    assert srv.a2(layouts.A2ENMOD, "rwsgi")[0] == 0
    # Through DESTDIR, make does not run a2dismod on a tree it was not asked to manage: it
    # stops and says what to run, and removes nothing.
    rc, out = layouts.make("uninstall", "DESTDIR=/", f"APXS={srv.apxs}")
    assert rc != 0
    assert "still enabled" in out and "a2dismod rwsgi" in out, out
    assert (srv.libexec / "mod_rwsgi.so").is_file() and srv.enabled("rwsgi")
    # Without DESTDIR it runs a2dismod (on this apxs's SYSCONFDIR), then removes the files.
    rc, out = layouts.make("uninstall", f"APXS={srv.apxs}",
                           env={"APACHE_STATE_DIRECTORY": str(srv.a2state)})
    assert rc == 0, out
    assert "a2dismod rwsgi" in out
    assert not srv.enabled("rwsgi")
    assert not (srv.confdir / "mods-enabled" / "rwsgi.conf").exists()
    assert not (srv.libexec / "mod_rwsgi.so").exists()
    for n in ("rwsgi.load", "rwsgi.conf"):
        assert not (srv.confdir / "mods-available" / n).exists()
    # The rest of Debian's configuration is intact and still valid.
    rc, out = srv.configtest("")
    assert rc == 0 and "Syntax OK" in out, out


@pytest.mark.embedded_only
def test_rwsgi_conf_commented_defaults_are_valid(apache_factory, mode):
    """Every commented directive in the shipped rwsgi.conf, uncommented, passes `apachectl -t`."""
    lines = [m.group(1) for m in re.finditer(r"^\s*#(WSGI\w+ .*)$", CONF_SRC.read_text(), re.M)]
    assert len(lines) >= 8, lines
    srv = apache_factory()
    # The example paths need not exist for the configuration to be valid, except the Python
    # home (checked at -t: RW0040/RW0041), pointed at the build's own prefix; the socket prefix
    # is pointed at this server's run directory.
    real = {"WSGISocketPrefix": f"WSGISocketPrefix {srv.root}/run/rwsgi",
            "WSGIPythonHome": f"WSGIPythonHome {harness.app_python_prefix()}"}
    lines = [real.get(ln.split()[0], ln) for ln in lines]
    rc, out = srv.configtest("\n".join(lines) + "\n")
    assert rc == 0 and "Syntax OK" in out, out
