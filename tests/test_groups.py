"""Application groups: the names mod_wsgi gives them (`mod_wsgi.application_group`), the
default %{RESOURCE}, and the one-group rule's verdicts as the start-up debug log states them."""

import harness


def _env(srv, path, **kw):
    r = srv.request("GET", path, **kw)
    assert r.status == 200 and r.complete, r
    return r.json()


def _host_port(host, env):
    """mod_wsgi's host[:port]: no port for 80 and 443 (the port is ap_get_server_port's)."""
    port = int(env["SERVER_PORT"])
    return host if port in (80, 443) else f"{host}:{port}"


def test_default_group_is_resource(apache_factory, mode):
    srv = apache_factory()
    script = srv.app("echo.wsgi")
    srv.start(srv.mount("/a", script) + srv.mount("/b", script) + srv.mount("/", script))
    # ServerName 127.0.0.1 (r->server->server_hostname), the port the client asked for, and
    # SCRIPT_NAME with // collapsed.
    assert _env(srv, "/a/x")["mod_wsgi.application_group"] == f"127.0.0.1:{srv.port}|/a"
    assert _env(srv, "//b//y")["mod_wsgi.application_group"] == f"127.0.0.1:{srv.port}|/b"
    assert _env(srv, "/c")["mod_wsgi.application_group"] == f"127.0.0.1:{srv.port}|"
    # Another Host header: still the ServerName; the port is the one in the Host header.
    env = _env(srv, "/a/x", headers={"Host": "Other.Example"})
    assert env["mod_wsgi.application_group"] == _host_port("127.0.0.1", env) + "|/a"


def test_named_expansions(apache_factory, mode):
    srv = apache_factory()
    script = srv.app("echo.wsgi")
    srv.start(srv.mount("/server", script, application_group="%{SERVER}")
              + srv.mount("/host", script, application_group="%{HOST}")
              + srv.mount("/global", script, application_group="%{GLOBAL}")
              + srv.mount("/literal", script, application_group="site-1")
              + srv.mount("/env", script, application_group="%{ENV:RWSGI_GROUP}")
              + 'SetEnvIf Request_URI "^/env/blue" RWSGI_GROUP=blue\n'
              + 'SetEnvIf Request_URI "^/env/server" RWSGI_GROUP=%{SERVER}\n')
    assert _env(srv, "/server")["mod_wsgi.application_group"] == f"127.0.0.1:{srv.port}"
    # %{HOST}: the host the client asked for, lower case, with ap_get_server_port's port.
    env = _env(srv, "/host", headers={"Host": f"WWW.Example.ORG:{srv.port}"})
    assert env["mod_wsgi.application_group"] == f"www.example.org:{srv.port}"
    env = _env(srv, "/host", headers={"Host": "www.example.org"})
    assert env["mod_wsgi.application_group"] == _host_port("www.example.org", env)
    assert _env(srv, "/global")["mod_wsgi.application_group"] == ""
    assert _env(srv, "/literal")["mod_wsgi.application_group"] == "site-1"
    assert _env(srv, "/env/blue")["mod_wsgi.application_group"] == "blue"
    # The value may itself be an expansion.
    assert _env(srv, "/env/server")["mod_wsgi.application_group"] == f"127.0.0.1:{srv.port}"
    # Unset: as in mod_wsgi, the expression itself is the group's name.
    assert _env(srv, "/env/none")["mod_wsgi.application_group"] == "%{ENV:RWSGI_GROUP}"


def test_directive_and_server_level_default(apache_factory, mode):
    srv = apache_factory()
    script = srv.app("echo.wsgi")
    srv.start("WSGIApplicationGroup %{GLOBAL}\n" + srv.mount("/a", script)
              + f"<Location /b>\nWSGIApplicationGroup %{{SERVER}}\n</Location>\n"
              + srv.mount("/b", script))
    assert _env(srv, "/a")["mod_wsgi.application_group"] == ""
    assert _env(srv, "/b")["mod_wsgi.application_group"] == f"127.0.0.1:{srv.port}"


def test_one_group_rule_verdicts_logged(apache_factory, mode):
    group = "embedded" if mode == "embedded" else harness.DAEMON_GROUP
    srv = apache_factory()
    script = srv.app("echo.wsgi")
    srv.start(srv.mount("/only", script))
    assert srv.wait_for_log(
        r"one-group rule: WSGIScriptAlias /only: its requests run in the main interpreter: "
        rf"the only alias of its process \({group}\), application group %\{{RESOURCE\}}")
    assert _env(srv, "/only")["mod_wsgi.application_group"] == f"127.0.0.1:{srv.port}|/only"
    srv.stop()

    srv = apache_factory()
    script = srv.app("echo.wsgi")
    srv.start(srv.mount("/a", script) + srv.mount("/b", script))
    for url in ("/a", "/b"):
        assert srv.wait_for_log(
            rf"one-group rule: WSGIScriptAlias {url}: its requests run in sub-interpreters by "
            rf"group name \(main for %\{{GLOBAL\}}\): another alias can reach its process "
            rf"\({group}\)")
