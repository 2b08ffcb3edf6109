"""Script loading and reloading, WSGIImportScript, callables, restrictions, graceful
restarts, SetHandler, interpreter directives and the wsgiref validator."""

import hashlib
import json
import os
import subprocess
import time

import pytest

import harness


def _versioned_app(version: str) -> str:
    return (
        "import os\n"
        f"VERSION = {version!r}\n"
        "def application(environ, start_response):\n"
        "    body = ('%s %d' % (VERSION, os.getpid())).encode()\n"
        "    start_response('200 OK', [('Content-Type', 'text/plain')])\n"
        "    return [body]\n")


def _rewrite(path, content):
    st = os.stat(path)
    with open(path, "w") as f:
        f.write(content)
    os.utime(path, (st.st_atime + 5, st.st_mtime + 5))


def _version_pid(r):
    assert r.status == 200 and r.complete, r
    v, pid = r.body.decode().split()
    return v, int(pid)


def test_script_reloading_on(apache_factory, mode):
    srv = apache_factory()
    script = srv.write_file("apps/reload.wsgi", _versioned_app("v1"))
    srv.start(srv.mount("/app", script))
    for _ in range(3):
        assert _version_pid(srv.get("/app"))[0] == "v1"
    _rewrite(script, _versioned_app("v2"))
    for _ in range(5):
        assert _version_pid(srv.get("/app"))[0] == "v2"
    assert srv.get("/app").status == 200


def test_script_reloading_off(apache_factory, mode):
    """With WSGIScriptReloading Off a process that loaded v1 keeps serving v1 after the file
    changes. All requests go over one kept-alive connection, so they reach one httpd child
    (embedded) and, through its kept daemon connection and the group's single process, one
    daemon process: every answer must come from the same process and say v1."""
    import http.client
    srv = apache_factory(daemon_options="processes=1 threads=10")
    script = srv.write_file("apps/reload.wsgi", _versioned_app("v1"))
    srv.start(srv.mount("/app", script) + "WSGIScriptReloading Off\n")
    c = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=30)

    def get():
        c.request("GET", "/app")
        r = c.getresponse()
        body = r.read().decode()
        assert r.status == 200, (r.status, body)
        v, pid = body.split()
        return v, int(pid)

    try:
        v, first = get()
        assert v == "v1"
        _rewrite(script, _versioned_app("v2"))
        for _ in range(5):
            assert get() == ("v1", first)
    finally:
        c.close()
    # Processes started after the change (a graceful restart) load the file as it is now.
    srv.graceful(probe_path="/app")
    assert _version_pid(srv.get("/app"))[0] == "v2"


def test_script_reload_after_syntax_error_recovers(apache_factory, mode):
    srv = apache_factory()
    script = srv.write_file("apps/reload.wsgi", _versioned_app("v1"))
    srv.start(srv.mount("/app", script))
    assert _version_pid(srv.get("/app"))[0] == "v1"
    _rewrite(script, "def application(:\n")
    r = srv.get("/app")
    assert r.status == 500, r
    assert srv.wait_for_log("SyntaxError")
    _rewrite(script, _versioned_app("v3"))
    assert _version_pid(srv.get("/app"))[0] == "v3"


def test_missing_script_and_missing_callable(apache_factory, mode):
    srv = apache_factory()
    script = srv.app("callable.wsgi")
    srv.start(srv.mount("/missing", srv.apps / "does-not-exist.wsgi")
              + srv.mount("/nocallable", script, callable_object="nope"))
    r = srv.get("/missing")
    assert r.status in (404, 500), r
    r = srv.get("/nocallable")
    assert r.status == 500, r
    assert srv.wait_for_log("nope")


def test_import_script_preloads_at_child_start(apache_factory, mode):
    srv = apache_factory()
    group = "%{GLOBAL}" if mode == "embedded" else harness.DAEMON_GROUP
    marker = srv.state / "preloaded"
    pre = srv.write_file("apps/preload.py", (
        "import os, sys\n"
        "sys._rwsgi_preloaded_pid = os.getpid()\n"
        "with open('@STATE@/preloaded', 'a') as f:\n"
        "    f.write('%d\\n' % os.getpid())\n"
        "print('RWSGI-PRELOAD-DONE pid=%d' % os.getpid(), file=sys.stderr, flush=True)\n"))
    app = srv.app("sysinfo.wsgi")
    srv.start(f"WSGIImportScript {pre} process-group={group} application-group=%{{GLOBAL}}\n"
              + srv.mount("/info", app, application_group="%{GLOBAL}"))
    # no request has been made: the children preloaded the script on their own
    assert harness.wait_for_file(marker, 10), "WSGIImportScript did not run at child start"
    pids = {int(x) for x in marker.read_text().split()}
    # The processes that preload are the parent's children: httpd children in embedded mode,
    # the group's daemon processes in daemon mode.
    assert pids & set(srv.child_pids()), (pids, srv.child_pids())
    assert srv.wait_for_log("RWSGI-PRELOAD-DONE")
    d = srv.get("/info").json()
    assert d["preloaded"] == d["pid"], d


def test_callable_object_directive_and_option(apache_factory, mode):
    srv = apache_factory()
    script = srv.app("callable.wsgi")
    srv.start(srv.mount("/default", script)
              + srv.mount("/opt", script, callable_object="myapp")
              + srv.mount("/dir", script)
              + "<Location /dir>\n  WSGICallableObject myapp\n</Location>\n")
    assert srv.get("/default").body == b"default:application"
    assert srv.get("/opt").body == b"custom:myapp"
    assert srv.get("/dir").body == b"custom:myapp"


def test_restrict_embedded(apache_factory, mode):
    srv = apache_factory()
    srv.start(srv.mount("/app", srv.app("echo.wsgi")) + "WSGIRestrictEmbedded On\n")
    r = srv.get("/app")
    # Embedded requests are refused; daemon-mode requests are what the directive is meant for.
    assert r.status == (500 if mode == "embedded" else 200), r
    if mode == "embedded":
        assert "RW0012" in srv.error_log()
    assert srv.get("/index.html").status == 200


def test_restrict_stdout_and_stdin(apache_factory):
    srv = apache_factory()
    srv.start(srv.mount("/r", srv.app("response.wsgi"))
              + "WSGIRestrictStdout On\nWSGIRestrictStdin On\n")
    d = srv.get("/r/print?marker=RWSGI-RESTRICT-1").json()
    assert d["stdout"].startswith("raised:"), d
    assert "OSError" in d["stdout"].split(":")[2].split(","), d
    assert d["stderr"] == "ok", d
    r = srv.get("/r/stdin")
    assert r.status == 200 and r.body.startswith(b"raised:"), r
    assert "RWSGI-RESTRICT-1 via stdout" not in srv.error_log()


def test_graceful_restarts_keep_serving(apache_mpm, mode):
    srv = apache_mpm
    srv.start(srv.mount("/app", srv.app("echo.wsgi")))
    assert srv.get("/app").status == 200
    old = set(srv.child_pids())
    for i in range(3):
        srv.graceful(probe_path="/app")
        r = srv.get("/app/after-graceful")
        assert r.status == 200 and r.complete, (i, r)
        assert r.json()["PATH_INFO"] == "/after-graceful"
    assert harness.wait_for(lambda: set(srv.child_pids()) - old, 10), "no new children"


def test_graceful_with_preloaded_app_and_threads(apache_factory):
    """Graceful while requests are in flight: in-flight requests complete."""
    import threading
    srv = apache_factory()
    srv.start(srv.mount("/r", srv.app("response.wsgi")))
    srv.get("/r/ok")
    results = []
    t = threading.Thread(target=lambda: results.append(srv.get("/r/sleep?t=2")))
    t.start()
    time.sleep(0.5)
    srv.graceful(probe_path="/r/ok")
    t.join(20)
    assert results and results[0].status == 200 and results[0].body == b"slept\n", results
    assert srv.get("/r/ok").status == 200


@pytest.mark.parametrize("execcgi,expected", [("+ExecCGI", 200), ("-ExecCGI", 403)])
def test_sethandler_in_directory(apache_factory, execcgi, expected):
    srv = apache_factory()
    srv.write_file("handler/echo.wsgi", (harness.APPS_SRC / "echo.wsgi").read_text())
    srv.start(
        "Alias /h @ROOT@/handler\n"
        "<Directory @ROOT@/handler>\n"
        "  SetHandler wsgi-script\n"
        f"  Options {execcgi}\n"
        "  Require all granted\n"
        "</Directory>\n")
    r = srv.get("/h/echo.wsgi/extra/path")
    assert r.status == expected, r
    if expected == 200:
        env = r.json()
        assert env["SCRIPT_NAME"] == "/h/echo.wsgi"
        assert env["PATH_INFO"] == "/extra/path"
        assert env["mod_wsgi.request_handler"] == "wsgi-script"


def test_addhandler_by_extension(apache_factory):
    srv = apache_factory()
    srv.write_file("handler/echo.wsgi", (harness.APPS_SRC / "echo.wsgi").read_text())
    srv.write_file("handler/plain.txt", "plain text\n")
    srv.start(
        "Alias /h @ROOT@/handler\n"
        "<Directory @ROOT@/handler>\n"
        "  AddHandler wsgi-script .wsgi\n"
        "  Options +ExecCGI\n"
        "  Require all granted\n"
        "</Directory>\n")
    r = srv.get("/h/echo.wsgi")
    assert r.status == 200 and r.json()["SCRIPT_NAME"] == "/h/echo.wsgi"
    r = srv.get("/h/plain.txt")
    assert r.status == 200 and r.body == b"plain text\n"


def test_python_directives(apache_factory):
    srv = apache_factory()
    srv.write_file("pylib/rwsgi_pathmod.py", "VALUE = 'found-via-WSGIPythonPath'\n")
    app = srv.app("sysinfo.wsgi")
    srv.start(srv.mount("/info", app)
              + "WSGIPythonPath @ROOT@/pylib\n"
              + "WSGIPythonOptimize 1\n"
              + "WSGIDontWriteBytecode On\n"
              + "WSGIPythonHashSeed 123\n"
              + "WSGIPythonWarnings ignore::DeprecationWarning\n")
    d = srv.get("/info").json()
    expected_hash = int(subprocess.run(
        [harness.APP_PYTHON, "-c", "print(hash('abc'))"], env={"PYTHONHASHSEED": "123"},
        capture_output=True, text=True, check=True).stdout)
    problems = []
    if d["pathmod"] != "found-via-WSGIPythonPath":
        problems.append(f"WSGIPythonPath: {d['pathmod']} (sys.path={d['path']})")
    if d["optimize"] != 1 or d["debug_builtin"] is not False:
        problems.append(f"WSGIPythonOptimize: optimize={d['optimize']} __debug__={d['debug_builtin']}")
    if d["dont_write_bytecode"] is not True:
        problems.append("WSGIDontWriteBytecode: sys.dont_write_bytecode is False")
    if d["hash_abc"] != expected_hash:
        problems.append(f"WSGIPythonHashSeed: hash('abc')={d['hash_abc']} expected {expected_hash}")
    if not any("ignore" in w and "DeprecationWarning" in w for w in d["warnings"]):
        problems.append(f"WSGIPythonWarnings: filters {d['warnings']}")
    if tuple(d["version"][:2]) != harness.app_python_version():
        problems.append(f"unexpected Python {d['version']}")
    assert not problems, problems


def test_python_is_the_build_python(apache_factory):
    """The interpreter is the one the module was built for (Debian's /usr/bin/python3 by
    default), never a pyenv shim or the first python3 on PATH."""
    srv = apache_factory()
    srv.start(srv.mount("/info", srv.app("sysinfo.wsgi")))
    d = srv.get("/info").json()
    assert not any("/.pyenv/" in p for p in d["path"]), d["path"]
    assert os.path.realpath(d["executable"] or "") == os.path.realpath(harness.APP_PYTHON), d


def test_wsgiref_validator(apache_factory, mode):
    srv = apache_factory()
    srv.start(srv.mount("/v", srv.app("validated.wsgi")))
    r = srv.get("/v/x?q=1")
    assert r.status == 200 and r.complete, r
    assert r.json() == {"method": "GET", "len": 0, "body": ""}
    r = srv.request("POST", "/v/x", body=b"hello validator",
                    headers={"Content-Type": "text/plain"})
    assert r.status == 200 and r.json()["body"] == "hello validator", r
    r = srv.get("/v/stream")
    assert r.status == 200 and r.complete and r.body == b"part0;part1;part2;part3;part4;", r
    r = srv.get("/v/write")
    assert r.status == 200 and r.body == b"written;returned", r
    r = srv.get("/v/empty")
    assert r.status == 204 and r.body == b"", r
    r = srv.get("/v")
    assert r.status == 200, r
    assert srv.wait_for_log("validated app saw GET /write")
    srv.stop()  # iterator __del__ checks run at the latest at interpreter shutdown
    log = srv.error_log()
    assert "AssertionError" not in log, log
    assert "WSGIWarning" not in log, log
    assert "garbage collected without being closed" not in log, log
    assert "validated writelines" in log


def test_stop_with_request_in_flight(apache_factory):
    """SIGTERM while a request sleeps in Python: the server stops in time, without a crash
    (the fixture fails the test on 'exit signal', [crit], panics), and the client's
    connection is closed rather than left hanging."""
    import threading
    srv = apache_factory()
    srv.start(srv.mount("/r", srv.app("response.wsgi")))
    srv.get("/r/ok")
    results = []
    t = threading.Thread(target=lambda: results.append(srv.get("/r/sleep?t=3")))
    t.start()
    time.sleep(0.5)
    t0 = time.monotonic()
    srv.stop()
    stop_time = time.monotonic() - t0
    t.join(15)
    assert not t.is_alive()
    assert not srv.problems, srv.problems
    assert stop_time < 12, stop_time
    assert results and not results[0].timed_out, results
