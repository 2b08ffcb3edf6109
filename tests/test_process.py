"""Process-level behaviour: Python only in the children (never the httpd parent), any number of
graceful restarts without the parent growing, logging to the right virtual host, WSGIPythonHome
with a virtual environment, and the module's identity (<IfModule mod_rwsgi.c>, LogLevel)."""

import os
import re
import subprocess

import pytest

import harness


def _rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError(f"no VmRSS for {pid}")


def test_python_never_initialised_in_parent(apache_factory):
    srv = apache_factory()
    script = srv.app("where.wsgi")
    srv.start(srv.mount("/w", script))
    assert srv.get("/w").status == 200
    srv.graceful(probe_path="/w")
    assert srv.get("/w").status == 200
    log = srv.error_log()
    states = re.findall(r"post_config: Py_IsInitialized\(\)=(\d) in the httpd parent", log)
    assert len(states) >= 2, log  # the start and the graceful restart
    assert set(states) == {"0"}, states
    # The app runs in a child, not in the parent.
    assert srv.get("/w").json()["pid"] != srv.parent_pid


@pytest.mark.parametrize("mpm", harness.mpms("event", "prefork"))
def test_many_graceful_restarts_parent_does_not_grow(apache_factory, mpm):
    srv = apache_factory(mpm=mpm)
    script = srv.app("where.wsgi")
    srv.start(srv.mount("/w", script))
    assert srv.get("/w").status == 200
    srv.graceful(probe_path="/w")
    base = _rss_kib(srv.parent_pid)
    for _ in range(8):
        srv.graceful(probe_path="/w")
        r = srv.get("/w")
        assert r.status == 200 and r.complete
    grown = _rss_kib(srv.parent_pid) - base
    # Python is never started in the parent, so a restart cannot leak an interpreter (measured
    # ~1.4 MB per restart when it is): allow allocator noise only.
    assert grown < 2048, f"parent RSS grew by {grown} KiB over 8 graceful restarts"


def test_logs_go_to_the_virtual_hosts_error_log(apache_factory):
    srv = apache_factory()
    script = srv.app("where.wsgi")
    vlog = srv.root / "logs" / "vhost_error.log"
    srv.start(f"""
<VirtualHost 127.0.0.1:{srv.port}>
    ServerName vhost.test
    ErrorLog {vlog}
    {srv.mount("/w", script)}
</VirtualHost>
<VirtualHost 127.0.0.1:{srv.port}>
    ServerName other.test
    {srv.mount("/w", script)}
</VirtualHost>
""")
    r = srv.request("GET", "/w?tag=vhost", headers={"Host": "vhost.test"})
    assert r.status == 200
    r = srv.request("GET", "/w?tag=main", headers={"Host": "other.test"})
    assert r.status == 200
    assert harness.wait_for(lambda: vlog.exists() and "stderr-line vhost" in vlog.read_text())
    vtext = vlog.read_text()
    main = srv.error_log()
    for kind in ("errors-line", "print-line", "stderr-line"):
        assert f"{kind} vhost" in vtext, (kind, vtext)
        assert f"{kind} vhost" not in main, kind
        assert f"{kind} main" in main, (kind, main)
        assert f"{kind} main" not in vtext, kind


def test_python_home_virtualenv(apache_factory):
    srv = apache_factory()
    venv = srv.root / "venv"
    subprocess.run([harness.APP_PYTHON, "-m", "venv", "--without-pip", str(venv)], check=True)
    site = next((venv / "lib").glob("python3.*")) / "site-packages"
    (site / "venvmarker.py").write_text("VALUE = 'from-venv'\n")
    for dirpath, dirs, files in os.walk(venv):
        os.chmod(dirpath, 0o755)
        for f in files:
            p = os.path.join(dirpath, f)
            if not os.path.islink(p):
                os.chmod(p, 0o755 if "/bin/" in p else 0o644)
    script = srv.app("where.wsgi")
    srv.start(f"WSGIPythonHome {venv}\n" + srv.mount("/w", script))
    info = srv.get("/w").json()
    assert info["prefix"] == str(venv)
    assert info["base_prefix"] == harness.app_python_prefix()
    assert info["marker"] == "from-venv"


def test_module_identity_ifmodule_and_loglevel(apache_factory):
    srv = apache_factory(log_level="warn rwsgi:debug")
    script = srv.app("where.wsgi")
    srv.start(f"""
<IfModule mod_rwsgi.c>
    WSGIScriptAlias /w {script}
</IfModule>
<IfModule !mod_rwsgi.c>
    Alias /w /nonexistent
</IfModule>
""")
    assert srv.get("/w").status == 200
    # LogLevel rwsgi:debug enables this module's debug lines while the server stays at warn.
    assert re.search(r"\[rwsgi:debug\].*post_config: Py_IsInitialized", srv.error_log())
    assert "[mpm_event:info]" not in srv.error_log()
