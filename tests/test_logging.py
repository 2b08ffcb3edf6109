"""Python `logging` records of an application land in the Apache error log at the matching
level (DEBUG→debug, INFO→info, WARNING→warn, ERROR→error, CRITICAL→crit) with the request id,
LogLevel filters them, `logging.basicConfig()` still works and nothing is logged twice. Every
test runs in embedded and daemon mode, on each MPM where threads matter."""

import re

import harness

LEVELS = [("debug", "debug"), ("info", "info"), ("warning", "warn"), ("error", "error"),
          ("critical", "crit")]

APP = """\
import logging
log = logging.getLogger("app")
log.setLevel(logging.DEBUG)

def application(environ, start_response):
    tag = environ["QUERY_STRING"]
    if environ["PATH_INFO"] == "/exc":
        try:
            1 / 0
        except ZeroDivisionError:
            log.exception("boom-%s", tag)
    else:
        for name in ("debug", "info", "warning", "error", "critical"):
            getattr(log, name)("rec-%s-%s", name, tag)
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [environ["mod_wsgi.request_id"].encode()]
"""

BASIC = """\
import logging
logging.basicConfig(level=logging.INFO, format="BASIC %(levelname)s %(name)s %(message)s")
log = logging.getLogger("app")

def application(environ, start_response):
    log.info("once-%s", environ["QUERY_STRING"])
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"ok"]
"""

EXPLICIT = """\
import logging, mod_rwsgi
log = logging.getLogger("explicit")
log.propagate = False
log.addHandler(mod_rwsgi.LogHandler())
log.setLevel(logging.INFO)
logging.getLogger().addHandler(logging.NullHandler())  # the app "configured logging"

def application(environ, start_response):
    log.info("explicit-%s", environ["QUERY_STRING"])
    logging.getLogger("other").warning("swallowed-%s", environ["QUERY_STRING"])
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"ok"]
"""


def _serve(apache_factory, source, mpm=None, **kw):
    srv = apache_factory(mpm=mpm, **kw)
    srv.allow_log(r"rec-critical-")  # crit lines are what this test produces on purpose
    script = srv.write_file("apps/logs.wsgi", source)
    srv.start(srv.mount("/app", script))
    return srv


def _find(srv, needle, count=1):
    assert srv.wait_for_log(re.escape(needle), count=count), (needle, srv.error_log()[-3000:])
    return [line for line in srv.error_log().splitlines() if needle in line]


def test_records_at_each_level_with_request_id(apache_factory, mode, mpm):
    srv = _serve(apache_factory, APP, mpm=mpm)
    for tag in ("one", "two"):
        r = srv.get(f"/app?{tag}")
        assert r.status == 200, r
        rid = r.text
        for name, level in LEVELS:
            lines = _find(srv, f"app: rec-{name}-{tag}")
            assert len(lines) == 1, lines
            assert f"[rwsgi:{level}]" in lines[0], lines[0]
            assert f"[{rid}] app: rec-{name}-{tag}" in lines[0], (rid, lines[0])


def test_exception_traceback_lines_carry_level_and_id(apache_factory, mode):
    srv = _serve(apache_factory, APP)
    r = srv.get("/app/exc?x")
    assert r.status == 200, r
    rid = r.text
    _find(srv, "ZeroDivisionError: division by zero")
    lines = [line for line in srv.error_log().splitlines() if f"[{rid}]" in line]
    text = "\n".join(lines)
    assert "app: boom-x" in text and "Traceback (most recent call last):" in text, text
    assert all("[rwsgi:error]" in line for line in lines), text


def test_loglevel_filters_records(apache_factory, mode):
    srv = _serve(apache_factory, APP, log_level="warn")
    r = srv.get("/app?filtered")
    assert r.status == 200
    _find(srv, "app: rec-critical-filtered")  # the last one written
    log = srv.error_log()
    assert "rec-warning-filtered" in log and "rec-error-filtered" in log
    assert "rec-debug-filtered" not in log and "rec-info-filtered" not in log, log


def test_basic_config_still_works_and_nothing_is_logged_twice(apache_factory, mode):
    srv = _serve(apache_factory, BASIC)
    assert srv.get("/app?t1").status == 200
    assert srv.get("/app?t2").status == 200
    for tag in ("t1", "t2"):
        lines = _find(srv, f"once-{tag}")
        assert len(lines) == 1, lines
        # basicConfig's handler (sys.stderr, as in plain Python) took it, not mod_rwsgi's.
        assert f"BASIC INFO app once-{tag}" in lines[0], lines[0]


def test_explicit_handler_and_configured_logging(apache_factory, mode):
    srv = _serve(apache_factory, EXPLICIT)
    r = srv.get("/app?e1")
    assert r.status == 200
    lines = _find(srv, "explicit: explicit-e1")
    assert len(lines) == 1 and "[rwsgi:info]" in lines[0], lines
    # The root logger has a handler of the application's: the fallback stays out of it.
    assert "swallowed-e1" not in srv.error_log()


def test_print_is_unchanged(apache_factory, mode):
    """print() and wsgi.errors keep their path (error level), untouched by the logging hook."""
    srv = _serve(apache_factory, """\
import sys
def application(environ, start_response):
    print("printed-line")
    environ["wsgi.errors"].write("errors-line\\n")
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"ok"]
""")
    assert srv.get("/app").status == 200
    for needle in ("printed-line", "errors-line"):
        lines = _find(srv, needle)
        assert len(lines) == 1 and "[rwsgi:error]" in lines[0], lines


def test_records_outside_a_request_go_to_the_server_log(apache_factory, mode):
    """A WSGIImportScript logging while its process starts: the main server's log, its level,
    no request id."""
    srv = apache_factory()
    pre = srv.write_file("apps/preload.py", "import logging\n"
                         "logging.getLogger('preload').warning('preloaded-%d', 42)\n")
    script = srv.write_file("apps/logs.wsgi", APP)
    group = "%{GLOBAL}" if mode == "embedded" else "rwsgi_test"
    srv.start(f"WSGIImportScript {pre} process-group={group} application-group=%{{GLOBAL}}\n"
              + srv.mount("/app", script))
    lines = _find(srv, "preload: preloaded-42")
    assert all(re.search(r"\[rwsgi:warn\] \[pid \d+:tid \d+\] preload: preloaded-42$", line)
               for line in lines), lines


def test_request_lines_name_the_client(apache_factory, mode):
    """Every line a request writes (print, wsgi.errors, a logging record) carries httpd's
    `[client IP:PORT]` context, the client's own port, in daemon mode as in embedded mode
    (as mod_wsgi's daemon mode)."""
    import http.client
    srv = _serve(apache_factory, """\
import logging, sys
def application(environ, start_response):
    tag = environ["QUERY_STRING"]
    print("printed-" + tag)
    environ["wsgi.errors"].write("errors-" + tag + "\\n")
    logging.getLogger("app").warning("record-%s", tag)
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [environ["mod_wsgi.request_id"].encode()]
""")
    c = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=10)
    try:
        c.request("GET", "/app?c1")
        r = c.getresponse()
        assert r.status == 200
        rid = r.read().decode()
        port = c.sock.getsockname()[1]
    finally:
        c.close()
    for needle in ("printed-c1", "errors-c1", f"[{rid}] app: record-c1"):
        lines = _find(srv, needle)
        assert len(lines) == 1, lines
        assert f"[client 127.0.0.1:{port}] {needle}" in lines[0], lines[0]


def test_slow_requests_are_logged(apache_factory, mode):
    """WSGISlowRequests: a request slower than the threshold is reported once while it still
    runs, with the Python stack of its thread (the application's own frames), and once when it
    ends, with its duration, status, request id and where it ran; a fast one is not."""
    srv = apache_factory()
    script = srv.app("response.wsgi")
    srv.start("WSGISlowRequests 0.4\n" + srv.mount("/r", script))
    srv.allow_log(r"RW0026")
    assert srv.get("/r/ok").status == 200
    assert srv.get("/r/sleep?t=0.8").status == 200
    assert srv.wait_for_log(r"RW0026: slow request: ")
    log = srv.error_log().splitlines()
    running = [line for line in log if "RW0026: slow request still running" in line]
    assert len(running) == 1, running
    where = ("embedded mode" if mode == "embedded"
             else f"daemon group '{harness.DAEMON_GROUP}'")
    assert re.search(r"RW0026: slow request still running: GET /r/sleep\?t=0\.8 \(client "
                     r"127\.0\.0\.1:\d+, request id \S+\) in " + re.escape(where)
                     + r" has run 0\.[4-7]\d\d s \(WSGISlowRequests 0\.4 s\); its Python "
                     r"stack:", running[0]), running[0]
    # The stack follows, ending in the application's call to time.sleep.
    after = log[log.index(running[0]) + 1:]
    stack = [line for line in after if "response.wsgi" in line or "time.sleep" in line]
    assert any("response.wsgi" in line for line in stack), after[:20]
    ended = [line for line in log if "RW0026: slow request: " in line]
    assert len(ended) == 1, ended
    assert re.search(r"\[rwsgi:warn\] .*\[\S+\] RW0026: slow request: GET /r/sleep\?t=0\.8 "
                     r"took 0\.[89]\d\d s|took [1-9]\.\d+ s", ended[0]), ended[0]
    assert f"(WSGISlowRequests 0.4 s), status 200, {where}" in ended[0], ended[0]
