"""Daemon-mode directives that only act on daemons: WSGIErrorOverride (httpd's ErrorDocument
replaces an application's error page) and WSGIIgnoreActivity (health checks do not keep an idle
daemon alive). Graceful restarts under load on every MPM are in test_faults.py (ten of them,
both modes)."""

import json
import os
import signal
import threading
import time

import pytest

import harness

# These tests build their own daemon-mode servers (mode="daemon"); the marker only keeps the
# automatic mode parametrisation from running each of them twice.
pytestmark = pytest.mark.embedded_only

APP = """\
import os
def application(environ, start_response):
    if environ['PATH_INFO'] == '/missing':
        start_response('404 Not Found', [('Content-Type', 'text/plain')])
        return [b'application 404 body']
    start_response('200 OK', [('Content-Type', 'text/plain')])
    return [str(os.getpid()).encode()]
"""


def _server(apache_factory, daemon_opts, extra=""):
    srv = apache_factory(mode="daemon")
    app = srv.write_file("apps/opt.wsgi", APP)
    srv.start(f"WSGIDaemonProcess opt {daemon_opts}\n"
              f"WSGIScriptAlias /a {app} process-group=opt\n" + extra)
    return srv


def test_error_override_uses_error_document(apache_factory):
    srv = _server(apache_factory, "processes=1 threads=2", """
<Location /a>
    WSGIErrorOverride On
</Location>
ErrorDocument 404 "httpd error document"
""")
    r = srv.get("/a/missing")
    assert r.status == 404
    assert b"httpd error document" in r.body and b"application 404 body" not in r.body
    assert srv.get("/a/ok").status == 200


def test_error_override_off_keeps_application_body(apache_factory):
    srv = _server(apache_factory, "processes=1 threads=2", 'ErrorDocument 404 "httpd error document"\n')
    r = srv.get("/a/missing")
    assert r.status == 404 and r.body == b"application 404 body"


def test_ignore_activity_lets_idle_daemon_retire(apache_factory):
    srv = _server(apache_factory, "processes=1 threads=2 inactivity-timeout=2", """
<Location /a/health>
    WSGIIgnoreActivity On
</Location>
""")
    first = srv.get("/a/ok").body
    # Health checks every 0.3 s for 4 s: they must not keep the process alive.
    deadline = time.monotonic() + 4
    while time.monotonic() < deadline:
        assert srv.get("/a/health").status == 200
        time.sleep(0.3)
    assert harness.wait_for(lambda: srv.get("/a/ok").body != first, timeout=5), \
        "the daemon should have been replaced after inactivity-timeout"
    assert "inactivity-timeout reached" in srv.error_log()


def test_activity_keeps_daemon(apache_factory):
    srv = _server(apache_factory, "processes=1 threads=2 inactivity-timeout=2")
    first = srv.get("/a/ok").body
    deadline = time.monotonic() + 4
    while time.monotonic() < deadline:
        assert srv.get("/a/ok").body == first
        time.sleep(0.3)


def test_restrict_process(apache_factory):
    srv = apache_factory(mode="daemon")
    app = srv.write_file("apps/opt.wsgi", APP)
    srv.start(f"""WSGIDaemonProcess opt processes=1 threads=2
WSGIDaemonProcess other processes=1 threads=2
WSGIScriptAlias /ok {app} process-group=opt
WSGIScriptAlias /no {app} process-group=other
<Location />
    WSGIRestrictProcess opt
</Location>
""")
    assert srv.get("/ok/ok").status == 200
    assert srv.get("/no/ok").status == 500
    assert "process group 'other' is not allowed here by WSGIRestrictProcess" in srv.error_log()


def test_unreachable_socket_directory_fails_start(apache_factory):
    srv = apache_factory(mode="daemon")
    private = srv.root / "private"
    private.mkdir(mode=0o700)
    os.chmod(private, 0o700)  # root only: www-data cannot traverse it
    app = srv.write_file("apps/opt.wsgi", APP)
    with pytest.raises(harness.HarnessError) as e:
        srv.start(f"WSGISocketPrefix {private}/rwsgi\n"
                  f"WSGIDaemonProcess opt processes=1 threads=2\n"
                  f"WSGIScriptAlias /a {app} process-group=opt\n")
    text = str(e.value) + srv.error_log()
    assert "RW0013" in text and "cannot reach the socket directory" in text, text
    assert str(private) in text


def test_sigkilled_parent_leaves_no_daemon(apache_factory):
    srv = apache_factory(mode="daemon")
    app = srv.write_file("apps/opt.wsgi", APP)
    srv.start(f"WSGIDaemonProcess opt processes=2 threads=2\n"
              f"WSGIScriptAlias /a {app} process-group=opt\n")
    assert srv.get("/a/ok").status == 200
    parent = srv.parent_pid
    kids = [(pid, harness._proc_stat(pid)) for pid, _ in harness.children_of(parent)]
    daemons = [pid for pid, _ in kids if open(f"/proc/{pid}/comm").read().startswith("wsgi")]
    assert len(daemons) == 4, kids  # two in 'opt', two in the harness's own group
    time.sleep(0.5)
    os.kill(parent, signal.SIGKILL)
    # The kernel's parent-death signal ends every daemon.
    assert harness.wait_for(lambda: not any(harness.pid_alive(p) for p in daemons), timeout=10), \
        [p for p in daemons if harness.pid_alive(p)]
    # Orphaned httpd children of a SIGKILLed event-MPM parent ignore SIGTERM (stock Apache
    # behaviour): end them by PID so the test leaves nothing behind.
    for pid, _ in kids:
        if harness.pid_alive(pid):
            os.kill(pid, signal.SIGKILL)
    srv.started = False


@pytest.mark.parametrize("option", ["maximum-requests=7", "restart-interval=1"])
def test_recycling_under_load_fails_no_request(apache_factory, option):
    srv = apache_factory(mode="daemon")
    app = srv.write_file("apps/opt.wsgi", APP)
    srv.start(f"WSGIDaemonProcess opt processes=2 threads=3 {option}\n"
              f"WSGIScriptAlias /a {app} process-group=opt\n")
    pids, bad = set(), []
    lock = threading.Lock()
    deadline = time.monotonic() + 4

    def client():
        while time.monotonic() < deadline:
            try:
                r = srv.get("/a/ok")
                good = r.status == 200 and r.complete
            except Exception as e:  # refused/reset connections are failures too
                good, r = False, e
            with lock:
                if good:
                    pids.add(r.body)
                else:
                    bad.append(repr(r)[:200])

    threads = [threading.Thread(target=client) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert len(pids) >= 4, f"processes were not recycled: {pids}"
    assert not bad, f"{len(bad)} failed: {bad[:3]}"


PATH_APP = """\
import json, os, sys
def application(environ, start_response):
    start_response('200 OK', [('Content-Type', 'application/json')])
    return [json.dumps({'path0': sys.path[0], 'cwd': os.getcwd()}).encode()]
"""


def test_home_goes_first_on_sys_path(apache_factory):
    """As mod_wsgi: an explicit home= is the daemon's working directory and sys.path[0]."""
    srv = apache_factory(mode="daemon")
    home = srv.root / "home"
    home.mkdir()
    os.chmod(home, 0o755)
    app = srv.write_file("apps/path.wsgi", PATH_APP)
    srv.start(f"WSGIDaemonProcess h home={home}\nWSGIScriptAlias /p {app} process-group=h\n")
    r = srv.get("/p")
    assert r.status == 200, r
    assert json.loads(r.body) == {"path0": str(home), "cwd": str(home)}


def test_without_home_sys_path_is_untouched(apache_factory):
    srv = apache_factory(mode="daemon")
    app = srv.write_file("apps/path.wsgi", PATH_APP)
    srv.start(f"WSGIDaemonProcess h\nWSGIScriptAlias /p {app} process-group=h\n")
    r = srv.get("/p")
    assert r.status == 200, r
    assert json.loads(r.body)["path0"] != json.loads(r.body)["cwd"]
