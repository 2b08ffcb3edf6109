"""WSGIDispatchScript: the script's process_group(), application_group() and
callable_object() choose, per request, the daemon group (or embedded mode), the application
group and the callable, as in mod_wsgi; None keeps the configured value, an error is a 500.
Both modes (the mount's configured process group differs)."""

import pytest

import harness

APP = """\
import json, os

def _where():
    try:
        import _xxsubinterpreters as interpreters
    except ImportError:  # Python 3.13+
        import _interpreters as interpreters
    return "sub" if interpreters.get_current() != interpreters.get_main() else "main"

def _answer(environ, start_response, name):
    body = json.dumps({"callable": name, "pid": os.getpid(), "interp": _where(),
                       "process_group": environ["mod_wsgi.process_group"],
                       "application_group": environ["mod_wsgi.application_group"],
                       "callable_object": environ["mod_wsgi.callable_object"]}).encode()
    start_response("200 OK", [("Content-Type", "application/json")])
    return [body]

def application(environ, start_response):
    return _answer(environ, start_response, "application")

def other(environ, start_response):
    return _answer(environ, start_response, "other")
"""

DISPATCH = """\
from urllib.parse import parse_qs

def _q(environ):
    return {k: v[-1] for k, v in parse_qs(environ["QUERY_STRING"]).items()}

def process_group(environ):
    assert "HTTP_AUTHORIZATION" not in environ and "wsgi.input" not in environ
    pg = _q(environ).get("pg")
    if pg == "bad":
        return 42
    return {"embedded": "%{GLOBAL}", "dispatched": b"dispatched", "missing": "nope"}.get(pg)

def application_group(environ):
    ag = _q(environ).get("ag")
    if ag == "boom":
        raise RuntimeError("dispatch-boom")
    return ag

def callable_object(environ):
    return _q(environ).get("co")
"""


@pytest.fixture
def dsrv(apache_factory, mode):
    srv = apache_factory()
    app = srv.write_file("apps/dispatched.wsgi", APP)
    script = srv.write_file("apps/dispatch.py", DISPATCH)
    srv.start("WSGIDaemonProcess dispatched processes=1 threads=2\n"
              f"WSGIDispatchScript {script}\n" + srv.mount("/app", app))
    srv.allow_log(r"RW0007|RW0011|RW0025|Traceback|RuntimeError|  File |    ")
    return srv


def get(srv, query):
    r = srv.get(f"/app?{query}")
    assert r.status == 200 and r.complete, r
    return r.json()


def test_none_keeps_the_configuration(dsrv, mode):
    got = get(dsrv, "x=1")
    assert got["process_group"] == ("" if mode == "embedded" else harness.DAEMON_GROUP)
    assert got["callable"] == "application" and got["callable_object"] == "application"
    # The configured %{RESOURCE} group; with a dispatch script only %{GLOBAL} is the main
    # interpreter (the one-group rule cannot know the groups).
    assert got["application_group"].endswith("|/app") and got["interp"] == "sub", got


def test_dispatch_chooses_process_group_application_group_and_callable(dsrv, mode):
    got = get(dsrv, "pg=dispatched")
    assert got["process_group"] == "dispatched", got
    assert get(dsrv, "pg=embedded")["process_group"] == ""
    got = get(dsrv, "pg=dispatched&ag=%25%7BGLOBAL%7D")  # %{GLOBAL}, expanded
    assert (got["application_group"], got["interp"]) == ("", "main"), got
    got = get(dsrv, "ag=team-a")
    assert (got["application_group"], got["interp"]) == ("team-a", "sub"), got
    got = get(dsrv, "co=other&pg=embedded")
    assert (got["callable"], got["callable_object"]) == ("other", "other"), got


def test_dispatch_errors_are_500(dsrv):
    r = dsrv.get("/app?pg=missing")
    assert r.status == 500, r
    assert dsrv.wait_for_log(r"no WSGIDaemonProcess defines process group 'nope'")
    assert dsrv.get("/app?pg=bad").status == 500
    assert dsrv.wait_for_log(r"RW0025: process_group\(\) of WSGIDispatchScript '.*dispatch.py' "
                             r"must return None or a str, not int")
    assert dsrv.get("/app?ag=boom").status == 500
    assert dsrv.wait_for_log(r"RW0007: exception occurred in application_group\(\) of "
                             r"WSGIDispatchScript")
    assert dsrv.wait_for_log(r"RuntimeError: dispatch-boom")
    assert get(dsrv, "x=2")["callable"] == "application"
