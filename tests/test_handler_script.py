"""WSGIHandlerScript: a handler name (AddHandler/SetHandler) whose requests the script's
handle_request serves as a WSGI application, the requested file being the resource it
handles, as in mod_wsgi; no ExecCGI needed, a missing resource is a 404. Both modes (the
handler script's process-group= sends it to the daemon)."""

import pytest

import harness

RENDER = """\
import json

def handle_request(environ, start_response):
    with open(environ["SCRIPT_FILENAME"], encoding="utf-8") as f:
        text = f.read()
    keys = ("SCRIPT_NAME", "PATH_INFO", "SCRIPT_FILENAME", "mod_wsgi.handler_script",
            "mod_wsgi.callable_object", "mod_wsgi.process_group", "HTTP_AUTHORIZATION")
    body = json.dumps({"text": text, **{k: environ.get(k) for k in keys}}).encode()
    start_response("200 OK", [("Content-Type", "application/json")])
    return [body]
"""


@pytest.fixture
def hsrv(apache_factory, mode):
    srv = apache_factory()
    render = srv.write_file("apps/render.wsgi", RENDER)
    broken = srv.write_file("apps/broken.wsgi", "def not_the_handler(e, s):\n    pass\n")
    srv.write_file("htdocs/pages/hello.tmpl", "Hello {name}\n")
    srv.write_file("htdocs/other/page.txt", "plain\n")
    pg = f" process-group={harness.DAEMON_GROUP}" if mode == "daemon" else ""
    srv.start(
        f"WSGIHandlerScript render {render}{pg} pass-authorization=On\n"
        f"<Directory {srv.root}/htdocs/pages>\n"
        "    AddHandler render .tmpl\n"
        "</Directory>\n"
        f"<Location /other>\n    WSGIHandlerScript broken {broken}\n"
        "    SetHandler broken\n</Location>\n")
    srv.allow_log(r"RW0006|AH00128|File does not exist")
    return srv


def test_handler_script_serves_the_resource(hsrv, mode):
    r = hsrv.get("/pages/hello.tmpl/extra", headers={"Authorization": "Basic dTpw"})
    assert r.status == 200 and r.complete, r
    got = r.json()
    assert got["text"] == "Hello {name}\n"
    assert got["SCRIPT_FILENAME"].endswith("/htdocs/pages/hello.tmpl"), got
    assert got["mod_wsgi.handler_script"].endswith("/apps/render.wsgi"), got
    assert (got["SCRIPT_NAME"], got["PATH_INFO"]) == ("/pages/hello.tmpl", "/extra"), got
    assert got["mod_wsgi.callable_object"] == "handle_request"
    assert got["mod_wsgi.process_group"] == ("" if mode == "embedded" else harness.DAEMON_GROUP)
    assert got["HTTP_AUTHORIZATION"] == "Basic dTpw"  # pass-authorization=On


def test_missing_resource_and_missing_function(hsrv):
    assert hsrv.get("/pages/nope.tmpl").status == 404
    # Files the handler is not set for are Apache's.
    r = hsrv.get("/pages/../other/page.txt")
    assert r.status == 500, r  # SetHandler broken: its script has no handle_request
    assert hsrv.wait_for_log(r"RW0006: target WSGI script '.*broken.wsgi' does not contain "
                             r"WSGI application 'handle_request'")
    assert hsrv.get("/pages/hello.tmpl").status == 200
