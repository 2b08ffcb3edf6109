"""The WSGI environ: CGI variables, PEP 3333 keys, mod_wsgi keys, header mapping,
authorization, trusted proxy headers and HEAD handling."""

import os

import pytest

import harness


def _echo(srv, url="/app", extra="", **opts):
    script = srv.app("echo.wsgi")
    srv.start(srv.mount(url, script, **opts) + extra)
    return script


def _env(srv, path, **kw):
    r = srv.request(kw.pop("method", "GET"), path, **kw)
    assert r.status == 200 and r.complete, r
    return r.json()


def test_pep3333_keys(apache_factory, mode):
    srv = apache_factory()
    script = _echo(srv)
    env = _env(srv, "/app/x?a=1&b=2", headers={"X-Custom": "v1", "Content-Type": "text/x-foo"},
               method="POST", body=b"12345")
    t = env["__types__"]
    assert env["REQUEST_METHOD"] == "POST"
    assert env["QUERY_STRING"] == "a=1&b=2"
    assert env["CONTENT_TYPE"] == "text/x-foo"
    assert env["CONTENT_LENGTH"] == "5"
    assert "HTTP_CONTENT_TYPE" not in env and "HTTP_CONTENT_LENGTH" not in env
    assert env["HTTP_X_CUSTOM"] == "v1"
    assert env["SERVER_NAME"] == "127.0.0.1"
    assert env["SERVER_PORT"] == str(srv.port)
    assert env["SERVER_PROTOCOL"] == "HTTP/1.1"
    assert env["GATEWAY_INTERFACE"] == "CGI/1.1"  # as mod_wsgi 4 and wsgiref
    assert env["REMOTE_ADDR"] == "127.0.0.1"
    assert env["REQUEST_URI"] == "/app/x?a=1&b=2"
    assert env["SCRIPT_FILENAME"] == str(script)
    assert env["wsgi.version"] == [1, 0] and t["wsgi.version"] == "tuple"
    assert env["wsgi.url_scheme"] == "http"
    assert env["wsgi.input_terminated"] is True
    assert env["wsgi.run_once"] is False
    assert t["wsgi.multithread"] == "bool" and t["wsgi.multiprocess"] == "bool"
    assert "wsgi.input" in env and "wsgi.errors" in env and "wsgi.file_wrapper" in env
    assert "PATH" not in env, "PATH must be removed from the environ"
    # every CGI (dot-less) key must be a str (PEP 3333)
    bad = {k: v for k, v in t.items() if "." not in k and not k.startswith("__") and v != "str"}
    assert not bad, f"non-str CGI values: {bad}"


def test_mod_wsgi_keys(apache_factory, mode):
    srv = apache_factory()
    _echo(srv)
    env = _env(srv, "/app/k")
    t = env["__types__"]
    assert env["mod_wsgi.process_group"] == ("" if mode == "embedded" else harness.DAEMON_GROUP)
    # mod_wsgi's default group, %{RESOURCE}: ServerName:port|SCRIPT_NAME
    assert env["mod_wsgi.application_group"] == f"127.0.0.1:{srv.port}|/app"
    assert env["mod_wsgi.callable_object"] == "application"
    assert env["mod_wsgi.request_handler"] == "wsgi-script"
    assert "mod_wsgi.script_reloading" in env
    assert str(env["mod_wsgi.script_reloading"]) in ("1", "True", "true", "On")
    assert t["mod_wsgi.version"] == "tuple" and len(env["mod_wsgi.version"]) == 3
    assert all(isinstance(x, int) for x in env["mod_wsgi.version"])
    assert isinstance(env["mod_wsgi.request_id"], str) and env["mod_wsgi.request_id"]
    assert t["apache.version"] == "tuple" and env["apache.version"][:2] == [2, 4]
    assert env["mod_wsgi.script_name"] == "/app"
    assert env["mod_wsgi.path_info"] == "/k"
    # two requests get different request ids
    env2 = _env(srv, "/app/k")
    assert env2["mod_wsgi.request_id"] != env["mod_wsgi.request_id"]


def test_script_name_path_info_split(apache_factory, mode):
    srv = apache_factory()
    _echo(srv)
    env = _env(srv, "/app/a/b")
    assert (env["SCRIPT_NAME"], env["PATH_INFO"]) == ("/app", "/a/b")
    env = _env(srv, "/app//a//b")
    assert (env["SCRIPT_NAME"], env["PATH_INFO"]) == ("/app", "/a/b")
    env = _env(srv, "/app")
    assert (env["SCRIPT_NAME"], env["PATH_INFO"]) == ("/app", "")
    # PATH_INFO is URL-decoded; bytes are presented as latin-1 (PEP 3333)
    env = _env(srv, "/app/a%20b/caf%C3%A9")
    assert env["PATH_INFO"] == "/a b/caf\u00c3\u00a9"
    assert env["REQUEST_URI"] == "/app/a%20b/caf%C3%A9"
    # not under the alias: not handled by the app
    r = srv.get("/application")
    assert r.status == 404, r


def test_root_mount_split(apache_factory, mode):
    srv = apache_factory()
    _echo(srv, url="/")
    env = _env(srv, "/x")
    assert (env["SCRIPT_NAME"], env["PATH_INFO"]) == ("", "/x")
    env = _env(srv, "/")
    assert (env["SCRIPT_NAME"], env["PATH_INFO"]) == ("", "/")
    env = _env(srv, "/a//b/")
    assert (env["SCRIPT_NAME"], env["PATH_INFO"]) == ("", "/a/b/")


def test_script_alias_match(apache_factory, mode):
    srv = apache_factory()
    script = srv.app("echo.wsgi")
    srv.start(f"WSGIScriptAliasMatch ^/m/([a-z]+) {script}\n")
    env = _env(srv, "/m/abc/rest")
    assert env["SCRIPT_NAME"] == "/m/abc"
    assert env["PATH_INFO"] == "/rest"
    assert srv.get("/m/123").status == 404


def test_headers_with_underscore_dropped(apache_factory, mode):
    srv = apache_factory()
    _echo(srv)
    env = _env(srv, "/app/", headers=[("X_Foo", "1"), ("X-Foo", "2")])
    assert env.get("HTTP_X_FOO") == "2"
    env = _env(srv, "/app/", headers=[("X_Foo", "1")])
    assert "HTTP_X_FOO" not in env
    # httpoxy: a Proxy header never becomes HTTP_PROXY
    env = _env(srv, "/app/", headers=[("Proxy", "http://evil:1")])
    assert "HTTP_PROXY" not in env


def test_set_env_passed_to_environ(apache_factory, mode):
    srv = apache_factory()
    _echo(srv, extra="SetEnv RWSGI_TEST_VAR hello-from-setenv\n")
    env = _env(srv, "/app/")
    assert env.get("RWSGI_TEST_VAR") == "hello-from-setenv"


def test_pass_authorization(apache_factory, mode):
    srv = apache_factory()
    script = srv.app("echo.wsgi")
    srv.start(srv.mount("/noauth", script)
              + srv.mount("/optauth", script, pass_authorization="On")
              + srv.mount("/dirauth", script)
              + "<Location /dirauth>\n  WSGIPassAuthorization On\n</Location>\n")
    auth = [("Authorization", "Basic dXNlcjpwYXNz")]
    env = _env(srv, "/noauth/", headers=auth)
    assert "HTTP_AUTHORIZATION" not in env
    env = _env(srv, "/optauth/", headers=auth)
    assert env.get("HTTP_AUTHORIZATION") == "Basic dXNlcjpwYXNz"
    env = _env(srv, "/dirauth/", headers=auth)
    assert env.get("HTTP_AUTHORIZATION") == "Basic dXNlcjpwYXNz"


def test_pass_authorization_global_directive(apache_factory, mode):
    srv = apache_factory()
    _echo(srv, extra="WSGIPassAuthorization On\n")
    env = _env(srv, "/app/", headers=[("Authorization", "Bearer abc")])
    assert env.get("HTTP_AUTHORIZATION") == "Bearer abc"


def test_trusted_proxy_headers(apache_factory, mode):
    srv = apache_factory()
    script = srv.app("echo.wsgi")
    srv.start(
        srv.mount("/trusted", script) + srv.mount("/untrusted", script) +
        "<Location /trusted>\n"
        "  WSGITrustedProxyHeaders X-Forwarded-For X-Forwarded-Proto\n"
        "  WSGITrustedProxies 127.0.0.1\n"
        "</Location>\n"
        "<Location /untrusted>\n"
        "  WSGITrustedProxyHeaders X-Forwarded-For X-Forwarded-Proto\n"
        "  WSGITrustedProxies 10.0.0.1\n"
        "</Location>\n")
    hdrs = [("X-Forwarded-For", "203.0.113.7"), ("X-Forwarded-Proto", "https"),
            ("X-Client-IP", "198.51.100.66")]
    env = _env(srv, "/trusted/", headers=hdrs)
    assert env["REMOTE_ADDR"] == "203.0.113.7"
    assert env["wsgi.url_scheme"] == "https"
    # CVE-2022-2255: another client-IP header must not reach the app when XFF is trusted
    assert "HTTP_X_CLIENT_IP" not in env

    # walking right to left: the first untrusted hop is the client
    env = _env(srv, "/trusted/", headers=[("X-Forwarded-For", "198.51.100.1, 203.0.113.9")])
    assert env["REMOTE_ADDR"] == "203.0.113.9"
    assert env["wsgi.url_scheme"] == "http"

    env = _env(srv, "/untrusted/", headers=hdrs)
    assert env["REMOTE_ADDR"] == "127.0.0.1"
    assert env["wsgi.url_scheme"] == "http"
    assert "HTTP_X_FORWARDED_FOR" not in env
    assert "HTTP_X_FORWARDED_PROTO" not in env
    assert "HTTP_X_CLIENT_IP" not in env


@pytest.mark.parametrize("setting,expected", [(None, "HEAD"), ("Off", "HEAD"), ("On", "GET")])
def test_head_request(apache_factory, setting, expected):
    srv = apache_factory()
    script = srv.app("response.wsgi")
    extra = f"WSGIMapHEADToGET {setting}\n" if setting else ""
    srv.start(srv.mount("/r", script) + extra)
    r = srv.request("HEAD", "/r/head")
    assert r.status == 200, r
    assert r.body == b"", f"HEAD response carried a body: {r.body[:100]!r}"
    assert r.headers.get("X-Request-Method") == expected
    assert r.headers.get("Content-Length") in (None, "100")
    g = srv.get("/r/head")
    assert g.status == 200 and g.body == b"0123456789" * 10 and g.complete


def test_head_auto_maps_to_get_with_content_filter(apache_factory):
    srv = apache_factory(modules=["filter", "deflate"])
    script = srv.app("response.wsgi")
    srv.start(srv.mount("/r", script) + srv.mount("/plain", script) +
              "WSGIMapHEADToGET Auto\n"
              "<Location /r>\n  SetOutputFilter DEFLATE\n</Location>\n")
    r = srv.request("HEAD", "/r/head", headers={"Accept-Encoding": "gzip"})
    assert r.status == 200 and r.body == b""
    assert r.headers.get("X-Request-Method") == "GET"
    r = srv.request("HEAD", "/plain/head")
    assert r.status == 200 and r.body == b""
    assert r.headers.get("X-Request-Method") == "HEAD"


# Keys whose values legitimately differ between the two requests of the test below: the
# mode itself, the request's own identity and timings, the process that ran it, and the
# test's switch header. README "Embedded and daemon mode: one environ" lists the same.
PER_MODE_KEYS = {
    "mod_wsgi.process_group", "wsgi.multithread", "wsgi.multiprocess",
    "mod_wsgi.request_start", "mod_wsgi.queue_start", "mod_wsgi.daemon_start",
    "mod_wsgi.application_start", "mod_wsgi.request_id", "mod_wsgi.connection_id",
    "mod_wsgi.thread_id", "mod_wsgi.server_pid", "REMOTE_PORT",
    "wsgi.input", "wsgi.errors", "__pid__", "__thread__", "HTTP_X_MODE",
}


@pytest.mark.embedded_only  # runs once: one server serves the request in both modes
def test_one_environ_in_both_modes(apache_factory):
    """The same request (non-ASCII script path, DOCUMENT_ROOT, PATH_INFO, query and header)
    served embedded and through a daemon: the environs agree key for key and type for type,
    apart from PER_MODE_KEYS."""
    srv = apache_factory(mode="daemon")
    docroot = srv.root / "htdocs-\u00e9t\u00e9"
    docroot.mkdir()
    os.chmod(docroot, 0o755)
    script = srv.write_file("apps/caf\u00e9/echo.wsgi", (harness.APPS_SRC / "echo.wsgi").read_text())
    srv.start(f"""
DocumentRoot "{docroot}"
<Directory "{docroot}">
    Require all granted
</Directory>
<Directory "{script.parent}">
    Require all granted
</Directory>
WSGIScriptAlias /app "{script}"
<If "%{{HTTP:X-Mode}} == 'daemon'">
    WSGIProcessGroup {harness.DAEMON_GROUP}
</If>
""")
    envs = {}
    for m in ("embedded", "daemon"):
        r = srv.request("GET", "/app/na%C3%AFve/\u00e9?q=caf%C3%A9&raw=\u00e9t\u00e9",
                        headers={"X-Mode": m, "X-Latin": "gar\u00e7on"})
        assert r.status == 200 and r.complete, r
        envs[m] = r.json()
    emb, dmn = envs["embedded"], envs["daemon"]
    assert emb["mod_wsgi.process_group"] == ""
    assert dmn["mod_wsgi.process_group"] == harness.DAEMON_GROUP
    assert dmn["__pid__"] != emb["__pid__"]
    # What the request is about, decoded as mod_wsgi decodes it.
    assert emb["SCRIPT_FILENAME"] == str(script)
    assert emb["DOCUMENT_ROOT"] == str(docroot)
    assert emb["PATH_INFO"] == "/na\u00c3\u00afve/\u00e9"
    assert emb["QUERY_STRING"] == "q=caf%C3%A9&raw=\u00e9t\u00e9"
    assert emb["HTTP_X_LATIN"] == "gar\u00e7on"
    emb_types, dmn_types = emb.pop("__types__"), dmn.pop("__types__")
    keys = (set(emb) | set(dmn)) - PER_MODE_KEYS
    differ = {k: (emb.get(k), dmn.get(k)) for k in sorted(keys) if emb.get(k) != dmn.get(k)}
    assert not differ, f"embedded and daemon environs differ: {differ}"
    types = {k: (emb_types.get(k), dmn_types.get(k)) for k in sorted(keys)
             if not k.startswith("__") and emb_types.get(k) != dmn_types.get(k)}
    assert not types, f"value types differ: {types}"


def test_pass_apache_request(apache_factory, mode):
    """WSGIPassApacheRequest On: environ['apache.request_rec'] is a PyCapsule holding the
    request_rec's address in embedded mode; daemon mode has no request_rec (as mod_wsgi)."""
    srv = apache_factory()
    script = srv.write_file("apps/capsule.wsgi", """\
import ctypes, json

def application(environ, start_response):
    cap = environ.get("apache.request_rec")
    out = {"type": type(cap).__name__}
    if cap is not None:
        get = ctypes.pythonapi.PyCapsule_GetPointer
        get.restype, get.argtypes = ctypes.c_void_p, [ctypes.py_object, ctypes.c_char_p]
        out["pointer"] = bool(get(cap, None))
    start_response("200 OK", [("Content-Type", "application/json")])
    return [json.dumps(out).encode()]
""")
    srv.start(srv.mount("/on", script) + srv.mount("/off", script)
              + "<Location /on>\nWSGIPassApacheRequest On\n</Location>\n")
    on = srv.get("/on").json()
    if mode == "embedded":
        assert on == {"type": "PyCapsule", "pointer": True}, on
    else:
        assert on == {"type": "NoneType"}, on
    assert srv.get("/off").json() == {"type": "NoneType"}


def test_server_metrics(apache_factory, mode):
    """WSGIServerMetrics On (embedded) / server-metrics=On (a daemon group):
    mod_wsgi.server_metrics() returns httpd's scoreboard as mod_wsgi does, where the request
    being served shows as a worker writing ('W') its request line; otherwise None. As in
    mod_wsgi, a daemon process forked at the server's first start has no scoreboard (httpd
    creates it after the configuration is read); after a graceful restart it has."""
    srv = apache_factory()
    script = srv.write_file("apps/metrics.wsgi", """\
import json, mod_wsgi, os

def application(environ, start_response):
    start_response("200 OK", [("Content-Type", "application/json")])
    return [json.dumps({"pid": os.getpid(), "metrics": mod_wsgi.server_metrics()}).encode()]
""")
    if mode == "embedded":
        conf = "WSGIServerMetrics On\n" + srv.mount("/m", script) + srv.mount("/off", script)
        conf += "<Location /off>\nWSGIApplicationGroup %{GLOBAL}\n</Location>\n"
    else:
        conf = ("WSGIDaemonProcess metered processes=1 threads=2 server-metrics=On\n"
                + srv.mount("/m", script, process_group="metered")
                + srv.mount("/off", script))
    srv.start("ExtendedStatus On\n" + conf)
    if mode == "daemon":
        srv.graceful()
    got = srv.get("/m/x?probe=1").json()["metrics"]
    assert got is not None
    assert got["server_limit"] >= 1 and got["thread_limit"] >= 1, got
    assert got["running_time"] >= 0 and got["current_time"] >= got["restart_time"], got
    assert len(got["processes"]) == got["server_limit"], got
    workers = [w for p in got["processes"] for w in p["workers"]]
    assert any(w["status"] == "W" and w["request"].startswith("GET /m/x?probe=1")
               for w in workers), [(w["status"], w["request"]) for w in workers]
    assert all(set(w) >= {"thread_num", "access_count", "bytes_served", "client", "vhost"}
               for w in workers)
    if mode == "daemon":
        # The harness's own group has no server-metrics=.
        assert srv.get("/off/x").json()["metrics"] is None


def test_process_metrics(apache_factory, mode):
    """mod_wsgi.process_metrics() is None until mod_wsgi.start_recording_metrics() (mod_wsgi
    6's opt-in), then counts this process's requests that start from that moment: each
    sequential request sees every earlier one (the one that turned recording on is not
    counted), itself as the one active request, and per-thread counts that add up; CPU and
    memory figures are the process's own."""
    srv = apache_factory()
    script = srv.write_file("apps/pmetrics.wsgi", """\
import json, mod_wsgi, os

def application(environ, start_response):
    if environ["PATH_INFO"] == "/start":
        mod_wsgi.start_recording_metrics()
    start_response("200 OK", [("Content-Type", "application/json")])
    return [json.dumps({"pid": os.getpid(), "metrics": mod_wsgi.process_metrics()}).encode()]
""")
    if mode == "embedded":
        conf = srv.mount("/m", script)
    else:
        conf = ("WSGIDaemonProcess pm processes=1 threads=2\n"
                + srv.mount("/m", script, process_group="pm"))
    srv.start(conf)
    assert srv.get("/m/before").json()["metrics"] is None
    first = srv.get("/m/start").json()
    m = first["metrics"]
    assert m is not None and m["pid"] == first["pid"], first
    assert (m["request_count"], m["active_requests"], m["threads"]) == (0, 0, []), m
    assert m["memory_rss"] > 0 and m["memory_max_rss"] >= m["memory_rss"], m
    assert m["cpu_time"] > 0 and m["current_time"] >= m["restart_time"] > 1.0e9, m
    seen = 0
    for _ in range(6):
        got = srv.get("/m/again").json()
        if got["pid"] != first["pid"]:
            # Another httpd child (embedded mode): recording is per process.
            assert got["metrics"] is None, got
            continue
        g = got["metrics"]
        assert g["request_count"] == seen and g["active_requests"] == 1, g
        assert sum(t["request_count"] for t in g["threads"]) == seen, g
        assert g["request_threads"] == len(g["threads"]) == min(seen, len(g["threads"])), g
        seen += 1
        assert g["request_busy_time"] >= 0 and g["running_time"] >= 0, g
    assert seen >= 2 or mode == "embedded"
