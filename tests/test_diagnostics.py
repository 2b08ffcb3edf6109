"""Start-up diagnostics: a WSGIPythonHome / python-home= of another Python X.Y or that is no
Python at all fails `apachectl -t` (and start) with one line naming both versions or the missing
`encodings`; scripts, WSGIImportScripts and python-path entries the user who runs them cannot
reach or read are reported at `-t` and at start, and a script that cannot be read fails its
request with one clear line; an unreachable daemon socket directory fails `-t`. Every test runs
in embedded and daemon mode (daemon mode puts the setting on its own WSGIDaemonProcess)."""

import os
import re
import subprocess

import pytest

import harness

BUILD = "%d.%d" % harness.app_python_version()  # the Python the module is built for

APP = """\
import sys
def application(environ, start_response):
    start_response('200 OK', [('Content-Type', 'text/plain')])
    return [sys.prefix.encode()]
"""

# Lines of mod_rwsgi's own diagnostics (code RW0040..RW0042) in a text.
DIAG = re.compile(r"RW004[0-2]")


def _lines(text, code):
    return [line for line in text.splitlines() if code in line]


def _home_conf(srv, mode, home, script):
    """Config that uses `home` as the Python home of the script's interpreter in `mode`."""
    if mode == "embedded":
        return f"WSGIPythonHome {home}\nWSGIScriptAlias /app {script}\n"
    return (f"WSGIDaemonProcess diag processes=1 threads=2 python-home={home}\n"
            f"WSGIScriptAlias /app {script} process-group=diag\n")


def _what(mode):
    return "WSGIPythonHome" if mode == "embedded" else "WSGIDaemonProcess diag python-home="


def test_venv_of_the_build_python_works_without_warning(apache_factory, mode):
    srv = apache_factory()
    venv = srv.root / "venv"
    subprocess.run([harness.APP_PYTHON, "-m", "venv", "--without-pip", str(venv)], check=True,
                   timeout=120)
    os.chmod(venv, 0o755)
    script = srv.write_file("apps/prefix.wsgi", APP)
    conf = _home_conf(srv, mode, venv, script)
    rc, out = srv.configtest(conf)
    assert rc == 0 and "Syntax OK" in out, out
    assert not DIAG.search(out), out
    srv.start(conf)
    r = srv.get("/app")
    assert r.status == 200 and r.text == str(venv), r
    assert not DIAG.search(srv.error_log()), srv.error_log()


def test_fake_prefix_fails_configtest_and_start(apache_factory, mode):
    srv = apache_factory()
    fake = srv.root / "not-a-python"
    (fake / "lib").mkdir(parents=True)
    script = srv.write_file("apps/prefix.wsgi", APP)
    conf = _home_conf(srv, mode, fake, script)
    rc, out = srv.configtest(conf)
    assert rc != 0, out
    lines = _lines(out, "RW0041")
    assert len(lines) == 1, out
    line = lines[0]
    assert _what(mode) in line and str(fake) in line, line
    assert f"lib/python{BUILD}/encodings" in line and "No module named 'encodings'" in line
    assert "sys.prefix" in line, line  # the fix
    with pytest.raises(harness.HarnessError) as e:
        srv.start()
    assert "RW0041" in str(e.value), e.value


def test_prefix_of_another_python_names_both_versions(apache_factory, mode):
    srv = apache_factory()
    other = srv.root / "py39"
    (other / "lib" / "python3.9" / "encodings").mkdir(parents=True)
    script = srv.write_file("apps/prefix.wsgi", APP)
    rc, out = srv.configtest(_home_conf(srv, mode, other, script))
    assert rc != 0, out
    lines = _lines(out, "RW0040")
    assert len(lines) == 1, out
    line = lines[0]
    assert _what(mode) in line and str(other) in line, line
    assert "Python 3.9" in line and f"built for Python {BUILD}" in line, line
    assert f"python{BUILD} -m venv" in line and "PYO3_PYTHON" in line, line  # the fixes


def test_venv_of_another_python_names_both_versions(apache_factory, mode):
    srv = apache_factory()
    venv = srv.root / "venv39"
    (venv / "lib" / "python3.9" / "site-packages").mkdir(parents=True)
    (venv / "pyvenv.cfg").write_text("home = /opt/python3.9/bin\ninclude-system-site-packages = "
                                     "false\nversion = 3.9.2\n")
    script = srv.write_file("apps/prefix.wsgi", APP)
    rc, out = srv.configtest(_home_conf(srv, mode, venv, script))
    assert rc != 0, out
    lines = _lines(out, "RW0040")
    assert len(lines) == 1, out
    assert "version = 3.9.2" in lines[0] and f"Python {BUILD}" in lines[0], lines[0]
    assert str(venv) in lines[0]


def _another_python() -> str | None:
    """An installed interpreter of another X.Y than the build's: Debian's when the module is
    built for another Python, else one scripts/python.sh staged (scripts/test.sh stages the
    RWSGI_EXTRA_PYTHONS before the first suite runs)."""
    staged = sorted(harness.REPO.glob("target/python/*/bin/python3.[0-9]*"))
    for cand in ["/usr/bin/python3", *map(str, staged)]:
        out = subprocess.run([cand, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
                             capture_output=True, text=True)
        if out.returncode == 0 and out.stdout.strip() != BUILD:
            return cand
    return None


def test_real_venv_of_another_installed_python_is_refused(apache_factory, mode):
    """A venv made by a real interpreter of another X.Y (not a hand-written pyvenv.cfg) fails
    `apachectl -t` with one RW0040 line naming both versions."""
    other = _another_python()
    if other is None:
        pytest.skip("only one Python X.Y on this machine (scripts/python.sh 3.12 stages another)")
    srv = apache_factory()
    venv = srv.root / "venv-other"
    subprocess.run([other, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    os.chmod(venv, 0o755)
    version = subprocess.run([other, "-c", "import sys; print('%d.%d.%d' % sys.version_info[:3])"],
                             capture_output=True, text=True, check=True).stdout.strip()
    script = srv.write_file("apps/prefix.wsgi", APP)
    rc, out = srv.configtest(_home_conf(srv, mode, venv, script))
    assert rc != 0, out
    lines = _lines(out, "RW0040")
    assert len(lines) == 1, out
    assert f"version = {version}" in lines[0] and f"built for Python {BUILD}" in lines[0], lines[0]
    assert str(venv) in lines[0] and _what(mode) in lines[0], lines[0]


def _private_dir(srv, parent=None):
    """A directory only root can enter (www-data cannot traverse it)."""
    d = (parent or srv.root) / "private"
    d.mkdir()
    os.chmod(d, 0o700)
    return d


def _mount(srv, mode, script):
    return srv.mount("/app", script)


def test_script_in_root_only_directory_is_reported(apache_factory, mode):
    srv = apache_factory()
    d = _private_dir(srv)
    script = d / "app.wsgi"
    script.write_text(APP)
    os.chmod(script, 0o644)
    conf = _mount(srv, mode, script)
    rc, out = srv.configtest(conf)
    assert rc == 0, out  # a warning: permissions may change before start
    lines = _lines(out, "RW0042")
    assert len(lines) == 1, out
    line = lines[0]
    assert str(script) in line and f"'{d}' (mode 0700, owner 0:0)" in line, line
    assert "www-data" in line and "chmod o+x" in line, line
    srv.start(conf)
    assert len(_lines(srv.error_log(), "RW0042")) == 1, srv.error_log()
    r = srv.get("/app")
    # httpd itself refuses a path it cannot search (AH00035), before any module runs.
    assert r.status == 403, r
    assert "search permissions are missing" in srv.error_log()


def test_unreadable_script_is_reported_at_start_and_fails_its_request(apache_factory, mode):
    srv = apache_factory()
    script = srv.write_file("apps/secret.wsgi", APP, mode=0o600)  # root's, www-data may not read
    conf = _mount(srv, mode, script)
    rc, out = srv.configtest(conf)
    assert rc == 0, out
    lines = _lines(out, "RW0042")
    assert len(lines) == 1, out
    assert f"'{script}' (mode 0600, owner 0:0) cannot be read by www-data" in lines[0], lines[0]
    srv.start(conf)
    start_lines = _lines(srv.error_log(), "RW0042")
    assert len(start_lines) == 1 and "[rwsgi:error]" in start_lines[0], start_lines
    r = srv.get("/app")
    assert r.status == 500, r
    assert srv.wait_for_log(r"RW0042: the WSGI script .* cannot be read by this process", count=1)
    req_lines = _lines(srv.error_log(), "RW0042")[1:]
    assert len(req_lines) == 1, req_lines
    assert "cannot be read by www-data" in req_lines[0] and "chmod" in req_lines[0]
    # One clear line, not a traceback.
    assert "Traceback" not in srv.error_log()
    assert srv.get("/index.html").status == 200  # the server keeps serving


def test_unreadable_python_path_entry_is_reported(apache_factory, mode):
    srv = apache_factory()
    d = _private_dir(srv)
    script = srv.write_file("apps/prefix.wsgi", APP)
    if mode == "embedded":
        conf = f"WSGIPythonPath {d}\nWSGIScriptAlias /app {script}\n"
        what = "WSGIPythonPath entry"
    else:
        conf = (f"WSGIDaemonProcess diag processes=1 threads=2 python-path={d}\n"
                f"WSGIScriptAlias /app {script} process-group=diag\n")
        what = "WSGIDaemonProcess diag python-path entry"
    rc, out = srv.configtest(conf)
    assert rc == 0, out
    lines = _lines(out, "RW0042")
    assert len(lines) == 1, out
    assert what in lines[0] and str(d) in lines[0] and "www-data" in lines[0], lines[0]
    srv.start(conf)
    assert srv.get("/app").status == 200  # Python skips a path entry it cannot read
    assert len(_lines(srv.error_log(), "RW0042")) == 1


def test_daemon_user_is_the_one_checked(apache_factory, mode):
    """A script only www-data may read, served by a daemon group running as `nobody`."""
    srv = apache_factory()
    script = srv.write_file("apps/mine.wsgi", APP, mode=0o600)
    os.chown(script, 33, 33)  # www-data
    if mode == "embedded":
        conf = f"WSGIScriptAlias /app {script}\n"
    else:
        conf = (f"WSGIDaemonProcess diag processes=1 threads=2 user=nobody group=nogroup\n"
                f"WSGIScriptAlias /app {script} process-group=diag\n")
    rc, out = srv.configtest(conf)
    assert rc == 0, out
    if mode == "embedded":
        assert not DIAG.search(out), out  # www-data reads it
        srv.start(conf)
        assert srv.get("/app").status == 200
        return
    lines = _lines(out, "RW0042")
    assert len(lines) == 1, out
    assert "cannot be read by nobody" in lines[0], lines[0]
    srv.start(conf)
    assert srv.get("/app").status == 500
    assert srv.wait_for_log(r"RW0042: the WSGI script .* cannot be read by nobody")


def test_unreachable_socket_directory_fails_configtest(apache_factory, mode):
    srv = apache_factory()
    d = _private_dir(srv)
    script = srv.write_file("apps/prefix.wsgi", APP)
    rc, out = srv.configtest(f"WSGISocketPrefix {d}/rwsgi\n" + _mount(srv, mode, script))
    if mode == "embedded" and "WSGIDaemonProcess" not in srv.render_conf():
        # Without a daemon group there is no socket.
        assert rc == 0 and not DIAG.search(out), out
        return
    assert rc != 0, out
    lines = _lines(out, "RW0013")
    assert len(lines) == 1, out
    assert f"socket directory '{d}'" in lines[0] and "WSGISocketPrefix" in lines[0], lines[0]
    assert "www-data" in lines[0], lines[0]


def test_script_directory_target_is_checked(apache_factory, mode):
    srv = apache_factory()
    d = _private_dir(srv, srv.apps)  # under apps/, where the harness grants access
    (d / "app.wsgi").write_text(APP)
    conf = srv.mount("/d/", f"{d}/")
    rc, out = srv.configtest(conf)
    assert rc == 0, out
    lines = _lines(out, "RW0042")
    assert len(lines) == 1, out
    assert f"'{d}' (mode 0700, owner 0:0) cannot be searched by www-data" in lines[0], lines[0]
    os.chmod(d, 0o755)
    os.chmod(d / "app.wsgi", 0o644)
    rc, out = srv.configtest(conf)
    assert rc == 0 and not DIAG.search(out), out
    srv.start(conf)
    r = srv.get("/d/app.wsgi")
    assert r.status == 200 and r.text, r


def test_unreadable_import_script_is_reported(apache_factory, mode):
    srv = apache_factory()
    pre = srv.write_file("apps/preload.py", "x = 1\n", mode=0o600)  # root's only
    script = srv.write_file("apps/prefix.wsgi", APP)
    if mode == "embedded":
        conf = (f"WSGIImportScript {pre} process-group=%{{GLOBAL}} application-group=%{{GLOBAL}}\n"
                f"WSGIScriptAlias /app {script}\n")
    else:
        conf = ("WSGIDaemonProcess diag processes=1 threads=2\n"
                f"WSGIImportScript {pre} process-group=diag application-group=%{{GLOBAL}}\n"
                f"WSGIScriptAlias /app {script} process-group=diag\n")
    rc, out = srv.configtest(conf)
    assert rc == 0, out
    lines = _lines(out, "RW0042")
    assert len(lines) == 1, out
    group = "%{GLOBAL}" if mode == "embedded" else "diag"
    assert f"WSGIImportScript process-group={group} '{pre}'" in lines[0], lines[0]
    assert "cannot be read by www-data" in lines[0], lines[0]


def test_python_home_the_user_cannot_read_is_reported(apache_factory, mode):
    """A valid venv inside a root-only directory: fine for root (-t passes), but the user that
    starts Python there cannot read it."""
    srv = apache_factory()
    d = _private_dir(srv)
    venv = d / "venv"
    subprocess.run([harness.APP_PYTHON, "-m", "venv", "--without-pip", str(venv)], check=True,
                   timeout=120)
    script = srv.write_file("apps/prefix.wsgi", APP)
    rc, out = srv.configtest(_home_conf(srv, mode, venv, script))
    assert rc == 0, out
    assert "RW0040" not in out and "RW0041" not in out, out
    lines = _lines(out, "RW0042")
    assert len(lines) == 1, out
    what = "WSGIPythonHome" if mode == "embedded" else "WSGIDaemonProcess diag python-home"
    assert f"{what} '{venv}'" in lines[0], lines[0]
    assert f"'{d}' (mode 0700, owner 0:0) cannot be searched by www-data" in lines[0], lines[0]


@pytest.mark.embedded_only  # daemon-specific: the server runs in daemon mode
def test_script_of_a_group_with_an_unknown_user_is_not_judged_by_other_users(apache_factory):
    """The group's user does not exist, so the group never runs the script (it fails on its
    own, RW0013 at start): -t must not report the script as unreadable by some other group's
    user (www-data, of the harness's group)."""
    srv = apache_factory(mode="daemon")
    script = srv.write_file("apps/secret.wsgi", APP, mode=0o600)  # root's only
    rc, out = srv.configtest("WSGIDaemonProcess bad processes=1 threads=1 "
                             "user=rwsgi-no-such-user\n"
                             f"WSGIScriptAlias /app {script} process-group=bad\n")
    assert rc == 0 and "Syntax OK" in out, out
    assert not _lines(out, "RW0042"), out


@pytest.mark.embedded_only  # daemon-specific: the server runs in daemon mode
def test_script_of_no_group_names_each_possible_user_once(apache_factory):
    """No process-group: the script may run embedded (as www-data) or in the harness's group
    (also www-data). The report names www-data once, not once per place it may run."""
    srv = apache_factory(mode="daemon")
    script = srv.write_file("apps/secret.wsgi", APP, mode=0o600)  # root's only
    rc, out = srv.configtest(f"WSGIScriptAlias /app {script}\n")
    assert rc == 0, out
    lines = _lines(out, "RW0042")
    assert len(lines) == 1, out
    assert lines[0].count("cannot be read by www-data") == 1, lines[0]
